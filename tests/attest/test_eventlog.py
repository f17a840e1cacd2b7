"""TDX event-log replay: the trustee CCEL vectors replay to the RTMRs and parsed events trustee_tdx_eventlog
records; a replay is checked against the quote's RTMRs; apps are allowed by MRTD + RTMR0-2 + their named
RTMR3 events, and a tampered event is refused by name."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
from dataclasses import replace

import pytest

from derot.attest import eventlog as el
from derot.attest.claims import TDX_EVENTLOG_REGISTERS, measurement_digest
from derot.attest.devnet import DevnetTee
from derot.attest.errors import EvidenceParseError
from derot.attest.verify import verify_evidence
from derot.constants import Platform

D = "trustee_tdx_eventlog/"
RTMRS = {  # trustee test_rtmr_integrity (SOURCE.txt)
    "CCEL_data": ("2dc712306a963eadb894ad47dbaa17df44814151555aee11cbb843becca88950ffd079664902e6f22c66f7c8213543f4",
                  "0fa3be56af61208bbd179dc7b124988eb929319154663c539d6f46445ecac2fec287075047ff7bd1922829fec28cd3cf",
                  None),
    "CCEL_data_ovmf": ("8566f998798db09443b244c62de9a3041fb02e2e6936c4396d784bba2e90177329ec5aba3bb484404f2ab9cc90abe193",
                       "775b9f6bfe99f8a31396f0d0218e67ffa796d3b96ccf961cbb0deba48c79c00f082cda1a5567c1c16305f1fc210c13c6",
                       "94eaf7a7bf398ed8d888c91057ae0261802e4f3df084213a76ca7f0b5055ac9d2241de43cd58d9e8b49c503bbf25f34a"),
    "CCEL_data_grub": ("cec0a104f691f60da2387fea3c2de00c4ac035e2bb479ff02edcce69039d9e9907f0b3e55031da3dc7038f423adebd79",
                       "6c289e0c62182d41ebe97bdbc9872d10998a08eaa86adcdc684001a363207ee72942c7522cdf00a4bbc3d784bed7b670",
                       "08919d017ba0e52cd6d966351c7de16fe76c1d3d3d3da4554239e4c7d16cb8b82a94e7eaea3a0e6e18eb690b999fd31e"),
    "CCEL_data_gcp": ("3300980705adf09d28b707b79699d9874892164280832be2c386a715b6e204e0897fb564a064f810659207ba862b304f",
                      "204d49f78d29918fe7b2f694e76653861a0c2a018987d2c3a54266eff737232524cf0af68c4d180e2f8c2c0937f21967",
                      None),
    "CCEL_data_grub_gke": ("bc9945139042cf2cc75caf920aa57f14884ecfd7e893bccc51250c8ce90eb53ce72741e6adaa18183eb1331a87d4544a",
                           "c17cb288a4dee302bb9ed8d27257a168f3264ad68cab53757f37eeaa7039657fa887cad65cf910e0fdc435ff110f8a7b",
                           "334aeba2c985f8886cea97d1ecffbd512769d528b9a94009583db667ad7d2faa7d37fa145d75b192ceee2d2f10b2eb6d"),
}
COUNTS = {"CCEL_data": 5, "CCEL_data_ovmf": 20, "CCEL_data_grub": 37, "CCEL_data_gcp": 21, "CCEL_data_grub_gke": 35}


@pytest.mark.parametrize("name", sorted(RTMRS))
def test_replay_reproduces_rtmrs(vectors, name):
    log = el.parse_event_log(vectors.bytes(D + name))
    assert len(log.events) == COUNTS[name]
    expected = [bytes.fromhex(h) if h else bytes(48) for h in RTMRS[name]] + [bytes(48)]
    assert list(log.replay()) == expected


@pytest.mark.parametrize("name", ["CCEL_data", "CCEL_data_ovmf", "CCEL_data_grub", "CCEL_data_grub_gke"])
def test_parsed_events_match_trustee(vectors, name):
    """Every event equals X_out.json's (index, type_name, SHA-384 digest, event bytes, digest_matches_event);
    trustee's decoded ``details`` are not reproduced."""
    expected = json.loads(vectors.text(D + name + "_out.json"))["uefi_event_logs"]
    log = el.parse_event_log(vectors.bytes(D + name))
    assert len(log.events) == len(expected)
    for got, want in zip(log.events, expected):
        assert got.index == want["index"]
        assert got.type_name == want["type_name"]
        assert want["digests"] == [{"alg": "SHA-384", "digest": got.sha384.hex()}]
        assert base64.b64encode(got.data).decode() == want["event"]
        assert got.digest_matches_event == want["digest_matches_event"]


def test_tampered_event_changes_replay(vectors):
    raw = vectors.bytes(D + "CCEL_data_ovmf")
    log = el.parse_event_log(raw)
    seed = int.from_bytes(os.urandom(4), "big")
    print("seed", seed)
    event = random.Random(seed).choice([e for e in log.events if 1 <= e.index <= 3])
    digest_at = event.offset + 12 + 2  # index, type, count, alg id
    tampered = bytearray(raw)
    tampered[digest_at] ^= 1
    assert el.parse_event_log(bytes(tampered)).replay()[event.index - 1] != log.replay()[event.index - 1]


@pytest.mark.parametrize("cut", [0, 10, 40, 60, 100])
def test_truncated_log_is_a_parse_error(vectors, cut):
    raw = vectors.bytes(D + "CCEL_data_ovmf")
    with pytest.raises(EvidenceParseError):
        el.parse_event_log(raw[:cut])


def test_garbage_and_bounds():
    seed = int.from_bytes(os.urandom(4), "big")
    print("seed", seed)
    rng = random.Random(seed)
    for _ in range(200):
        with pytest.raises(EvidenceParseError):
            el.parse_event_log(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))))
    with pytest.raises(EvidenceParseError):
        el.parse_event_log(bytes(el.MAX_LOG_SIZE + 1))


# --------------------------------------------------------------------------- against a quote, with app events


def _log_with_apps(base: bytes, events: list[tuple[str, bytes]]) -> bytes:
    log = el.parse_event_log(base)
    out = base[:log.size]
    for name, payload in events:
        data, digest = el.app_event(name, payload)
        out += el.event_record(4, el.EV_EVENT_TAG, data, digest)
    return out


def _td(devnet, log: bytes, **registers) -> DevnetTee:
    rtmrs = el.parse_event_log(log).replay()
    regs = {"MRTD": b"\x11" * 48, **{f"RTMR{i}": v for i, v in enumerate(rtmrs)}, **registers}
    return DevnetTee(devnet, Platform.TDX, regs)


def _claims(devnet, devnet_trust, log, tee=None):
    tee = tee or _td(devnet, log)
    ev = replace(tee.quote(os.urandom(64)), event_log=log)
    return verify_evidence(ev, devnet_trust)


def test_app_identity_ignores_instance_events(vectors, devnet, devnet_trust):
    base = vectors.bytes(D + "CCEL_data_ovmf")
    compose = hashlib.sha256(b"services: {app: {image: example}}").digest()
    a = _log_with_apps(base, [("app.compose", compose), ("instance.id", b"host-a")])
    b = _log_with_apps(base, [("app.compose", compose), ("instance.id", b"host-b-longer")])
    ca, cb = _claims(devnet, devnet_trust, a), _claims(devnet, devnet_trust, b)
    assert ca.measurements["RTMR3"] != cb.measurements["RTMR3"]  # the full digest differs per instance...
    assert ca.details["full_measurement_digest"] != cb.details["full_measurement_digest"]
    assert ca.measurement_digest == cb.measurement_digest  # ...the app's identity does not
    assert ca.details["app_events"][0] == {"name": "app.compose", "payload": compose}
    # the identity is one value an owner computes from MRTD, RTMR0-2, MRCONFIGID and the app events
    regs = {k: ca.measurements[k] for k in TDX_EVENTLOG_REGISTERS if k != "APP_EVENTS"}
    regs["APP_EVENTS"] = el.app_events_digest((("app.compose", compose),))
    assert measurement_digest(Platform.TDX, regs, TDX_EVENTLOG_REGISTERS) == ca.measurement_digest
    other = _log_with_apps(base, [("app.compose", b"\x01" * 32), ("instance.id", b"host-a")])
    assert _claims(devnet, devnet_trust, other).measurement_digest != ca.measurement_digest
    grub = _log_with_apps(vectors.bytes(D + "CCEL_data_grub"), [("app.compose", compose)])
    assert _claims(devnet, devnet_trust, grub).measurement_digest != ca.measurement_digest


def test_event_log_must_match_the_quote(vectors, devnet, devnet_trust):
    base = vectors.bytes(D + "CCEL_data_ovmf")
    log = _log_with_apps(base, [("app.compose", b"\x02" * 32)])
    tee = _td(devnet, log)
    # an app event whose payload is swapped (digest recomputed) no longer replays to the quoted RTMR3
    swapped = _log_with_apps(base, [("app.compose", b"\x03" * 32)])
    with pytest.raises(el.EventLogMismatch) as e:
        _claims(devnet, devnet_trust, swapped, tee)
    assert e.value.reason == "event_log_mismatch" and "RTMR3" in str(e.value)
    # an app event whose data is changed but whose digest is kept: replay matches, the event does not
    data, digest = el.app_event("app.compose", b"\x02" * 32)
    forged = base[:el.parse_event_log(base).size] + el.event_record(
        4, el.EV_EVENT_TAG, el.app_event("app.compose", b"\x04" * 32)[0], digest)
    with pytest.raises(el.EventLogMismatch) as e:
        _claims(devnet, devnet_trust, forged, tee)
    assert "digest" in str(e.value)
    # a firmware event removed: RTMR0 no longer replays
    fw = el.parse_event_log(base).events[0]
    end = fw.offset + 12 + 2 + 48 + 4 + len(fw.data)
    dropped = base[:fw.offset] + base[end:]
    with pytest.raises(el.EventLogMismatch) as e:
        _claims(devnet, devnet_trust, dropped, tee)
    assert "RTMR0" in str(e.value)
    # the untampered log passes
    assert _claims(devnet, devnet_trust, log, tee).details["event_log_events"] == 21


def test_sdk_attaches_the_log_and_app_events(vectors_dir, devnet, devnet_trust, tmp_path):
    """A launcher extends app events into RTMR3 and logs them; the SDK's device attaches CCEL + runtime log;
    the verifier replays it against the quote (here a devnet TD whose RTMRs follow the same extends)."""
    from derot.app.tee.eventlog_device import WithEventLog, extend_app_event

    ccel = vectors_dir / "trustee_tdx_eventlog/CCEL_data"  # 1 MiB with padding: trimmed to fit the envelope
    rtmr3_file, runtime = tmp_path / "rtmr3", tmp_path / "runtime.log"
    extended = []
    for name, payload in (("app.compose", b"\x05" * 32), ("instance.id", b"vm-17")):
        extended.append(extend_app_event(name, payload, runtime_log=str(runtime), rtmr3_path=str(rtmr3_file)))
        assert rtmr3_file.read_bytes() == extended[-1]  # what the kernel receives: the digest to extend
    rtmr3 = bytes(48)
    for d in extended:
        rtmr3 = hashlib.sha384(rtmr3 + d).digest()
    base = el.parse_event_log(ccel.read_bytes()).replay()

    class Td:
        platform = Platform.TDX
        tee = DevnetTee(devnet, Platform.TDX, {"MRTD": b"\x11" * 48, "RTMR0": base[0], "RTMR1": base[1],
                                               "RTMR2": base[2], "RTMR3": rtmr3})

        def evidence(self, rd):
            return self.tee.quote(rd)

    device = WithEventLog(Td(), ccel_path=str(ccel), runtime_log=str(runtime))
    ev = device.evidence(os.urandom(64))
    assert len(ev.encode()) < 64 * 1024
    claims = verify_evidence(ev, devnet_trust)
    assert [e["name"] for e in claims.details["app_events"]] == ["app.compose", "instance.id"]
