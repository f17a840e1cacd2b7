"""Typed governance actions: what a proposal (or the SecurityCouncil) asks DerotRegistry to do.

Each action is a frozen dataclass that knows its registry function, encodes itself to calldata, decodes
back from calldata (so ``derot gov show`` prints what a proposal really does), and has a one-line human
summary. ``council_allowed`` marks the restrictive actions the SecurityCouncil may send directly; the
contract enforces the same rule (the council can never allow or add anything).

``parse_action(["revoke-fmspc", "00906ed50000"])`` builds an action from CLI words; ``ACTIONS`` lists them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

from eth_utils import to_checksum_address

from derot.chain.types import RevocationKind
from derot.constants import Platform, TcbStatus, spelled
from derot.errors import DerotError


class ActionError(DerotError, ValueError):
    """A CLI action that cannot be parsed, or calldata that is not a known registry action."""

    reason = "invalid_action"


# ------------------------------------------------------------------------------------------------
# value parsing and display


def parse_platform(text: str) -> int:
    name = text.strip().upper().replace("-", "_")
    if name in Platform.__members__:
        return int(Platform[name])
    if name in ("SNP", "SEV"):
        return int(Platform.SEV_SNP)
    if name in ("GPU", "NVIDIA", "H100"):
        return int(Platform.NVIDIA_GPU)
    try:
        value = int(text, 0)
    except ValueError:
        raise ActionError(f"unknown platform {text!r} (tdx, sgx, sev-snp, nvidia-gpu or a number)") from None
    if not 0 <= value <= 255:
        raise ActionError(f"platform {value} is not a uint8")
    return value


def parse_tcb(text: str) -> int:
    name = text.strip().upper().replace("-", "_")
    if name in TcbStatus.__members__:
        return int(TcbStatus[name])
    try:
        value = int(text, 0)
    except ValueError:
        names = ", ".join(m.lower().replace("_", "-") for m in TcbStatus.__members__)
        raise ActionError(f"unknown TCB status {text!r} ({names} or a number)") from None
    if not 0 <= value <= 255:
        raise ActionError(f"TCB status {value} is not a uint8")
    return value


def parse_hex(text: str, *, size: int | None = None, what: str = "value") -> bytes:
    try:
        data = bytes.fromhex(text.strip().removeprefix("0x").removeprefix("0X"))
    except ValueError:
        raise ActionError(f"{what} is not hex: {text!r}") from None
    if size is not None and len(data) != size:
        raise ActionError(f"{what} must be {size} bytes, got {len(data)}")
    return data


def parse_address(text: str) -> str:
    try:
        return to_checksum_address(text)
    except (ValueError, TypeError):
        raise ActionError(f"not an Ethereum address: {text!r}") from None


def platform_name(value: int) -> str:
    return spelled(Platform, value)


def tcb_name(value: int) -> str:
    return spelled(TcbStatus, value)


def _argtype(parse, **kwargs):
    """An argparse ``type`` that reports ActionError messages as they are."""

    def convert(text: str):
        try:
            return parse(text, **kwargs)
        except ActionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


# ------------------------------------------------------------------------------------------------
# actions


@dataclass(frozen=True)
class Action:
    """Base class. Subclasses set ``name`` (CLI), ``function`` (registry) and ``council_allowed``."""

    name: ClassVar[str]
    function: ClassVar[str]
    council_allowed: ClassVar[bool] = False
    help: ClassVar[str] = ""

    def args(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))

    def encode(self, registry) -> tuple[str, bytes]:
        """(target address, calldata) for ``registry`` (a derot.chain.registry.Registry)."""
        data = registry.contract.encode_abi(self.function, args=list(self.args()))
        return registry.address, bytes.fromhex(data.removeprefix("0x"))

    def summary(self) -> str:
        raise NotImplementedError

    @classmethod
    def from_call(cls, params: dict) -> Action:
        return cls(*params.values())

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def from_cli(cls, ns: argparse.Namespace) -> Action:
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class _OperatorAction(Action):
    operator: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "operator", parse_address(self.operator))

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("operator", help="node operator address")


@dataclass(frozen=True)
class AddNode(_OperatorAction):
    name = "add-node"
    function = "approveNode"
    help = "approve a registered node so it can join a committee"

    def summary(self) -> str:
        return f"Approve node {self.operator} for committee membership"


@dataclass(frozen=True)
class RemoveNode(_OperatorAction):
    name = "remove-node"
    function = "removeNode"
    help = "remove a node (then reshare without it)"

    def summary(self) -> str:
        return f"Remove node {self.operator}"


@dataclass(frozen=True)
class SuspendNode(_OperatorAction):
    name = "suspend-node"
    function = "suspendNode"
    council_allowed = True
    help = "suspend a node at once"

    def summary(self) -> str:
        return f"Suspend node {self.operator}"


@dataclass(frozen=True)
class _CommitteeAction(Action):
    members: tuple[str, ...]
    threshold: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(parse_address(m) for m in self.members))
        n, t = len(self.members), int(self.threshold)
        if not (n >= 1 and n // 2 + 1 <= t <= n):
            raise ActionError(f"threshold {t} is outside [floor(n/2)+1, n] = [{n // 2 + 1}, {n}] for {n} members")
        object.__setattr__(self, "threshold", t)

    def args(self) -> tuple:
        return (list(self.members), self.threshold)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("-t", "--threshold", type=int, required=True)
        parser.add_argument("members", nargs="+", help="ordered member addresses (member i has index i+1)")

    def _committee(self) -> str:
        return f"{len(self.members)} members, threshold {self.threshold}: " + ", ".join(self.members)


@dataclass(frozen=True)
class StartDkg(_CommitteeAction):
    name = "start-dkg"
    function = "startDkg"
    help = "run a fresh DKG (NEW group keys: retires every certificate)"

    def summary(self) -> str:
        return f"Start a fresh DKG with NEW group keys ({self._committee()})"


@dataclass(frozen=True)
class StartReshare(_CommitteeAction):
    name = "start-reshare"
    function = "startReshare"
    help = "reshare the current keys to a new member list / threshold"

    def summary(self) -> str:
        return f"Reshare the group keys, unchanged, to {self._committee()}"


@dataclass(frozen=True)
class AbortEpoch(Action):
    name = "abort-epoch"
    function = "abortPendingEpoch"
    council_allowed = True
    help = "abandon the pending DKG/reshare"

    def summary(self) -> str:
        return "Abort the pending DKG/reshare"


@dataclass(frozen=True)
class _PlatformAction(Action):
    platform: int

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("platform", type=_argtype(parse_platform), help="tdx, sgx, sev-snp, nvidia-gpu")


@dataclass(frozen=True)
class AllowPlatform(_PlatformAction):
    name = "allow-platform"
    function = "enablePlatform"
    help = "enable a TEE platform"

    def summary(self) -> str:
        return f"Enable platform {platform_name(self.platform)}"


@dataclass(frozen=True)
class DisablePlatform(_PlatformAction):
    name = "disable-platform"
    function = "disablePlatform"
    council_allowed = True
    help = "disable a TEE platform"

    def summary(self) -> str:
        return f"Disable platform {platform_name(self.platform)}"


@dataclass(frozen=True)
class SetTcbFloor(Action):
    name = "set-tcb-floor"
    function = "setTcbFloor"
    council_allowed = True  # the contract lets the council only raise it
    help = "set a platform's minimum TCB status (the council may only raise it)"
    platform: int
    floor: int

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("platform", type=_argtype(parse_platform))
        parser.add_argument("floor", type=_argtype(parse_tcb), help="e.g. up-to-date, sw-hardening-needed, out-of-date")

    def summary(self) -> str:
        return f"Set the TCB floor of {platform_name(self.platform)} to {tcb_name(self.floor)}"


#: kind -> (CLI word, label, exact size or None); lengths and forms are checked by RevocationKind.check_length
_KIND_WORDS = {
    RevocationKind.FMSPC: ("fmspc", "FMSPC", 6),
    RevocationKind.CHIP_ID: ("chip", "SEV-SNP chip id", 64),
    RevocationKind.GPU_FWID: ("gpu-fwid", "GPU FWID", None),
    RevocationKind.MEASUREMENT: ("measurement", "measurement", 32),
    RevocationKind.CERT_SERIAL: ("cert", "certificate serial", 32),
    RevocationKind.EVIDENCE_HASH: ("evidence", "evidence hash", 32),
    RevocationKind.PPID: ("ppid", "Intel PPID", 16),
    RevocationKind.PCK_CERT: ("pck", "Intel PCK certificate id", 32),
    RevocationKind.GPU_DEVICE: ("gpu-device", "NVIDIA GPU device serial or UEID", None),
}


def revoke_word(kind: RevocationKind) -> str:
    """The CLI word of a revocation kind (``revoke-<word>`` is its action)."""
    return _KIND_WORDS[RevocationKind(kind)][0]


def parse_kind(text: str) -> RevocationKind:
    """fmspc, chip, gpu-fwid, measurement, cert, evidence, ppid, pck or gpu-device (or the enum name)."""
    for kind, (word, _label, _size) in _KIND_WORDS.items():
        if text.lower() in (word, kind.name.lower(), kind.name.lower().replace("_", "-")):
            return kind
    raise ActionError(f"unknown revocation kind {text!r} ({', '.join(w for w, _, _ in _KIND_WORDS.values())})")


@dataclass(frozen=True)
class Revoke(Action):
    name = "revoke"
    function = "revoke"
    council_allowed = True
    help = ("revoke an identifier at once: KIND (fmspc, chip, gpu-fwid, measurement, cert, evidence, ppid, pck, "
            "gpu-device) HEX")
    kind: RevocationKind
    ident: bytes

    def __post_init__(self) -> None:
        kind = RevocationKind(self.kind)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "ident", bytes(self.ident))
        try:
            kind.check_length(self.ident)
        except ValueError as exc:
            raise ActionError(str(exc)) from None

    def args(self) -> tuple:
        return (int(self.kind), self.ident)

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("kind", type=_argtype(parse_kind))
        parser.add_argument("ident", type=_argtype(parse_hex, what="identifier"), help="hex")

    def summary(self) -> str:
        return f"Revoke {_KIND_WORDS[self.kind][1]} {self.ident.hex()}"


@dataclass(frozen=True)
class Unrevoke(Revoke):
    name = "unrevoke"
    function = "unrevoke"
    council_allowed = False
    help = "lift a revocation: KIND HEX"

    def summary(self) -> str:
        return f"Lift the revocation of {_KIND_WORDS[self.kind][1]} {self.ident.hex()}"


def _revoke_shortcut(kind: RevocationKind) -> type[Revoke]:
    word, label, size = _KIND_WORDS[kind]

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("ident", type=_argtype(parse_hex, size=size, what=label), help=f"{label}, hex")

    @classmethod
    def from_cli(cls, ns) -> Revoke:
        return Revoke(kind, ns.ident)

    return type(
        f"Revoke{kind.name.title().replace('_', '')}",
        (Revoke,),
        {
            "name": f"revoke-{word}",
            "help": f"revoke a {label} at once",
            "add_arguments": add_arguments,
            "from_cli": from_cli,
            "__module__": __name__,
        },
    )


@dataclass(frozen=True)
class _MeasurementAction(Action):
    platform: int
    digest: bytes

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("platform", type=_argtype(parse_platform))
        parser.add_argument("digest", type=_argtype(parse_hex, size=32, what="measurement digest"))


@dataclass(frozen=True)
class AllowNodeMeasurement(_MeasurementAction):
    name = "allow-node-measurement"
    function = "allowNodeMeasurement"
    help = "allow a node TEE measurement for committee membership"

    def summary(self) -> str:
        return f"Allow node measurement {self.digest.hex()} on {platform_name(self.platform)}"


@dataclass(frozen=True)
class DisallowNodeMeasurement(_MeasurementAction):
    name = "disallow-node-measurement"
    function = "disallowNodeMeasurement"
    council_allowed = True
    help = "stop allowing a node TEE measurement"

    def summary(self) -> str:
        return f"Disallow node measurement {self.digest.hex()} on {platform_name(self.platform)}"


@dataclass(frozen=True)
class _AppAction(Action):
    app_id: bytes

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("app_id", type=_argtype(parse_hex, size=32, what="appId"))


@dataclass(frozen=True)
class FreezeApp(_AppAction):
    name = "freeze-app"
    function = "freezeApp"
    council_allowed = True
    help = "freeze an app: no keys, no certificates, its certificates fail"

    def summary(self) -> str:
        return f"Freeze app {self.app_id.hex()}"


@dataclass(frozen=True)
class UnfreezeApp(_AppAction):
    name = "unfreeze-app"
    function = "unfreezeApp"
    help = "unfreeze an app"

    def summary(self) -> str:
        return f"Unfreeze app {self.app_id.hex()}"


@dataclass(frozen=True)
class SetCouncil(Action):
    name = "set-council"
    function = "setSecurityCouncil"
    help = "set the SecurityCouncil address (0x0 disables it)"
    council: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "council", parse_address(self.council))

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("council", help="address")

    def summary(self) -> str:
        if int(self.council, 16) == 0:
            return "Disable the SecurityCouncil"
        return f"Set the SecurityCouncil to {self.council}"


@dataclass(frozen=True)
class SetEpochTimeout(Action):
    name = "set-epoch-timeout"
    function = "setEpochTimeout"
    help = "blocks a pending DKG/reshare may take before anyone may expire it"
    blocks: int

    def __post_init__(self) -> None:
        if not 1 <= int(self.blocks) < 2**64:
            raise ActionError(f"epoch timeout must be 1..2^64-1 blocks, got {self.blocks}")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("blocks", type=int, help="blocks after an epoch starts")

    def summary(self) -> str:
        return f"Let anyone expire a pending epoch {self.blocks} blocks after it started"


from derot.chain.actions_snp import SetSnpMinTcb, SetSnpPolicy  # noqa: E402 (they subclass Action)

#: CLI name → action class, in help order.
ACTIONS: dict[str, type[Action]] = {
    cls.name: cls
    for cls in [
        AddNode,
        RemoveNode,
        SuspendNode,
        StartDkg,
        StartReshare,
        AbortEpoch,
        AllowPlatform,
        DisablePlatform,
        SetTcbFloor,
        *[_revoke_shortcut(k) for k in _KIND_WORDS],
        Revoke,
        Unrevoke,
        AllowNodeMeasurement,
        DisallowNodeMeasurement,
        FreezeApp,
        UnfreezeApp,
        SetCouncil,
        SetEpochTimeout,
        SetSnpPolicy,
        SetSnpMinTcb,
    ]
}
#: Registry function → action class used to decode calldata.
_BY_FUNCTION: dict[str, type[Action]] = {}
for _cls in ACTIONS.values():
    _BY_FUNCTION.setdefault(_cls.function, _cls)
_BY_FUNCTION["revoke"] = Revoke

#: Pseudo-action resolved against the current epoch: reshare to the same members with a new threshold.
SET_THRESHOLD = "set-threshold"


def action_parser(name: str) -> argparse.ArgumentParser:
    if name == SET_THRESHOLD:
        parser = argparse.ArgumentParser(prog=name, description="reshare to the same members with threshold T",
                                         exit_on_error=False, add_help=False)
        parser.add_argument("threshold", type=int)
        return parser
    cls = ACTIONS.get(name)
    if cls is None:
        raise ActionError(f"unknown action {name!r}; known: {', '.join([*ACTIONS, SET_THRESHOLD])}")
    parser = argparse.ArgumentParser(prog=name, description=cls.help, exit_on_error=False, add_help=False)
    cls.add_arguments(parser)
    return parser


def parse_action(words: Sequence[str], *, current_members: Sequence[str] | None = None) -> Action:
    """Build one action from CLI words (``["revoke-fmspc", "00906ed50000"]``). ``set-threshold`` needs the
    current epoch's members."""
    if not words:
        raise ActionError("empty action")
    name, rest = words[0], list(words[1:])
    parser = action_parser(name)
    try:
        ns = parser.parse_args(rest)
    except (argparse.ArgumentError, SystemExit) as exc:
        usage = parser.format_usage().replace("usage: ", "").strip()
        raise ActionError(f"{name}: {exc} (usage: {usage})") from None
    if name == SET_THRESHOLD:
        if not current_members:
            raise ActionError("set-threshold needs an active epoch to take the members from")
        return StartReshare(tuple(current_members), ns.threshold)
    return ACTIONS[name].from_cli(ns)


def split_actions(words: Sequence[str], separator: str = "+") -> list[list[str]]:
    """Split ``a x + b y`` into ``[[a, x], [b, y]]``."""
    groups: list[list[str]] = [[]]
    for word in words:
        if word == separator:
            groups.append([])
        else:
            groups[-1].append(word)
    return [g for g in groups if g]


def decode_action(registry, target: str, data: bytes) -> Action:
    """The typed action behind (target, calldata); raises ActionError for anything else."""
    if target.lower() != registry.address.lower():
        raise ActionError(f"call to {target}, not to the registry")
    try:
        fn, params = registry.contract.decode_function_input(data)
    except ValueError as exc:
        raise ActionError(f"calldata is not a registry function: {exc}") from None
    cls = _BY_FUNCTION.get(fn.fn_name)
    if cls is None:
        raise ActionError(f"registry function {fn.fn_name} is not a governance action")
    if issubclass(cls, _CommitteeAction):
        return cls(tuple(params["members"]), params["threshold"])
    if issubclass(cls, Revoke):
        return cls(RevocationKind(params["kind"]), bytes(params["id"]))
    values = [bytes(v) if isinstance(v, (bytes, bytearray)) else v for v in params.values()]
    return cls(*values)
