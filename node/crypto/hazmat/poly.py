"""Polynomials over the BLS12-381 scalar field, Lagrange interpolation and Feldman commitments.

Invariants:
- coefficients and evaluations are ints in ``[0, R)``;
- share indices are positive ints (member indices 1..n), never 0, and distinct within one call;
- a Feldman commitment to ``f`` is ``[a_k·G2 for a_k in f.coefficients]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from derot.crypto.bls import G2, R, random_scalar


@dataclass(frozen=True)
class Polynomial:
    """``f(x) = Σ coefficients[k]·x^k`` over Z_R; ``degree = len(coefficients) - 1``."""

    coefficients: tuple[int, ...]

    @classmethod
    def random(cls, degree: int, constant: int | None = None) -> Polynomial:
        """A uniformly random polynomial of the given degree, with ``f(0) = constant`` if given."""
        if degree < 0:
            raise ValueError("degree must be >= 0")
        head = random_scalar() if constant is None else constant % R
        return cls((head, *(random_scalar() for _ in range(degree))))

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1

    def __call__(self, x: int) -> int:
        acc = 0
        for a in reversed(self.coefficients):
            acc = (acc * x + a) % R
        return acc

    def commit(self) -> list[G2]:
        """Feldman commitments ``a_k·G2``."""
        g = G2.generator()
        return [g * a for a in self.coefficients]


def eval_commitment(commitments: Sequence[G2], x: int) -> G2:
    """``Σ_k C_k·x^k``: the public key of the share ``f(x)`` for commitments ``C_k = a_k·G2``."""
    powers, acc = [], 1
    for _ in commitments:
        powers.append(acc)
        acc = acc * x % R
    return G2.msm(list(commitments), powers)


def lagrange_coefficients(indices: Iterable[int], at: int = 0) -> dict[int, int]:
    """``λ_i`` such that ``f(at) = Σ λ_i·f(i)`` for every polynomial of degree < len(indices)."""
    idx = list(indices)
    if len(set(idx)) != len(idx):
        raise ValueError("share indices must be distinct")
    if any(i <= 0 or i >= R for i in idx):
        raise ValueError("share indices must be in 1..R-1")
    lambdas: dict[int, int] = {}
    for i in idx:
        num, den = 1, 1
        for j in idx:
            if j != i:
                num = num * (at - j) % R
                den = den * (i - j) % R
        lambdas[i] = num * pow(den, -1, R) % R
    return lambdas


def interpolate_at(shares: dict[int, int], at: int = 0) -> int:
    """Recombine scalar shares ``{index: f(index)}`` to ``f(at)``."""
    lambdas = lagrange_coefficients(shares, at)
    return sum(lambdas[i] * s for i, s in shares.items()) % R
