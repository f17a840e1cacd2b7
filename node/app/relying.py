"""Relying parties: one call that checks an app's certificate against the chain.

    from derot.app import verify_certificate
    check = verify_certificate(cert_bytes, sig_bytes, rpc_url=RPC, registry=REGISTRY)
    if check.ok: ...                          # check.reason names the first failing check otherwise

It reads the registry's state at the latest block (group keys per epoch, apps, platforms, revocations)
and runs :func:`derot.certs.verify_certificate`, the same checks in the same order as the contract's
``verifyCertificate``; ``onchain=True`` also asks the contract (an ``eth_call``) and requires both to agree.
Certificates and signatures may be bytes or hex text; the signature may be the 128-byte EIP-2537 form or
the 48-byte compressed one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from derot.app.settings import SettingsError
from derot.certs.certificate import Certificate
from derot.certs.reasons import Reason

Blob = bytes | bytearray | str


@dataclass(frozen=True)
class CertificateCheck:
    """The outcome of :func:`verify_certificate`: ``reason`` (``Reason.OK`` when valid) off-chain,
    ``onchain`` the contract's reason when asked, the decoded ``certificate`` when it decoded, and the
    block and time it was checked at."""

    reason: Reason
    onchain: Reason | None
    certificate: Certificate | None
    block: int
    checked_at: int

    @property
    def ok(self) -> bool:
        """Valid off-chain, and on-chain when that was asked."""
        return self.reason is Reason.OK and self.onchain in (None, Reason.OK)

    def __bool__(self) -> bool:
        return self.ok


def _blob(value: Blob, what: str) -> bytes:
    if isinstance(value, str):
        text = value.strip()
        try:
            return bytes.fromhex(text[2:] if text.lower().startswith("0x") else text)
        except ValueError:
            raise ValueError(f"{what} must be bytes or hex text") from None
    return bytes(value)


def _eip2537(signature: bytes) -> bytes:
    from derot.crypto.bls import G1, PointDecodeError

    if len(signature) == G1.SIZE:
        try:
            return G1.from_bytes(signature).to_eip2537()
        except PointDecodeError:
            return signature  # verification reports the malformed signature
    return signature


def verify_certificate(certificate: Blob, signature: Blob, *, rpc_url: str | None = None,
                       registry: str | None = None, now: int | None = None, onchain: bool = False,
                       environ: Mapping[str, str] = os.environ) -> CertificateCheck:
    """Check ``certificate`` and ``signature`` against the registry at the latest block (module docstring).
    ``rpc_url``/``registry`` default to ``$DEROT_RPC``/``$DEROT_REGISTRY``; ``now`` (Unix seconds) to the
    block's time. Raises :class:`SettingsError` when the chain is unknown, web3 errors when unreachable."""
    from web3 import Web3

    from derot.chain.registry import Registry
    from derot.chain.state import read_state

    rpc_url = rpc_url or environ.get("DEROT_RPC", "")
    registry = registry or environ.get("DEROT_REGISTRY", "")
    if not rpc_url or not registry:
        raise SettingsError("verify_certificate needs rpc_url and registry (or $DEROT_RPC and $DEROT_REGISTRY)")
    cert, sig = _blob(certificate, "certificate"), _eip2537(_blob(signature, "signature"))
    reg = Registry(Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 15})), registry)
    block = reg.w3.eth.get_block("latest")
    state = read_state(reg, bytes(block["hash"]), block["number"], block["timestamp"])
    when = block["timestamp"] if now is None else int(now)
    verdict = state.verify_certificate(cert, sig, now=when)
    on = reg.verify_certificate(cert, sig, at=now, block=block["number"]) if onchain else None
    return CertificateCheck(verdict.reason, on, verdict.certificate, block["number"], when)
