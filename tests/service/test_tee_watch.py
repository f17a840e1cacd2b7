"""Issue 18 #4 and #3 on the node: its own TEE's state reaches the metric ``derot_tee_attestation_available`` and
the gRPC health service ``derot.v1.Tee`` (a real prometheus registry and a real grpc health servicer); the
sev-guest driver and firmware are played by tests/app/tee_kernel.py."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health, health_pb2

from derot.app.tee import RequestGate, SnpDevice
from derot.attest.devnet import DevnetRoots, DevnetTee
from derot.constants import Platform
from derot.net.servicers import Health
from derot.service.metrics import Metrics
from derot.service.tee_watch import HEALTH_SERVICE, TeeWatch


def _kernel_models():
    path = Path(__file__).resolve().parent.parent / "app" / "tee_kernel.py"
    spec = importlib.util.spec_from_file_location("derot_test_tee_kernel_watch", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kernel = _kernel_models()


@pytest.fixture(scope="module")
def snp_tee(tmp_path_factory) -> DevnetTee:
    return DevnetTee(DevnetRoots.generate(tmp_path_factory.mktemp("roots")), Platform.SEV_SNP)


@pytest.fixture
def device_node(tmp_path) -> Path:
    path = tmp_path / "sev-guest"
    path.write_bytes(b"")
    return path


class Node:
    """What the node service hands the watch: its metrics and its health reporter."""

    def __init__(self):
        self.metrics = Metrics()
        self.servicer = health.aio.HealthServicer()
        self.health = Health(self.servicer)

    def published(self, watch: TeeWatch) -> tuple[float, str]:
        async def once():
            await watch.publish(self.metrics.tee_available, self.health)
            reply = await self.servicer.Check(health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), None)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        answer = asyncio.run(once())
        return self.metrics.registry.get_sample_value("derot_tee_attestation_available"), answer


def _watch(guest, device_node) -> TeeWatch:
    device = SnpDevice(device_node, ioctl=guest.ioctl, gate=RequestGate(), vmpl=0)
    return TeeWatch({}, detect=lambda **_: device)


def test_vmpck_wiped_before_the_node_started_is_seen_at_start(snp_tee, device_node, caplog):
    guest = kernel.SnpGuest(snp_tee, certs=kernel.cert_table((kernel.VCEK_GUID, snp_tee.vek_der)))
    guest.vmpck_alive = False  # a failed request in an earlier run, or in another process on this guest
    node, watch = Node(), _watch(guest, device_node)
    with caplog.at_level(logging.ERROR, "derot.service.tee"):
        assert node.published(watch) == (0.0, "NOT_SERVING")
        assert node.published(watch) == (0.0, "NOT_SERVING")
    errors = [r for r in caplog.records if r.getMessage() == "TEE attestation unavailable"]
    assert len(errors) == 1 and "until the guest reboots" in errors[0].detail  # logged once, by name
    assert "tee_attestation_disabled" in errors[0].detail and guest.requests == 0


def test_working_tee_is_probed_once_then_followed_through_its_gate(snp_tee, device_node):
    guest = kernel.SnpGuest(snp_tee, certs=kernel.cert_table((kernel.VCEK_GUID, snp_tee.vek_der)))
    node, watch = Node(), _watch(guest, device_node)
    assert node.published(watch) == (1.0, "SERVING") and guest.requests == 1
    assert node.published(watch) == (1.0, "SERVING") and guest.requests == 1  # no firmware request per check
    guest.fail_next = (5, 0, kernel.VMM_BUSY)  # the node's own next request is throttled: EIO, key wiped
    with pytest.raises(Exception, match="BUSY"):
        watch.device.evidence(bytes(64))
    assert node.published(watch) == (0.0, "NOT_SERVING")


def test_another_platform_than_configured_is_unavailable(tmp_path, device_node):
    options = {"configfs_root": tmp_path / "no-configfs", "sev_guest": device_node, "tpm_device": tmp_path / "no-tpm",
               "expect": Platform.TDX}
    node = Node()
    value, answer = node.published(TeeWatch(options))
    assert (value, answer) == (0.0, "NOT_SERVING")
    available, detail = TeeWatch(options).check()
    assert not available and detail.startswith("tee_platformmismatch") and "configuration names tdx" in detail


def test_registration_evidence_uses_the_device_options_and_refuses_another_platform(tmp_path, device_node,
                                                                                     monkeypatch):
    """make_node_evidence (derot node register) builds the device from [attest] and checks the platform."""
    import derot.app.tee as tee
    from derot.app.tee import PlatformMismatch
    from derot.service.config import load_config
    from derot.service.node import make_node_evidence

    real, seen = tee.detect_device, []

    def on_this_guest(**options):  # this test machine's interfaces, the node's options
        seen.append(options)
        return real(configfs_root=tmp_path / "no-configfs", sev_guest=device_node, tpm_device=tmp_path / "no-tpm",
                    **options)

    monkeypatch.setattr(tee, "detect_device", on_this_guest)
    path = tmp_path / "node.toml"
    path.write_text('[attest]\nnode_tee = "tdx"\ncollateral_path = "/etc/derot/collateral.json"\nprivlevel = 1\n')
    with pytest.raises(PlatformMismatch, match="sev-snp guest .* configuration names tdx"):
        make_node_evidence(load_config(path, env={}), bytes(32), "0x" + "11" * 20, bytes(32), bytes(32), bytes(32))
    assert seen == [{"vek_path": None, "collateral_path": "/etc/derot/collateral.json", "privlevel": 1,
                     "expect": Platform.TDX}]


def test_node_status_shows_the_tee_gauge():
    """``derot node status`` reads derot_tee_attestation_available from the node's metrics endpoint."""
    from derot.cli import probe

    metrics = Metrics()
    metrics.tee_available.set(0)
    port = metrics.serve("127.0.0.1:0")
    assert probe.gauges(f"127.0.0.1:{port}")["tee_attestation_available"] == 0
    metrics.tee_available.set(1)
    assert probe.gauges(f"127.0.0.1:{port}")["tee_attestation_available"] == 1
