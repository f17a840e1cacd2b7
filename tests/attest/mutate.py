"""Test-only helpers: devnet evidence with chosen fields, re-signed with the devnet TEE's own keys, and
devnet collateral with a chosen TCB info / QE identity, re-signed with the devnet TCB signing key.

They make evidence a real platform would sign (a TD with other attributes, an SNP guest at VMPL 2), so
verifiers and policy see exactly what they would see from hardware.
"""

from __future__ import annotations

import json
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from derot.attest import sev_snp
from derot.attest.collateral import Collateral
from derot.attest.devnet import DevnetRoots, DevnetTee
from derot.attest.devnet_x509 import sign_p256_raw

HEADER = 48
TD10 = 584
# offsets inside the TD 1.0 body
TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES = 0, 16, 64, 112, 120


def tdx_quote(tee: DevnetTee, report_data: bytes = bytes(64), **fields: bytes | int) -> bytes:
    """A devnet TDX v4 quote with body fields replaced (``td_attributes=int``, ``seam_attributes=bytes``,
    ``mr_signer_seam=bytes``, ``tee_tcb_svn=bytes``), signed by the TEE's attestation key."""
    signed = bytearray(tee.tdx_quote(report_data)[: HEADER + TD10])
    body = HEADER
    for name, value in fields.items():
        off, size = {"td_attributes": (TDATTRIBUTES, 8), "seam_attributes": (SEAMATTRIBUTES, 8),
                     "mr_signer_seam": (MRSIGNERSEAM, 48), "tee_tcb_svn": (TEE_TCB_SVN, 16)}[name]
        raw = value.to_bytes(8, "little") if isinstance(value, int) else value
        assert len(raw) == size
        signed[body + off: body + off + size] = raw
    sig = sign_p256_raw(tee._att_key, bytes(signed)) + tee._tail
    return bytes(signed) + struct.pack("<I", len(sig)) + sig


def attributes(*, clear: int = 0, set_: int = 0) -> int:
    """The devnet TD attributes (SEPT_VE_DISABLE) with bits cleared and set."""
    base = 1 << 28
    return (base & ~clear) | set_


def tdx_collateral(roots: DevnetRoots, tee: DevnetTee, *, tcb_info=None, qe_identity=None, doc=None) -> Collateral:
    """The TEE's collateral with ``tcb_info``/``qe_identity`` edited by callables (dict -> None) and the
    whole JSON document by ``doc``; both bodies re-signed by the devnet TCB signing key."""
    d = json.loads(tee.collateral.json_text)
    key = roots._pki.keys["intel_tcb_signing"]
    for name, edit in (("tcb_info", tcb_info), ("qe_identity", qe_identity)):
        if edit is None:
            continue
        body = json.loads(d[name])
        edit(body)
        text = json.dumps(body, separators=(",", ":"))
        d[name] = text
        d[f"{name}_signature"] = sign_p256_raw(key, text.encode()).hex()
    if doc is not None:
        doc(d)
    return Collateral.from_json(json.dumps(d))


def snp_report(tee: DevnetTee, report_data: bytes = bytes(64), *, vmpl: int | None = None,
               policy: int | None = None) -> bytes:
    """A devnet SNP report with VMPL and/or guest policy replaced, signed by the chip's VEK."""
    body = bytearray(tee.snp_report(report_data))
    if vmpl is not None:
        struct.pack_into("<I", body, 0x30, vmpl)
    if policy is not None:
        struct.pack_into("<Q", body, 0x08, policy)
    r, s = decode_dss_signature(tee._vek_key.sign(bytes(body[: sev_snp.SIGNED_SIZE]), ec.ECDSA(hashes.SHA384())))
    body[0x2A0:0x2E8] = r.to_bytes(72, "little")
    body[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(body)


def td15_quote(tee: DevnetTee, report_data: bytes = bytes(64), *, mr_service_td: bytes = bytes(48),
               td_attributes: int | None = None) -> bytes:
    """A devnet TDX v5 quote with a TD 1.5 body (TEE_TCB_SVN2 = TEE_TCB_SVN, the given MRSERVICETD)."""
    v4 = tee.tdx_quote(report_data)
    body = bytearray(v4[HEADER: HEADER + TD10])
    if td_attributes is not None:
        body[TDATTRIBUTES: TDATTRIBUTES + 8] = td_attributes.to_bytes(8, "little")
    body += body[TEE_TCB_SVN: TEE_TCB_SVN + 16] + mr_service_td
    header = bytearray(v4[:HEADER])
    header[0:2] = (5).to_bytes(2, "little")
    signed = bytes(header) + struct.pack("<HI", 3, len(body)) + bytes(body)
    sig = sign_p256_raw(tee._att_key, signed) + tee._tail
    return signed + struct.pack("<I", len(sig)) + sig
