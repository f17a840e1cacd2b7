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

from collections.abc import Mapping
from dataclasses import dataclass

from node.crypto.bls import G1, G2, pairing_check
from node.crypto.poly import lagrange_coefficients


class NotEnoughShares(Exception):
    """Fewer than ``t`` valid shares; ``bad`` lists the indices whose shares failed verification."""

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


def combine_verified(
    partials: Mapping[int, G1],
    threshold: int,
    group_key: G2,
    share_keys: Mapping[int, G2],
    msg: bytes,
    dst: bytes,
) -> CombineResult:
    """Combine partials into a signature that verifies under ``group_key``.

    ``partials`` is in arrival order (a dict keeps insertion order). Optimistic path: combine the
    first ``threshold`` and verify once. Fallback: verify every partial against ``share_keys`` and
    combine ``threshold`` good ones. Raises :class:`NotEnoughShares` when fewer than ``threshold``
    partials are valid.
    """
    hashed = hash_message(msg, dst)
    order = list(partials)
    if len(order) >= threshold:
        first = {i: partials[i] for i in order[:threshold]}
        signature = combine(first)
        if verify_hashed(group_key, hashed, signature):
            return CombineResult(signature, tuple(first), ())
    good: dict[int, G1] = {}
    bad: list[int] = []
    for i in order:
        key = share_keys.get(i)
        if key is not None and verify_hashed(key, hashed, partials[i]):
            good[i] = partials[i]
            if len(good) == threshold:
                break
        else:
            bad.append(i)
    if len(good) < threshold:
        raise NotEnoughShares(threshold, len(good), tuple(bad))
    signature = combine(good)
    if not verify_hashed(group_key, hashed, signature):  # share keys inconsistent with the group key
        raise NotEnoughShares(threshold, 0, tuple(order))
    return CombineResult(signature, tuple(good), tuple(bad))
