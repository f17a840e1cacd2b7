"""End-to-end fixtures: a real devnet (anvil, contracts, devnet TEE roots, node processes on free ports).

Each module gets its own network, torn down even when a test fails. Helpers make apps with devnet TDX
and SNP devices, like a TEE app would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from derot.app.client import RootOfTrustClient
from derot.app.owner import AppOwner
from derot.app.sdk import App, TrustAnchor
from derot.app.tee.devnet import DevnetDevice
from derot.attest.devnet import DevnetRoots, devnet_measurement_digest, image_registers
from derot.constants import Platform
from derot.devnet.network import APP_OWNER, Devnet

APP_IMAGE = "e2e-app v1"


def start_devnet(tmp_path_factory, name: str, **kwargs) -> Devnet:
    directory = tmp_path_factory.mktemp(name)
    log = []
    net = Devnet(directory, progress=log.append, **kwargs)
    try:
        net.up(timeout=120)
    except Exception:
        for proc in net.node_processes:
            path = proc.directory / "node.log"
            if path.exists():
                print(f"--- node {proc.index} log tail ---\n" + "\n".join(path.read_text().splitlines()[-20:]))
        raise
    return net


@dataclass
class AppHarness:
    net: Devnet
    app_id: bytes
    roots: DevnetRoots
    anchor: TrustAnchor

    def client(self, indices=None, **kwargs) -> RootOfTrustClient:
        procs = self.net.node_processes if indices is None else [self.net.node_processes[i - 1] for i in indices]
        return RootOfTrustClient([p.public_endpoint for p in procs], **kwargs)

    def device(self, platform: Platform, **kwargs) -> DevnetDevice:
        return DevnetDevice(self.roots, platform, image_registers(platform, APP_IMAGE), **kwargs)

    def app(self, platform: Platform, client=None, **device_kwargs) -> App:
        self.anchor = TrustAnchor.from_chain(self.net.rpc_url, self.net.registry)
        return App(client or self.client(), self.device(platform, **device_kwargs), self.anchor, self.app_id)


def register_app(net: Devnet) -> AppHarness:
    owner = AppOwner.connect(net.rpc_url, net.registry, net.accounts[APP_OWNER])
    app_id = owner.register(os.urandom(32))
    for platform in (Platform.TDX, Platform.SEV_SNP):
        owner.allow(app_id, platform, devnet_measurement_digest(platform, image_registers(platform, APP_IMAGE)))
    net.wait_confirmed()
    return AppHarness(net, app_id, DevnetRoots.load(net.directory / "roots"),
                      TrustAnchor.from_chain(net.rpc_url, net.registry))


@pytest.fixture(scope="module")
def devnet_starter(tmp_path_factory):
    """``start(name, **Devnet kwargs)``: start another devnet (the caller tears it down)."""
    return lambda name, **kwargs: start_devnet(tmp_path_factory, name, **kwargs)


@pytest.fixture(scope="module")
def harness_for():
    """``harness_for(net)``: register an app on ``net`` and return its harness."""
    return register_app


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    net = start_devnet(tmp_path_factory, "net5", nodes=5, threshold=3)
    yield net
    net.down()


@pytest.fixture(scope="module")
def harness(network) -> AppHarness:
    return register_app(network)
