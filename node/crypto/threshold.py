"""Threshold BLS signatures: signatures in G1, keys in G2 (drand-quicknet / vetKD arrangement).

Node i holds the scalar share ``x_i`` of a secret ``x``; its public share key is ``PK_i = x_i·G2``
and the group key is ``PK = x·G2``.

- partial signature: ``σ_i = x_i·H(m)``, with ``H`` = RFC 9380 hash_to_G1 under a purpose DST;
- combine: ``σ = Σ λ_i·σ_i`` over any ``t`` distinct indices (Lagrange at 0);
- verify: ``e(σ, G2) == e(H(m), PK)``.

:func:`combine_verified` is what a gateway calls: it combines the first ``t`` partials and verifies
once (the optimistic path, one pairing check); only if that fails does it check each partial against
its ``PK_i`` and drop the bad ones. A bad partial never fails a request while ``t`` good ones exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from derot.crypto.bls import G1, G2, PreparedPairs, pairing_check
from derot.crypto.hazmat.poly import lagrange_coefficients
from derot.errors import DerotError

S = TypeVar("S")  # a share: a partial signature, an encrypted key share…
C = TypeVar("C")  # what shares combine into


class NotEnoughShares(DerotError):
    """Fewer than ``t`` valid shares; ``bad`` lists the indices whose shares failed verification."""

    reason = "not_enough_shares"

    def __init__(self, needed: int, valid: int, bad: tuple[int, ...]):
        self.needed, self.valid, self.bad = needed, valid, bad
        detail = f"; invalid shares from {list(bad)}" if bad else ""
        super().__init__(f"need {needed} valid shares, have {valid}{detail}")


def hash_message(msg: bytes, dst: bytes) -> G1:
    """``H(m)``: the G1 point every partial signature of ``msg`` is a multiple of."""
    return G1.hash_to_curve(msg, dst)


def sign(secret: int, msg: bytes, dst: bytes) -> G1:
    """``secret·H(m)``: a plain BLS signature, and equally node i's partial ``σ_i`` with ``secret = x_i``."""
    return hash_message(msg, dst) * secret


partial_sign = sign


def verify_hashed(public_key: G2, hashed: G1, signature: G1) -> bool:
    """``e(σ, G2) == e(H, PK)`` for an already hashed message."""
    return pairing_check([(signature, G2.generator()), (-hashed, public_key)])


class SignatureCheck:
    """Checks signatures of one message under one key; the Miller loop of ``e(−H(m), PK)`` is computed when
    the check is made (a gateway makes it while it waits for the partials)."""

    __slots__ = ("_fixed",)

    def __init__(self, public_key: G2, msg: bytes, dst: bytes):
        self._fixed = PreparedPairs([(-hash_message(msg, dst), public_key)])

    def __call__(self, signature: G1) -> bool:
        return pairing_check([(signature, G2.generator())], self._fixed)


def verify(public_key: G2, msg: bytes, signature: G1, dst: bytes) -> bool:
    """Verify a full signature against the group key, or a partial against its ``PK_i``."""
    return verify_hashed(public_key, hash_message(msg, dst), signature)


partial_verify = verify


def combine(partials: Mapping[int, G1]) -> G1:
    """Lagrange-combine partials ``{index: σ_i}``; uses every partial given (pass exactly ``t``)."""
    lambdas = lagrange_coefficients(partials)
    return G1.msm([partials[i] for i in lambdas], list(lambdas.values()))


@dataclass(frozen=True)
class CombineResult:
    """A verified group signature and the indices whose partials were found invalid."""

    signature: G1
    used: tuple[int, ...]
    bad: tuple[int, ...]


def combine_with_fallback(
    shares: Mapping[int, S],
    threshold: int,
    *,
    combine: Callable[[dict[int, S]], C],
    verify_combined: Callable[[C], bool],
    verify_share: Callable[[int, S], bool],
) -> tuple[C, tuple[int, ...], tuple[int, ...]]:
    """The gateway's rule, for any kind of share: returns ``(combined, used, bad)``.

    ``shares`` is in arrival order (a dict keeps insertion order). Optimistic path: combine the first
    ``threshold`` and verify once. Fallback: verify shares one by one, drop the bad ones, combine
    ``threshold`` good ones. Raises :class:`NotEnoughShares` when fewer than ``threshold`` are valid.
    """
    order = list(shares)
    if len(order) >= threshold:
        first = {i: shares[i] for i in order[:threshold]}
        combined = combine(first)
        if verify_combined(combined):
            return combined, tuple(first), ()
    good: dict[int, S] = {}
    bad: list[int] = []
    for i in order:
        if verify_share(i, shares[i]):
            good[i] = shares[i]
            if len(good) == threshold:
                break
        else:
            bad.append(i)
    if len(good) < threshold:
        raise NotEnoughShares(threshold, len(good), tuple(bad))
    combined = combine(good)
    if not verify_combined(combined):  # share keys inconsistent with the group key
        raise NotEnoughShares(threshold, 0, tuple(order))
    return combined, tuple(good), tuple(bad)


def combine_verified(
    partials: Mapping[int, G1],
    threshold: int,
    group_key: G2,
    share_keys: Mapping[int, G2],
    msg: bytes,
    dst: bytes,
) -> CombineResult:
    """Combine partial signatures into a signature that verifies under ``group_key``
    (:func:`combine_with_fallback`, checking a partial against its ``share_keys`` entry)."""
    hashed = hash_message(msg, dst)

    def share_ok(i: int, partial: G1) -> bool:
        key = share_keys.get(i)
        return key is not None and verify_hashed(key, hashed, partial)

    signature, used, bad = combine_with_fallback(
        partials, threshold, combine=combine,
        verify_combined=lambda sig: verify_hashed(group_key, hashed, sig), verify_share=share_ok,
    )
    return CombineResult(signature, used, bad)
