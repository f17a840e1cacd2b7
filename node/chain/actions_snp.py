"""Governance actions for the SEV-SNP policy (``setSnpPolicy``, ``setSnpMinTcb``): owner-only, so only a
proposal (or the owner during bootstrap) may send them; the council may not."""

from __future__ import annotations

from dataclasses import dataclass

from derot.attest.sev_snp import PRODUCTS
from derot.chain import tee_policy
from derot.chain.actions import Action, ActionError, _argtype


def _required_bit(text: str) -> tuple[str, bool]:
    name, sep, value = text.partition("=")
    if not sep or value not in ("0", "1"):
        raise ActionError(f"expected NAME=0 or NAME=1, got {text!r}")
    return name.strip().lower(), value == "1"


def _components(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        name, sep, value = part.partition("=")
        try:
            out[name.strip().lower()] = int(value, 0)
        except ValueError:
            raise ActionError(f"expected COMPONENT=SVN, got {part!r}") from None
        if not sep:
            raise ActionError(f"expected COMPONENT=SVN, got {part!r}")
    return out


def _product(text: str) -> str:
    match = [p for p in PRODUCTS if p.lower() == text.strip().lower()]
    if not match:
        raise ActionError(f"unknown SEV-SNP product {text!r}; known: {', '.join(PRODUCTS)}")
    return match[0]


@dataclass(frozen=True)
class SetSnpPolicy(Action):
    name = "set-snp-policy"
    function = "setSnpPolicy"
    help = "SEV-SNP: the highest VMPL accepted and the guest policy bits required (replaces the whole set)"
    max_vmpl: int
    mask: int
    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.max_vmpl <= 3:
            raise ActionError(f"VMPL must be 0..3, got {self.max_vmpl}")
        if self.mask & ~tee_policy.SNP_POLICY_MASK or self.value & ~self.mask:
            raise ActionError(f"guest policy mask {self.mask:#x} / value {self.value:#x} names unknown bits")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--max-vmpl", type=int, default=0, help="highest VMPL accepted (0..3, default 0)")
        parser.add_argument("--require", action="append", default=[], type=_argtype(_required_bit),
                            metavar="BIT=0|1", help="a guest policy bit and its required value, e.g. smt=0 (repeatable)")

    @classmethod
    def from_cli(cls, ns) -> SetSnpPolicy:
        try:
            mask, value = tee_policy.encode_guest_policy(dict(ns.require))
        except tee_policy.PolicyEncodingError as exc:
            raise ActionError(str(exc)) from None
        return cls(ns.max_vmpl, mask, value)

    def summary(self) -> str:
        required = tee_policy.decode_guest_policy(self.mask, self.value)
        bits = ", ".join(f"{n}={int(v)}" for n, v in sorted(required.items())) or "no bits"
        return f"Set the SEV-SNP policy: VMPL at most {self.max_vmpl}, guest policy requires {bits}"


@dataclass(frozen=True)
class SetSnpMinTcb(Action):
    name = "set-snp-min-tcb"
    function = "setSnpMinTcb"
    help = "SEV-SNP: a product's minimum TCB per component (evidence below it is OUT_OF_DATE)"
    product: int
    tcb: int

    def __post_init__(self) -> None:
        if not 0 <= self.product < len(PRODUCTS) or not 0 <= self.tcb < 2**64:
            raise ActionError(f"bad SEV-SNP product {self.product} or TCB {self.tcb}")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("product", type=_argtype(_product), help=" / ".join(PRODUCTS))
        parser.add_argument("components", type=_argtype(_components),
                            help="e.g. bootloader=3,tee=0,snp=8,microcode=115 (Turin also fmc=N); empty = no minimum")

    @classmethod
    def from_cli(cls, ns) -> SetSnpMinTcb:
        try:
            return cls(*tee_policy.encode_min_tcb(ns.product, ns.components))
        except tee_policy.PolicyEncodingError as exc:
            raise ActionError(str(exc)) from None

    def summary(self) -> str:
        product = PRODUCTS[self.product]
        values = [0] * len(PRODUCTS)
        values[self.product] = self.tcb
        components = tee_policy.decode_min_tcb(values).get(product)
        shown = ", ".join(f"{n}={v}" for n, v in components.items()) if components else "none"
        return f"Set the SEV-SNP minimum TCB of {product}: {shown}"
