"""Intel collateral: a real HTTP PCCS (serving devnet collateral in the PCS API format) fetched by
dcap-qvl's client, the on-disk cache, offline bundles, and clear errors when the PCCS is down or the
collateral has gone stale."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from derot.attest.collateral import Collateral, CollateralStore
from derot.attest.devnet import DevnetTee
from derot.attest.errors import CollateralError, CollateralStale, CollateralUnavailable
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.constants import Platform


class Pccs:
    """A PCCS on 127.0.0.1 serving one collateral bundle; ``fail`` makes it answer 500."""

    def __init__(self, collateral: Collateral):
        doc = json.loads(collateral.json_text)
        self.fail = False
        self.requests: list[str] = []
        q = lambda pem: urllib.parse.quote(pem)  # noqa: E731
        self.routes = {
            "/sgx/certification/v4/pckcrl": (bytes.fromhex(doc["pck_crl"]),
                                             {"SGX-PCK-CRL-Issuer-Chain": q(doc["pck_crl_issuer_chain"])}),
            "/tdx/certification/v4/tcb": (
                ('{"tcbInfo":%s,"signature":"%s"}' % (doc["tcb_info"], doc["tcb_info_signature"])).encode(),
                {"TCB-Info-Issuer-Chain": q(doc["tcb_info_issuer_chain"])}),
            "/tdx/certification/v4/qe/identity": (
                ('{"enclaveIdentity":%s,"signature":"%s"}' % (doc["qe_identity"], doc["qe_identity_signature"])).encode(),
                {"SGX-Enclave-Identity-Issuer-Chain": q(doc["qe_identity_issuer_chain"])}),
            "/sgx/certification/v4/rootcacrl": (doc["root_ca_crl"].encode(), {}),
        }
        pccs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = urllib.parse.urlparse(self.path).path
                pccs.requests.append(path)
                if pccs.fail or path not in pccs.routes:
                    self.send_response(500 if pccs.fail else 404)
                    self.end_headers()
                    return
                body, headers = pccs.routes[path]
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tee(devnet):
    return DevnetTee(devnet, Platform.TDX, {"MRTD": b"\x07" * 48}, fmspc=bytes.fromhex("00906ed50000"))


@pytest.fixture
def pccs(tee):
    server = Pccs(tee.collateral)
    yield server
    server.close()


def _dead_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here any more
    return f"http://127.0.0.1:{port}"


def _bare(tee):
    """Evidence without attached collateral, so the trust config's store must provide it."""
    return replace(tee.quote(bytes(64)), collateral=b"")


def test_fetch_from_pccs_then_cache_on_disk(devnet, tee, pccs, tmp_path):
    trust = TrustConfig.devnet(devnet, pccs_url=pccs.url, cache_dir=tmp_path)
    claims = verify_evidence(_bare(tee), trust)
    assert claims.hardware_ids.fmspc == bytes.fromhex("00906ed50000")
    assert "/tdx/certification/v4/tcb" in pccs.requests
    cached = list(tmp_path.glob("tdx-00906ed50000-platform.json"))
    assert len(cached) == 1 and Collateral.from_json(cached[0].read_text()).fmspc == tee.fmspc
    fetched = len(pccs.requests)
    verify_evidence(_bare(tee), trust)
    assert len(pccs.requests) == fetched  # memory hit
    # a new process-like store: PCCS unreachable, the disk cache answers
    offline = TrustConfig.devnet(devnet, pccs_url=_dead_url(), cache_dir=tmp_path)
    assert verify_evidence(_bare(tee), offline).measurement_digest == claims.measurement_digest


def test_pccs_down_is_a_clear_error_and_is_not_hammered(devnet, tee):
    trust = TrustConfig.devnet(devnet, pccs_url=_dead_url())
    with pytest.raises(CollateralUnavailable, match="00906ed50000"):
        verify_evidence(_bare(tee), trust)
    start = time.monotonic()
    with pytest.raises(CollateralUnavailable):
        verify_evidence(_bare(tee), trust)  # within retry_after: no new fetch attempt
    assert time.monotonic() - start < 0.5


def test_pccs_http_500(devnet, tee, pccs):
    pccs.fail = True
    with pytest.raises(CollateralUnavailable, match="500"):
        verify_evidence(_bare(tee), TrustConfig.devnet(devnet, pccs_url=pccs.url))


def test_stale_cache_and_pccs_down_is_stale(devnet, tee, pccs, tmp_path):
    verify_evidence(_bare(tee), TrustConfig.devnet(devnet, pccs_url=pccs.url, cache_dir=tmp_path))
    later = tee.collateral.not_after + 1
    trust = TrustConfig.devnet(devnet, pccs_url=_dead_url(), cache_dir=tmp_path)
    with pytest.raises(CollateralStale, match="expired"):
        verify_evidence(_bare(tee), trust, at=later)
    with pytest.raises(CollateralStale):  # without a PCCS at all
        verify_evidence(_bare(tee), TrustConfig.devnet(devnet, cache_dir=tmp_path), at=later)


def test_collateral_stale_at_the_right_time(devnet, devnet_trust, tee):
    ev = tee.quote(bytes(64))
    verify_evidence(ev, devnet_trust, at=tee.collateral.not_after)
    verify_evidence(ev, devnet_trust, at=tee.collateral.not_before)
    for at in (tee.collateral.not_after + 1, tee.collateral.not_before - 1):
        with pytest.raises(CollateralStale):
            verify_evidence(ev, devnet_trust, at=at)


def test_corrupt_cache_entry_is_replaced(devnet, tee, pccs, tmp_path):
    (tmp_path / "tdx-00906ed50000-platform.json").write_text("{not json")
    verify_evidence(_bare(tee), TrustConfig.devnet(devnet, pccs_url=pccs.url, cache_dir=tmp_path))
    assert Collateral.from_json((tmp_path / "tdx-00906ed50000-platform.json").read_text()).fmspc == tee.fmspc


def test_offline_bundle(devnet, tee):
    trust = TrustConfig.devnet(devnet)
    with pytest.raises(CollateralUnavailable, match="no PCCS"):
        verify_evidence(_bare(tee), trust)
    trust.collateral.add_json(tee.collateral.json_text)
    assert verify_evidence(_bare(tee), trust).platform == Platform.TDX


def test_collateral_for_another_fmspc_is_refused(devnet, devnet_trust, tee):
    other = devnet.tdx_collateral(bytes.fromhex("00a06f000000"))
    with pytest.raises(CollateralError, match="FMSPC"):
        verify_evidence(replace(tee.quote(bytes(64)), collateral=other.json_text.encode()), devnet_trust)


@pytest.mark.parametrize("text", ["", "[]", "{}", '{"tcb_info": 1}', "not json"])
def test_malformed_collateral(text):
    with pytest.raises(CollateralError):
        Collateral.from_json(text)


def test_store_without_anything():
    store = CollateralStore()
    from derot.attest.collateral import CollateralKey

    with pytest.raises(CollateralUnavailable):
        store.get(CollateralKey("TDX", bytes(6), "platform"), b"", 0)


def test_pck_chain_of_the_collateral_is_read_once_at_parse(devnet, devnet_trust, tee, monkeypatch):
    """Verification never parses the collateral JSON again (issue 15: it cost ~0.2 ms per verification); the
    chain it carries is read at parse time and still checked against the quote's on every verification."""
    doc = json.loads(tee.collateral.json_text)
    evidence = tee.quote(bytes(64))
    own_chain = tee.quote(bytes(64)).quote  # any quote of this TEE embeds its PCK chain
    from derot.attest.intel_quote import parse_quote

    doc["pck_certificate_chain"] = parse_quote(own_chain).pck_chain_pem.rstrip(b"\0").decode()
    parsed = Collateral.from_json(json.dumps(doc))
    assert parsed.pck_chain_pem == doc["pck_certificate_chain"].encode()
    assert Collateral.from_json(tee.collateral.json_text).pck_chain_pem is None

    from derot import untrusted

    def no_json(*args, **kwargs):
        raise AssertionError("collateral JSON parsed during verification")

    verify_evidence(replace(evidence, collateral=json.dumps(doc).encode()), devnet_trust)  # parse cached here
    monkeypatch.setattr(untrusted, "json_loads", no_json)
    claims = verify_evidence(replace(evidence, collateral=json.dumps(doc).encode()), devnet_trust)
    assert claims.platform == Platform.TDX


def test_a_foreign_pck_chain_in_the_collateral_is_still_refused(devnet, devnet_trust, tee):
    """The attack the check exists for: collateral naming another machine's PCK chain."""
    from derot.attest.errors import PckChainMismatch
    from derot.attest.intel_quote import parse_quote

    other = DevnetTee(devnet, Platform.TDX, {"MRTD": b"\x08" * 48}, fmspc=bytes.fromhex("00906ed50000"))
    doc = json.loads(tee.collateral.json_text)
    doc["pck_certificate_chain"] = parse_quote(other.quote(bytes(64)).quote).pck_chain_pem.rstrip(b"\0").decode()
    with pytest.raises(PckChainMismatch):
        verify_evidence(replace(tee.quote(bytes(64)), collateral=json.dumps(doc).encode()), devnet_trust)


@pytest.mark.parametrize("chain", [1, ["x"], {"a": 1}])
def test_a_pck_chain_that_is_not_a_string_is_refused_at_parse(tee, chain):
    doc = json.loads(tee.collateral.json_text)
    doc["pck_certificate_chain"] = chain
    with pytest.raises(CollateralError, match="pck_certificate_chain"):
        Collateral.from_json(json.dumps(doc))
