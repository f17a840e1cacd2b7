"""Off-chain certificate verification with the same answer as ``DerotRegistry.verifyCertificate``.

A relying party needs, at one registry block: the governance snapshot (platforms, apps, revoked
measurements), the epochs (which ones activated and with which signing key) and the certificate
revocations. :func:`verify_certificate` runs the contract's checks in the contract's order and returns
the first failing :class:`~derot.certs.reasons.Reason`.

Accepted epochs: a certificate from epoch *e* is accepted iff *e* was activated (ACTIVE or RETIRED) and its
``PK_sig`` equals the current group key. A reshare keeps the group key, so certificates survive membership
changes; a fresh DKG (new key) retires every earlier certificate at once.

This module must stay importable by the app SDK: no web3, no server code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from derot.attest.snapshot import GovernanceSnapshot
from derot.attest.identity import revoked_keys
from derot.certs.certificate import Certificate, CertificateDecodeError, other_version
from derot.certs.reasons import Reason
from derot.constants import CERT_VERSION
from derot.crypto.bls import G1, G2, PointDecodeError, pairing_check

SIGNATURE_SIZE = 128  # EIP-2537 G1


class EpochPhase(enum.IntEnum):
    """Mirrors ``DerotRegistry.Phase``."""

    NONE = 0
    DKG = 1
    RESHARE = 2
    ACTIVE = 3
    RETIRED = 4
    ABORTED = 5

    @property
    def activated(self) -> bool:
        return self in (EpochPhase.ACTIVE, EpochPhase.RETIRED)


@dataclass(frozen=True)
class CertEpoch:
    """What certificate verification needs to know about one epoch."""

    phase: EpochPhase
    group_key_sig: G2 | None = None  # set once the epoch activated
    group_key_kd: G2 | None = None  # set once the epoch activated (None: unknown to this caller)


def keys_current(epoch: CertEpoch, current: CertEpoch) -> bool:
    """The one key rule, shared with ``DerotRegistry._checkIssuer``: an activated epoch's certificates are
    current iff BOTH its group keys equal the current epoch's. A certificate binds a key derived under
    PK_kd, so a DKG that keeps PK_sig but changes PK_kd retires it as surely as a new PK_sig does."""
    return epoch.group_key_sig is not None and (epoch.group_key_sig, epoch.group_key_kd) == (current.group_key_sig, current.group_key_kd)


@dataclass(frozen=True)
class CertificateTrust:
    """Registry state, at the snapshot's block, that certificate checks need beyond the snapshot."""

    epochs: Mapping[int, CertEpoch] = field(default_factory=dict)
    revoked_serials: frozenset[bytes] = frozenset()
    revoked_evidence_hashes: frozenset[bytes] = frozenset()
    #: the registry's current epoch; when set, epochs are compared by both keys (:func:`keys_current`),
    #: exactly as the contract does. Without it only PK_sig can be compared (``group_key_sig``).
    current_epoch: int | None = None
    #: keccak256(uint8 kind ‖ id) of every revoked hardware id (derot.attest.identity.revoked_keys); empty means
    #: "derive them from the snapshot's revocation sets"
    revoked_hardware: frozenset[bytes] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "epochs", MappingProxyType(dict(self.epochs)))


@dataclass(frozen=True)
class Verdict:
    """Outcome of a verification; ``certificate`` is set whenever the bytes decoded."""

    reason: Reason
    certificate: Certificate | None = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK

    def __bool__(self) -> bool:
        return self.ok


def decode_signature(sig_bytes: bytes) -> G1:
    """Decode a 128-byte EIP-2537 G1 signature (the identity decodes, and then fails the pairing check)."""
    return G1.from_eip2537(sig_bytes, allow_identity=True)


def signature_bytes(sig: G1) -> bytes:
    """The 128-byte EIP-2537 form the contract takes (the SDK may hold the 48-byte compressed form)."""
    return sig.to_eip2537()


def verify_certificate(
    cert_bytes: bytes,
    sig_bytes: bytes,
    *,
    group_key_sig: G2,
    snapshot: GovernanceSnapshot,
    now: int,
    trust: CertificateTrust,
) -> Verdict:
    """Verify ``cert_bytes`` and its 128-byte EIP-2537 signature at Unix time ``now``.

    ``group_key_sig`` is the current ``PK_sig``; ``snapshot`` and ``trust`` describe the registry at one block.
    Never raises on bad input: every refusal is a :class:`Reason`.
    """
    sig_ok = isinstance(sig_bytes, (bytes, bytearray, memoryview)) and len(sig_bytes) == SIGNATURE_SIZE
    try:
        cert = Certificate.decode(cert_bytes)
    except CertificateDecodeError:
        wrong = isinstance(cert_bytes, (bytes, bytearray, memoryview)) and other_version(bytes(cert_bytes)) is not None
        if not wrong:
            return Verdict(Reason.MALFORMED)
        # the contract decodes any version word in this layout, checks the signature's length, and only then
        # the version (CertificateCodec.decode, then _checkIssuer): keep that order
        if not sig_ok and _layout_decodes(bytes(cert_bytes)):
            return Verdict(Reason.MALFORMED_SIGNATURE)
        return Verdict(Reason.WRONG_VERSION)
    if not sig_ok:
        return Verdict(Reason.MALFORMED_SIGNATURE, cert)
    reason = (
        _check_issuer(cert, snapshot, trust, group_key_sig)
        or _check_signature(cert, bytes(sig_bytes), group_key_sig)
        or _check_state(cert, snapshot, trust, now)
    )
    return Verdict(reason or Reason.OK, cert)


def _layout_decodes(data: bytes) -> bool:
    """Whether ``data`` decodes as this version's layout once its version word (a uint8, as the contract
    reads it) is set to this version."""
    if (other_version(data) or 0) > 0xFF:
        return False
    try:
        Certificate.decode(data[:32] + CERT_VERSION.to_bytes(32, "big") + data[64:])
        return True
    except CertificateDecodeError:
        return False


def _check_issuer(cert: Certificate, snapshot: GovernanceSnapshot, trust: CertificateTrust, key: G2) -> Reason | None:
    if cert.version != CERT_VERSION:
        return Reason.WRONG_VERSION
    if cert.chain_id != snapshot.chain_id:
        return Reason.WRONG_CHAIN
    if cert.registry.lower() != snapshot.registry.lower():
        return Reason.WRONG_REGISTRY
    epoch = trust.epochs.get(cert.epoch)
    if epoch is None or epoch.phase == EpochPhase.NONE:
        return Reason.UNKNOWN_EPOCH
    if not EpochPhase(epoch.phase).activated:
        return Reason.EPOCH_NOT_ACTIVE
    if epoch.group_key_sig is None or epoch.group_key_sig != key:
        return Reason.EPOCH_KEY_RETIRED
    current = trust.epochs.get(trust.current_epoch) if trust.current_epoch is not None else None
    if trust.current_epoch is not None and (current is None or not keys_current(epoch, current)):
        return Reason.EPOCH_KEY_RETIRED
    return None


def _check_signature(cert: Certificate, sig_bytes: bytes, key: G2) -> Reason | None:
    try:
        sig = decode_signature(sig_bytes)
    except PointDecodeError:
        return Reason.MALFORMED_SIGNATURE
    if not pairing_check([(sig, -G2.generator()), (cert.hash_point(), key)]):
        return Reason.BAD_SIGNATURE
    return None


def _check_state(cert: Certificate, snapshot: GovernanceSnapshot, trust: CertificateTrust, now: int) -> Reason | None:
    if cert.serial in trust.revoked_serials or cert.evidence_hash in trust.revoked_evidence_hashes:
        return Reason.CERT_REVOKED
    if now < cert.not_before:
        return Reason.NOT_YET_VALID
    if now > cert.not_after:
        return Reason.EXPIRED
    app = snapshot.apps.get(cert.app_id)
    if app is None:
        return Reason.UNKNOWN_APP
    if app.frozen:
        return Reason.APP_FROZEN
    if app.key_version != cert.key_version:
        return Reason.KEY_VERSION_MISMATCH
    rule = snapshot.platforms.get(cert.platform)
    if rule is None or not rule.enabled:
        return Reason.PLATFORM_DISABLED
    if cert.tcb_status < rule.tcb_floor:
        return Reason.TCB_BELOW_FLOOR
    if cert.measurement in snapshot.revoked_measurements:
        return Reason.MEASUREMENT_REVOKED
    revoked = trust.revoked_hardware
    if revoked is None:
        revoked = revoked_keys(snapshot.revoked_hardware().items())
    if any(h in revoked for h in cert.hardware):
        return Reason.HARDWARE_REVOKED
    return None
