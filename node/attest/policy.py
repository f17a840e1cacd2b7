"""The policy engine: verified :class:`Claims` + a :class:`GovernanceSnapshot` -> allow, or refuse with a reason.

Policies compose from small rule objects, each testable alone. A rule returns ``None`` (no objection)
or a refusing :class:`PolicyVerdict`; the engine returns the first refusal, in rule order, else ALLOW.
Rules that look at the platform (enabled, TCB floor, measurement, debug, revocation, validity window)
apply to the CPU claims and to every paired GPU's claims. The replay rule runs last, so a refused
request does not use up its nonce.

Reason codes are stable strings (``PolicyReason``); nodes return them to clients and log them.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from derot.attest.snapshot import AppRecord, DelegateOracle, GovernanceSnapshot
from derot.attest.binding import RequestBinding
from derot.attest.claims import Claims
from derot.attest.identity import identities
from derot.attest.replay import ReplayStore
from derot.constants import RevocationKind, TcbStatus
from derot.limits import LIMITS


class PolicyReason(str, enum.Enum):
    ALLOWED = "allowed"
    PLATFORM_DISABLED = "platform_disabled"
    TCB_BELOW_FLOOR = "tcb_below_floor"
    APP_UNKNOWN = "app_unknown"
    APP_FROZEN = "app_frozen"
    MEASUREMENT_NOT_ALLOWED = "measurement_not_allowed"
    DELEGATE_UNAVAILABLE = "delegate_unavailable"
    DEBUG_NOT_ALLOWED = "debug_not_allowed"
    FMSPC_REVOKED = "fmspc_revoked"
    CHIP_REVOKED = "chip_revoked"
    GPU_FWID_REVOKED = "gpu_fwid_revoked"
    MEASUREMENT_REVOKED = "measurement_revoked"
    BINDING_MISSING = "binding_missing"
    REPORT_DATA_MISMATCH = "report_data_mismatch"
    REQUEST_STALE = "request_stale"
    EVIDENCE_OUTSIDE_VALIDITY = "evidence_outside_validity"
    REPLAYED = "replayed"
    TCB_FLOOR_UNKNOWN = "tcb_floor_unknown"
    TD_ATTRIBUTES_RESERVED = "td_attributes_reserved"
    TD_SEPT_VE_ENABLED = "td_sept_ve_enabled"
    TD_MIGRATABLE = "td_migratable"
    TD_PROFILING = "td_profiling"
    TD_SERVTD_EXT = "td_servtd_ext"
    TD_MR_SERVICE_TD = "td_mr_service_td"
    SEAM_ATTRIBUTES_SET = "seam_attributes_set"
    SNP_VMPL_NOT_ALLOWED = "snp_vmpl_not_allowed"
    SNP_GUEST_POLICY = "snp_guest_policy"
    GPU_RIM_MISMATCH = "gpu_rim_mismatch"
    GPU_RIM_UNAVAILABLE = "gpu_rim_unavailable"
    PPID_REVOKED = "ppid_revoked"
    PCK_REVOKED = "pck_revoked"
    GPU_DEVICE_REVOKED = "gpu_device_revoked"
    GPU_REQUIRED = "gpu_required"
    GPU_MODEL_NOT_ALLOWED = "gpu_model_not_allowed"


@dataclass(frozen=True)
class PolicyVerdict:
    allowed: bool
    reason: PolicyReason
    detail: str = ""

    @property
    def code(self) -> str:
        return self.reason.value


ALLOW = PolicyVerdict(True, PolicyReason.ALLOWED)


def refuse(reason: PolicyReason, detail: str) -> PolicyVerdict:
    return PolicyVerdict(False, reason, detail)


@dataclass(frozen=True)
class PolicyRequest:
    """What is being asked. ``purpose`` is ``"app"`` (key/certificate for ``app_id``) or ``"node"``
    (committee membership). Binding: ``binding`` (a :class:`RequestBinding`, freshness and replay
    apply) or ``expected_report_data`` (a caller-chosen challenge)."""

    purpose: str
    now: int
    app_id: bytes | None = None
    binding: RequestBinding | None = None
    expected_report_data: bytes | None = None

    def __post_init__(self) -> None:
        if self.purpose not in ("app", "node"):
            raise ValueError("purpose must be 'app' or 'node'")
        if self.purpose == "app" and (self.app_id is None or len(self.app_id) != 32):
            raise ValueError("an app request needs a 32-byte app_id")


class Rule(Protocol):
    name: str

    def check(self, claims: Claims, snapshot: GovernanceSnapshot, request: PolicyRequest) -> PolicyVerdict | None: ...


def _all(claims: Claims) -> Iterator[Claims]:
    yield claims
    yield from claims.gpus


class PlatformEnabled:
    name = "platform_enabled"

    def check(self, claims, snapshot, request):
        for c in _all(claims):
            if not snapshot.platform_rule(c.platform).enabled:
                return refuse(PolicyReason.PLATFORM_DISABLED, f"{c.platform.name} is not enabled")
        return None


class TcbAtLeastFloor:
    name = "tcb_floor"

    def check(self, claims, snapshot, request):
        from derot.attest.policy_tee import effective_tcb_status, snp_tcb_shortfall

        for c in _all(claims):
            floor = snapshot.platform_rule(c.platform).tcb_floor
            try:
                floor = TcbStatus(floor)
            except ValueError:  # e.g. setTcbFloor(TDX, 8): no status satisfies an unknown floor
                return refuse(PolicyReason.TCB_FLOOR_UNKNOWN, f"{c.platform.name} TCB floor {floor!r} is not a known TCB status")
            status = effective_tcb_status(c, snapshot)
            if status == TcbStatus.UNKNOWN or status < floor:
                why = snp_tcb_shortfall(c, snapshot) if status != c.tcb_status else None
                return refuse(PolicyReason.TCB_BELOW_FLOOR, f"{c.platform.name} TCB {status.name}"
                              + (f" ({why})" if why else "") + f" is below {floor.name}")
        return None


class MeasurementAllowed:
    """The measurement is allow-listed for the app (or its delegate says so), or for node membership."""

    name = "measurement_allowed"

    def __init__(self, delegates: DelegateOracle | None = None):
        self.delegates = delegates

    def check(self, claims, snapshot, request):
        if request.purpose == "node":
            for c in _all(claims):
                if (c.platform, c.measurement_digest) not in snapshot.node_measurements:
                    return refuse(PolicyReason.MEASUREMENT_NOT_ALLOWED,
                                  f"{c.platform.name} measurement {c.measurement_digest.hex()} is not a node measurement")
            return None
        app: AppRecord | None = snapshot.apps.get(request.app_id)
        if app is None:
            return refuse(PolicyReason.APP_UNKNOWN, f"app {request.app_id.hex()} is not registered")
        if app.frozen:
            return refuse(PolicyReason.APP_FROZEN, f"app {request.app_id.hex()} is frozen")
        for c in _all(claims):
            if app.delegate is not None:
                if self.delegates is None:
                    return refuse(PolicyReason.DELEGATE_UNAVAILABLE, f"app delegate {app.delegate} cannot be consulted")
                allowed = self.delegates.is_app_allowed(app, c.platform, c.measurement_digest)
            else:
                allowed = (c.platform, c.measurement_digest) in app.measurements
            if not allowed:
                return refuse(PolicyReason.MEASUREMENT_NOT_ALLOWED,
                              f"{c.platform.name} measurement {c.measurement_digest.hex()} is not allowed for the app")
        return None


class DebugAllowed:
    """Debug TEEs only for apps that allow them; never for node membership."""

    name = "debug"

    def check(self, claims, snapshot, request):
        if not any(c.debug for c in _all(claims)):
            return None
        app = snapshot.apps.get(request.app_id) if request.purpose == "app" else None
        if app is not None and app.allow_debug:
            return None
        return refuse(PolicyReason.DEBUG_NOT_ALLOWED, "the TEE runs in debug mode")


class NotRevoked:
    """No hardware identity (derot.attest.identity) and no measurement of the evidence is revoked."""

    name = "not_revoked"
    REASONS = {
        RevocationKind.FMSPC: PolicyReason.FMSPC_REVOKED, RevocationKind.CHIP_ID: PolicyReason.CHIP_REVOKED,
        RevocationKind.GPU_FWID: PolicyReason.GPU_FWID_REVOKED, RevocationKind.PPID: PolicyReason.PPID_REVOKED,
        RevocationKind.PCK_CERT: PolicyReason.PCK_REVOKED, RevocationKind.GPU_DEVICE: PolicyReason.GPU_DEVICE_REVOKED,
    }

    def check(self, claims, snapshot, request):
        revoked = snapshot.revoked_hardware()
        for mid in identities(claims):
            if mid.ident in revoked[mid.kind]:
                return refuse(self.REASONS[mid.kind], f"{mid.label} {mid.ident.hex()} is revoked")
        for c in _all(claims):
            if c.measurement_digest in snapshot.revoked_measurements:
                return refuse(PolicyReason.MEASUREMENT_REVOKED, f"measurement {c.measurement_digest.hex()} is revoked")
        return None


class ReportDataBinds:
    """report_data equals the request binding (docs/design.md §5) or the caller's challenge."""

    name = "report_data"

    def check(self, claims, snapshot, request):
        if request.binding is not None:
            if request.purpose == "app" and request.binding.app_id != request.app_id:
                return refuse(PolicyReason.REPORT_DATA_MISMATCH, "the binding names a different app")
            expected = request.binding.report_data()
        elif request.expected_report_data is not None:
            expected = request.expected_report_data
        else:
            return refuse(PolicyReason.BINDING_MISSING, "the request carries no binding")
        if claims.report_data != expected:
            return refuse(PolicyReason.REPORT_DATA_MISMATCH, "report_data does not bind this request")
        return None


class RequestFresh:
    """The binding's timestamp lies in [now - max_age, now + max_skew]."""

    name = "fresh"

    def __init__(self, max_age: int = 300, max_skew: int = LIMITS.max_clock_skew):
        self.max_age, self.max_skew = max_age, max_skew

    def check(self, claims, snapshot, request):
        if request.binding is None:
            return None
        ts = request.binding.timestamp
        if not request.now - self.max_age <= ts <= request.now + self.max_skew:
            return refuse(PolicyReason.REQUEST_STALE, f"request timestamp {ts} is outside [now-{self.max_age}, now+{self.max_skew}]")
        return None


class EvidenceWindow:
    """Now lies inside every claim's validity window (collateral, CRLs, certificates)."""

    name = "evidence_window"

    def check(self, claims, snapshot, request):
        for c in _all(claims):
            if not c.not_before <= request.now <= c.not_after:
                return refuse(PolicyReason.EVIDENCE_OUTSIDE_VALIDITY,
                              f"{c.platform.name} evidence valid {c.not_before}..{c.not_after}, now is {request.now}")
        return None


class NotReplayed:
    """Each report_data is accepted once while its request is fresh."""

    name = "replay"

    def __init__(self, store: ReplayStore, max_age: int = 300, max_skew: int = LIMITS.max_clock_skew):
        self.store, self.max_age, self.max_skew = store, max_age, max_skew

    def check(self, claims, snapshot, request):
        if request.binding is None:
            return None
        key = hashlib.sha256(claims.report_data).digest()
        expires = request.binding.timestamp + self.max_age + self.max_skew
        if not self.store.add_if_absent(key, expires, request.now):
            return refuse(PolicyReason.REPLAYED, "this request's evidence was already used")
        return None


class PolicyEngine:
    """Runs rules in order; the first refusal wins."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = tuple(rules)

    @classmethod
    def default(cls, *, replay: ReplayStore | None = None, delegates: DelegateOracle | None = None,
                max_age: int = 300, max_skew: int = LIMITS.max_clock_skew) -> "PolicyEngine":
        from derot.attest import policy_tee

        rules: list[Rule] = [
            PlatformEnabled(), TcbAtLeastFloor(), MeasurementAllowed(delegates), DebugAllowed(), NotRevoked(),
            ReportDataBinds(), RequestFresh(max_age, max_skew), EvidenceWindow(),
        ]
        rules[4:4] = [policy_tee.TdAttributesAllowed(), policy_tee.SnpVmplAllowed(), policy_tee.SnpGuestPolicyAllowed(),
                        policy_tee.GpuRimMatches(), policy_tee.GpuPolicyMet()]
        if replay is not None:
            rules.append(NotReplayed(replay, max_age, max_skew))
        return cls(rules)

    def decide(self, claims: Claims, snapshot: GovernanceSnapshot, request: PolicyRequest) -> PolicyVerdict:
        for rule in self.rules:
            verdict = rule.check(claims, snapshot, request)
            if verdict is not None and not verdict.allowed:
                return verdict
        return ALLOW
