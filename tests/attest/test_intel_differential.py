"""Differential test: derot's own Intel verifier (intel_dcap) and dcap-qvl reach the same status wherever
dcap-qvl gives one (and both refuse where dcap-qvl refuses), on the real quotes and on a seeded corpus of
devnet quotes (TD 1.0 in v4, some TD 1.5 in v5) and collateral mutated in the fields a QVL checks (module
identity, SEAMATTRIBUTES, TEE TCB SVN, TCB info and QE identity kind and version, PCEID, FMSPC, TCB levels).
Quotes that dcap-qvl refuses by its own attribute policy are not compared (policy decides those;
test_policy_tee)."""

from __future__ import annotations

import os
import random

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import serialization

from derot.attest import intel_attributes, intel_dcap
from derot.attest.devnet import DevnetTee
from derot.attest.devnet_x509 import sign_p256_raw
from derot.attest.errors import AttestationError
from derot.attest.intel_quote import parse_quote
from derot.constants import Platform

from tests.attest import mutate

REAL = [  # (quote, collateral, time inside the window) as listed in tests/vectors/EXPECTED.md
    ("phala_dcap_qvl/tdx_quote", "phala_dcap_qvl/tdx_quote_collateral.json", "2025-07-01T00:00:00Z"),
    ("phala_dcap_qvl/sgx_quote", "phala_dcap_qvl/sgx_quote_collateral.json", "2025-07-01T00:00:00Z"),
    ("phala_dcap_qvl/near_quote.bin", "phala_dcap_qvl/near_quote_collateral.json", "2025-09-15T00:00:00Z"),
    ("phala_dcap_qvl/tdx-quote.bin", "phala_dcap_qvl/tdx_quote_collateral.json", "2025-07-01T00:00:00Z"),
    ("phala_dcap_qvl/quote-from-tappd.bin", "phala_dcap_qvl/tdx_quote_collateral.json", "2025-07-01T00:00:00Z"),
    ("phala_dcap_qvl/tdx_quote_outdated", "phala_dcap_qvl/tdx_quote_outdated_collateral.json", "2026-03-01T00:00:00Z"),
    ("google_go_tdx_guest/quote_v5_sample.dat", "phala_dcap_qvl/tdx_quote_outdated_collateral.json", "2026-03-01T00:00:00Z"),
]


def outcomes(raw: bytes, collateral, root_der: bytes, at: int) -> tuple[str, str]:
    try:
        qvl = dcap_qvl.verify_with_root_ca(raw, collateral.qvl, root_der, at).status
    except ValueError as exc:
        qvl = "error: " + str(exc).splitlines()[0]
    try:
        own = intel_dcap.verify_quote(parse_quote(raw), collateral, root_der, at)[0].status
    except AttestationError as exc:
        own = f"error: [{exc.reason}] {exc}"
    return qvl, own


def agree(qvl: str, own: str) -> bool:
    return qvl == own or (qvl.startswith("error") and own.startswith("error"))


@pytest.mark.parametrize("quote_file,coll_file,when", REAL)
def test_real_quotes(vectors, ts, quote_file, coll_file, when):
    raw = vectors.bytes(quote_file)
    assert not intel_attributes.dcap_policy_objections(parse_quote(raw).body)
    qvl, own = outcomes(raw, vectors.collateral(coll_file), vectors.bytes("roots/intel_sgx_root_ca.der"), ts(when))
    assert agree(qvl, own), (qvl, own)


def test_real_go_tdx_quote_with_go_collateral(vectors, ts):
    raw = vectors.bytes("google_go_tdx_guest/tdx_prod_quote_SPR_E4.dat")
    qvl, own = outcomes(raw, vectors.go_tdx_collateral(), vectors.bytes("roots/intel_sgx_root_ca.der"),
                        ts("2023-06-25T00:00:00Z"))
    assert agree(qvl, own) and qvl.startswith("error"), (qvl, own)


def _module(info, key, value):
    info["tdxModule"][key] = value


COLLATERAL_EDITS = {
    "none": None,
    "tcb_info_v2": lambda i: i.update(version=2),
    "tcb_info_sgx": lambda i: i.update(id="SGX"),
    "pceid": lambda i: i.update(pceId="0001"),
    "module_mrsigner": lambda i: _module(i, "mrsigner", "11" * 48),
    "module_attributes": lambda i: _module(i, "attributes", "0100000000000000"),
    "no_module": lambda i: i.pop("tdxModule"),
    "no_identities": lambda i: i.pop("tdxModuleIdentities"),
    "identity_mrsigner": lambda i: i["tdxModuleIdentities"][1].update(mrsigner="22" * 48),
    "top_revoked": lambda i: i["tcbLevels"][0].update(tcbStatus="Revoked"),
    "top_config_needed": lambda i: i["tcbLevels"][0].update(tcbStatus="ConfigurationNeeded"),
    "short_components": lambda i: i["tcbLevels"][0]["tcb"]["sgxtcbcomponents"].pop(),
}
#: collateral edits on which derot is stricter than dcap-qvl 0.7.0, with the error derot names
STRICTER = {"pceid": "PCEID"}
QE_EDITS = {
    "none": None,
    "qe_id_sgx": lambda q: q.update(id="QE"),
    "qe_v1": lambda q: q.update(version=1),
    "qe_v3": lambda q: q.update(version=3),
    "qe_out_of_date": lambda q: q["tcbLevels"][0].update(tcbStatus="OutOfDate"),
    "qe_isvprodid": lambda q: q.update(isvprodid=9),
}


#: fixed cases that open the corpus, so that every run compares each status whatever the seed draws
ANCHORS = [
    (bytes([9, 1, 4]), {}, "none", "none", "UpToDate"),
    (bytes([2, 1, 2]), {}, "none", "none", "OutOfDate"),
    (bytes([9, 1, 4]), {}, "top_config_needed", "none", "ConfigurationNeeded"),
    (bytes([2, 0, 2]), {}, "none", "none", "error"),
]


def _random_case(rng: random.Random) -> tuple[bytes, dict, str, str, None]:
    svn = bytes([rng.choice([2, 4, 6, 9]), rng.choice([0, 1, 1, 2, 3]), rng.choice([2, 3, 4])])
    fields = {}
    if rng.random() < 0.25:
        fields["seam_attributes"] = (1 << rng.randrange(64)).to_bytes(8, "little")
    if rng.random() < 0.2:
        fields["mr_signer_seam"] = rng.randbytes(48)
    if not fields and rng.random() < 0.2:
        fields = None  # a TD 1.5 quote in v5
    return svn, fields, rng.choice(list(COLLATERAL_EDITS)), rng.choice(list(QE_EDITS)), None


def test_mutated_devnet_corpus(devnet):
    seed = int(os.environ.get("DEROT_TEST_SEED", random.SystemRandom().randrange(1 << 32)))
    print(f"differential corpus seed {seed} (set DEROT_TEST_SEED to replay)")
    rng = random.Random(seed)
    tee = DevnetTee(devnet, Platform.TDX)
    at = devnet.created + 3600
    compared, statuses, mismatches = 0, set(), []
    cases = ANCHORS + [_random_case(rng) for _ in range(80)]
    for i, (svn3, fields, ce, qe, expected) in enumerate(cases):
        coll = mutate.tdx_collateral(devnet, tee, tcb_info=COLLATERAL_EDITS[ce], qe_identity=QE_EDITS[qe])
        if fields is None:
            raw = mutate.td15_quote(tee)
        else:
            raw = mutate.tdx_quote(tee, tee_tcb_svn=svn3 + bytes(13), **fields)
        qvl, own = outcomes(raw, coll, devnet.intel_root_der, at)
        if ce in STRICTER:  # derot checks what Intel's QVL checks and dcap-qvl 0.7.0 does not
            assert own.startswith("error") and (qe != "none" or STRICTER[ce] in own), own
            continue
        compared += 1
        status = qvl if not qvl.startswith("error") else "error"
        statuses.add(status)
        assert expected in (None, status), (i, expected, qvl)
        if not agree(qvl, own):
            mismatches.append((i, svn3.hex(), sorted(fields or ["td15"]), ce, qe, qvl, own))
    assert not mismatches, "\n".join(map(str, mismatches))
    assert compared >= 60 and len(statuses) >= 4, (compared, statuses)


def test_tcb_info_signed_by_another_certificate_under_the_root(devnet):
    """A QVL must check that the TCB signing certificate itself signed the TCB info, not any certificate
    that chains to the Intel root (here the PCK CA, whose key a PCK-issuing service holds)."""
    tee = DevnetTee(devnet, Platform.TDX)
    pki = devnet._pki
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731

    def resign_with_pck_ca(d):
        d["tcb_info_signature"] = sign_p256_raw(pki.keys["intel_pck_ca"], d["tcb_info"].encode()).hex()
        d["tcb_info_issuer_chain"] = pem(pki.certs["intel_pck_ca"]) + pem(pki.certs["intel_root"])

    coll = mutate.tdx_collateral(devnet, tee, doc=resign_with_pck_ca)
    qvl, own = outcomes(tee.tdx_quote(bytes(64)), coll, devnet.intel_root_der, devnet.created + 3600)
    assert own.startswith("error") and "TCB signing certificate" in own, own
    print("dcap-qvl on the same collateral:", qvl)
    assert qvl.startswith("error")  # dcap-qvl 0.7.0 refuses it too (webpki: the PCK CA is no end entity)
