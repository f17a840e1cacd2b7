"""The app SDK never pulls in node server code (docs/design.md §2: each module importable on its own).

Each check runs in a fresh interpreter, so what other tests imported does not hide anything. The SDK
modules are imported and used offline (a transport key, a certificate signed and verified, devnet
evidence); afterwards no server module may be loaded, and web3 may not be either (the SDK imports it
only inside ``TrustAnchor.from_chain``). A control run shows the check sees server modules when they
are imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SDK_MODULES = ("derot.app", "derot.app.sdk", "derot.app.client", "derot.app.tee", "derot.certs", "derot.app.api",
               "derot.app.relying", "derot.app.measure", "derot.app.settings", "derot.app.discovery")
SERVER_PREFIXES = ("derot.service", "derot.net.servicers", "derot.net.fanout", "derot.net.peers", "derot.chain.follower")

PROBE = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
{use}
server = sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in {prefixes!r}))
print(json.dumps({{"server": server, "web3": sorted(m for m in sys.modules if m.split(".")[0] == "web3")}}))
"""

USE_THE_SDK = """
import time
from derot.app.sdk import App, TrustAnchor, DerivedKey
from derot.app.client import RootOfTrustClient
from derot.certs import Certificate, CertEpoch, CertificateTrust, EpochPhase, Reason, verify_certificate
from derot.attest.snapshot import AppRecord, GovernanceSnapshot, PlatformRule
from derot.constants import CERT_VERSION, Platform, TcbStatus
from derot.crypto import kd
from derot.crypto.bls import G2, random_scalar

kd.TransportKey.generate()
RootOfTrustClient(["127.0.0.1:1"])  # builds stubs; connects lazily
secret = random_scalar()
now = int(time.time())
registry = "0x" + "11" * 20
cert = Certificate(CERT_VERSION, 31337, registry, 1, b"s" * 32, b"a" * 32, 1, 1, b"k" * 33, int(Platform.TDX),
                   b"m" * 32, b"e" * 32, int(TcbStatus.UP_TO_DATE), now - 10, now + 3600, 1)
snapshot = GovernanceSnapshot(31337, registry, 1, platforms={Platform.TDX: PlatformRule(True)},
                              apps={b"a" * 32: AppRecord(b"a" * 32, registry, 1)})
trust = CertificateTrust(epochs={1: CertEpoch(EpochPhase.ACTIVE, G2.generator() * secret)})
verdict = verify_certificate(cert.encode(), cert.sign(secret).to_eip2537(), group_key_sig=G2.generator() * secret,
                             snapshot=snapshot, now=now, trust=trust)
assert verdict.reason is Reason.OK, verdict
"""


def probe(modules, use: str = "") -> dict:
    code = PROBE.format(modules=tuple(modules), use=use, prefixes=SERVER_PREFIXES)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sdk_imports_no_server_code_and_no_web3():
    loaded = probe(SDK_MODULES)
    assert loaded == {"server": [], "web3": []}


def test_using_the_sdk_offline_imports_no_server_code():
    loaded = probe(SDK_MODULES, USE_THE_SDK)
    assert loaded == {"server": [], "web3": []}


@pytest.mark.parametrize("module, expected", [("derot.service.node", "derot.service.node"),
                                              ("derot.chain.follower", "derot.chain.follower")])
def test_the_probe_sees_server_modules(module, expected):
    """Control: the same probe reports server code when it is imported."""
    assert expected in probe((*SDK_MODULES, module))["server"]
