"""Per-machine revocation kinds on the real registry: lengths and forms, the council and governance paths,
and certificates issued before a revocation failing after it, on-chain and off-chain alike (issue 16)."""

from __future__ import annotations

import os

import pytest
from web3.exceptions import ContractLogicError

from derot.attest.identity import hardware_key
from derot.certs import Reason
from derot.chain import actions as A
from derot.chain.actions import ActionError
from derot.chain.state import read_state
from derot.constants import Platform, RevocationKind as K

GOOD = {K.CHIP_ID: 64, K.PPID: 16, K.PCK_CERT: 32, K.GPU_DEVICE: 9}
BAD = [
    (K.CHIP_ID, os.urandom(16)), (K.CHIP_ID, bytes(64)), (K.CHIP_ID, os.urandom(65)),
    (K.PPID, os.urandom(15)), (K.PPID, os.urandom(17)), (K.PPID, bytes(16)),
    (K.PCK_CERT, os.urandom(31)), (K.PCK_CERT, b""),
    (K.GPU_DEVICE, b""), (K.GPU_DEVICE, os.urandom(33)), (K.GPU_DEVICE, bytes(9)),
]


@pytest.mark.parametrize("kind, ident", BAD, ids=[f"{k.name}-{len(i)}{'-zero' if i and not any(i) else ''}"
                                                  for k, i in BAD])
def test_registry_and_cli_refuse_bad_ids(chain, kind, ident):
    fn = chain.registry.contract.functions.revoke(int(kind), ident)
    with pytest.raises(ContractLogicError, match="BadRevocationId|0x"):
        fn.call({"from": chain.council.address})
    with pytest.raises(ActionError):
        A.Revoke(kind, ident)


def test_each_machine_kind_round_trips_and_only_the_owner_unrevokes(chain):
    reg = chain.registry
    ids = {kind: os.urandom(n) for kind, n in GOOD.items()}
    reg.apply(chain.council, [A.Revoke(kind, ident) for kind, ident in ids.items()])
    for kind, ident in ids.items():
        assert reg.revocations(kind) == {ident} and reg.is_revoked(kind, ident)
    # the same bytes under another kind are not revoked
    assert not reg.is_revoked(K.GPU_DEVICE, ids[K.PPID])
    with pytest.raises(ContractLogicError):
        reg.contract.functions.unrevoke(int(K.PPID), ids[K.PPID]).call({"from": chain.council.address})
    chain.enact([A.Unrevoke(K.PPID, ids[K.PPID])], "lift a PPID")
    assert reg.revocations(K.PPID) == frozenset()


def _gas(reg, cert, sig) -> int:
    return reg.contract.functions.verifyCertificate(cert.encode(), sig.to_eip2537()).estimate_gas()


def test_certificates_issued_before_a_machine_revocation_fail_after_it(chain, capsys):
    """Council for one machine kind, governance for another; the other machine's certificate keeps verifying;
    off-chain verification at the same block agrees; lifting the revocation restores the certificate."""
    reg = chain.registry
    ppid_a, ppid_b, gpu_a = os.urandom(16), os.urandom(16), os.urandom(20)
    fmspc = os.urandom(6)
    intel = lambda ppid: tuple(sorted([hardware_key(K.FMSPC, fmspc), hardware_key(K.PPID, ppid),  # noqa: E731
                                       hardware_key(K.PCK_CERT, os.urandom(32))]))
    cert_a, cert_b = chain.cert(hardware=intel(ppid_a)), chain.cert(hardware=intel(ppid_b))
    cert_gpu = chain.cert(hardware=tuple(sorted(intel(ppid_b) + (hardware_key(K.GPU_DEVICE, gpu_a),))),
                          platform=int(Platform.TDX))
    sigs = {c.serial: c.sign(chain.sk) for c in (cert_a, cert_b, cert_gpu)}

    def verdicts():
        block = chain.w3.eth.get_block("latest")
        state = read_state(reg, bytes(block["hash"]), block["number"], block["timestamp"])
        out = []
        for c in (cert_a, cert_b, cert_gpu):
            on = reg.verify_certificate(c.encode(), sigs[c.serial], block=block["number"])
            off = state.verify_certificate(c.encode(), sigs[c.serial].to_eip2537()).reason
            assert on is off, (c.serial.hex(), on, off)
            out.append(on)
        return out

    assert verdicts() == [Reason.OK] * 3
    gas_ok = _gas(reg, cert_a, sigs[cert_a.serial])
    reg.apply(chain.council, [A.Revoke(K.PPID, ppid_a)])  # the council, at once
    assert verdicts() == [Reason.HARDWARE_REVOKED, Reason.OK, Reason.OK]
    gas_revoked = _gas(reg, cert_a, sigs[cert_a.serial])
    chain.enact([A.Revoke(K.GPU_DEVICE, gpu_a)], "revoke one GPU")  # governance: propose, vote, queue, execute
    assert verdicts() == [Reason.HARDWARE_REVOKED, Reason.OK, Reason.HARDWARE_REVOKED]
    chain.enact([A.Unrevoke(K.PPID, ppid_a)], "lift the PPID")
    assert verdicts() == [Reason.OK, Reason.OK, Reason.HARDWARE_REVOKED]
    reg.apply(chain.council, [A.Revoke(K.FMSPC, fmspc)])  # a whole family takes every certificate of it
    assert verdicts() == [Reason.HARDWARE_REVOKED] * 3
    with capsys.disabled():
        print(f"\nverifyCertificate estimate_gas (3 hardware keys): OK {gas_ok:,}, HARDWARE_REVOKED {gas_revoked:,}")


def test_bloom_filter_hit_without_a_revocation_still_verifies(chain):
    """verifyCertificate reads the mapping only when a key's three Bloom bits are all set: a key that shares
    its filter bits (its first three bytes) with a revoked key, but is not revoked, must still pass."""
    reg = chain.registry
    ppid = os.urandom(16)
    revoked = hardware_key(K.PPID, ppid)
    lookalike = revoked[:3] + os.urandom(29)
    reg.apply(chain.council, [A.Revoke(K.PPID, ppid)])
    fine, bad = chain.cert(hardware=(lookalike,)), chain.cert(hardware=(lookalike, revoked))
    assert reg.verify_certificate(fine.encode(), fine.sign(chain.sk)) is Reason.OK
    assert reg.verify_certificate(bad.encode(), bad.sign(chain.sk)) is Reason.HARDWARE_REVOKED
