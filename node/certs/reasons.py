"""Why a certificate is accepted or refused: one code shared by the contract and the SDK.

``Reason`` mirrors ``DerotRegistry.Reason`` value for value (a test compares it with the Solidity source),
so ``verifyCertificate`` on-chain and :func:`derot.certs.verify_certificate` off-chain name the same reason
for the same input. The checks run in this order; the first failing one is reported.
"""

from __future__ import annotations

import enum


class Reason(enum.IntEnum):
    OK = 0
    MALFORMED = 1  #: not the canonical ABI encoding of the certificate tuple
    MALFORMED_SIGNATURE = 2  #: not 128 bytes, or not a G1 subgroup point in EIP-2537 form
    WRONG_VERSION = 3
    WRONG_CHAIN = 4
    WRONG_REGISTRY = 5
    UNKNOWN_EPOCH = 6
    EPOCH_NOT_ACTIVE = 7  #: the epoch never activated (DKG/reshare pending, or aborted)
    EPOCH_KEY_RETIRED = 8  #: the epoch activated, but its keys are no longer the current group keys
    BAD_SIGNATURE = 9
    CERT_REVOKED = 10  #: the serial or the evidence hash is revoked
    NOT_YET_VALID = 11
    EXPIRED = 12
    UNKNOWN_APP = 13
    APP_FROZEN = 14
    KEY_VERSION_MISMATCH = 15  #: the app's keyVersion has moved on (key rotated)
    PLATFORM_DISABLED = 16
    TCB_BELOW_FLOOR = 17
    MEASUREMENT_REVOKED = 18
    HARDWARE_REVOKED = 19  #: a hardware identity the certificate lists is revoked (docs/revocation.md)

    @property
    def ok(self) -> bool:
        return self is Reason.OK
