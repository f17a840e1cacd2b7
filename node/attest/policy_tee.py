"""Policy rules on TEE attributes the measurement digest does not cover (``Claims.tee_attributes``).

Each rule refuses with its own reason code (``policy.PolicyReason``). Governance can waive a named check for
one app, the way ``allowDebug`` works, by listing its waiver name in ``AppRecord.tee_exceptions``;
node membership never gets a waiver. Reserved TD attribute bits are never waivable.

===========================  ==========================  =================
check                        reason                      waiver
===========================  ==========================  =================
TD reserved attribute bits   td_attributes_reserved      (none)
TD SEPT_VE_DISABLE clear     td_sept_ve_enabled          ``sept_ve``
TD MIGRATABLE                td_migratable               ``td_migratable``
TD profiling (bits 4-6)      td_profiling                ``td_profiling``
TD SERVTD_EXT                td_servtd_ext               ``service_td``
TD 1.5 MRSERVICETD non-zero  td_mr_service_td            ``service_td``
SEAMATTRIBUTES non-zero      seam_attributes_set         ``seam_attributes``
SNP VMPL above the floor     snp_vmpl_not_allowed        ``vmpl``
SNP guest policy bit         snp_guest_policy            ``snp_policy:<bit>``
GPU block differs from RIM   gpu_rim_mismatch            ``gpu_rim``
GPU RIM not found            gpu_rim_unavailable         ``gpu_rim``
===========================  ==========================  =================

Per app, ``AppRecord.gpu_required`` refuses evidence without an attested GPU (``gpu_required``) and a non-zero
``AppRecord.gpu_models`` (``GpuModel`` bits) refuses a GPU of another or unknown model (``gpu_model_not_allowed``).
Neither is a waiver: the app owner sets them (``setAppGpuPolicy``), and they never apply to node membership.

The RIM rules apply only when the verifier compared RIMs (``TrustConfig.rims`` set).

The SNP VMPL floor (``GovernanceSnapshot.snp_max_vmpl``, default 0), the required guest policy bits
(``snp_guest_policy``, default ``{"migrate_ma": False}``) and the minimum TCB per product and component
(``snp_min_tcb``; see :func:`effective_tcb_status`) are governance inputs.
"""

from __future__ import annotations

from derot.attest.claims import Claims
from derot.attest.gpu_model import model_bits
from derot.attest.policy import PolicyReason, _all, refuse
from derot.constants import GPU_MODEL_UNRECOGNISED, GpuModel, Platform, TcbStatus

SNP_TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")


def _waived(snapshot, request, name: str) -> bool:
    if request.purpose != "app":
        return False
    app = snapshot.apps.get(request.app_id)
    return app is not None and name in getattr(app, "tee_exceptions", frozenset())


class TdAttributesAllowed:
    """TD attributes, MRSERVICETD and SEAMATTRIBUTES (table in the module docstring)."""

    name = "td_attributes"

    def check(self, claims, snapshot, request):
        for c in _all(claims):
            if c.platform != Platform.TDX or not c.tee_attributes:
                continue
            verdict = self._check_one(c.tee_attributes, snapshot, request)
            if verdict is not None:
                return verdict
        return None

    def _check_one(self, facts, snapshot, request):
        attrs = facts["td_attributes"]
        if int(attrs["reserved"], 16):
            return refuse(PolicyReason.TD_ATTRIBUTES_RESERVED, f"reserved TD attribute bits {attrs['reserved']} are set")
        checks = (
            (not attrs["sept_ve_disable"], "sept_ve", PolicyReason.TD_SEPT_VE_ENABLED,
             "SEPT_VE_DISABLE is clear: the host can inject #VE on pending pages"),
            (attrs["migratable"], "td_migratable", PolicyReason.TD_MIGRATABLE, "the TD is MIGRATABLE"),
            (any(attrs[n] for n in ("hgs_plus_prof", "perf_prof", "pmt_prof")), "td_profiling", PolicyReason.TD_PROFILING,
             "TD profiling (HGS+/PERF/PMT) is enabled"),
            (attrs["servtd_ext"], "service_td", PolicyReason.TD_SERVTD_EXT, "SERVTD_EXT is enabled"),
            (not facts["mr_service_td_zero"], "service_td", PolicyReason.TD_MR_SERVICE_TD,
             f"the TD is bound to service TD {str(facts['mr_service_td'])[:32]}..."),
            (int(facts["seam_attributes"], 16) != 0, "seam_attributes", PolicyReason.SEAM_ATTRIBUTES_SET,
             f"SEAMATTRIBUTES {facts['seam_attributes']} are not zero"),
        )
        for failed, waiver, reason, detail in checks:
            if failed and not _waived(snapshot, request, waiver):
                return refuse(reason, detail)
        return None


class SnpVmplAllowed:
    """The report comes from a VMPL at or below the governance floor (default 0)."""

    name = "snp_vmpl"

    def check(self, claims, snapshot, request):
        floor = getattr(snapshot, "snp_max_vmpl", 0)
        for c in _all(claims):
            if c.platform != Platform.SEV_SNP or "vmpl" not in c.tee_attributes:
                continue
            vmpl = c.tee_attributes["vmpl"]
            if vmpl > floor and not _waived(snapshot, request, "vmpl"):
                return refuse(PolicyReason.SNP_VMPL_NOT_ALLOWED, f"the report comes from VMPL {vmpl}; the floor is VMPL {floor}")
        return None


class SnpGuestPolicyAllowed:
    """Each guest policy bit governance names has the value it requires."""

    name = "snp_guest_policy"

    def check(self, claims, snapshot, request):
        required = getattr(snapshot, "snp_guest_policy", {"migrate_ma": False})
        for c in _all(claims):
            if c.platform != Platform.SEV_SNP or "guest_policy" not in c.tee_attributes:
                continue
            bits = c.tee_attributes["guest_policy"]
            for name, want in sorted(required.items()):
                if name not in bits:
                    return refuse(PolicyReason.SNP_GUEST_POLICY, f"governance requires unknown guest policy bit {name!r}")
                if bool(bits[name]) != bool(want) and not _waived(snapshot, request, f"snp_policy:{name}"):
                    return refuse(PolicyReason.SNP_GUEST_POLICY,
                                  f"guest policy {name.upper()} is {'set' if bits[name] else 'clear'}; "
                                  f"governance requires it {'set' if want else 'clear'}")
        return None


class GpuRimMatches:
    """Every GPU measurement block a driver or VBIOS RIM makes active equals a golden value."""

    name = "gpu_rim"

    def check(self, claims, snapshot, request):
        for c in _all(claims):
            rim = c.tee_attributes.get("rim") if c.platform == Platform.NVIDIA_GPU else None
            if rim is None or rim["ok"] or _waived(snapshot, request, "gpu_rim"):
                continue
            if rim["mismatches"]:
                names = sorted(rim["mismatches"], key=lambda n: int(n[n.index("[") + 1 : -1]))
                return refuse(PolicyReason.GPU_RIM_MISMATCH, f"{len(names)} GPU measurements differ from the RIMs: "
                              + "; ".join(f"{n} {rim['mismatches'][n]}" for n in names[:4]))
            return refuse(PolicyReason.GPU_RIM_UNAVAILABLE, "; ".join(rim["unavailable"]))
        return None


def gpu_model_of(claims: Claims) -> GpuModel | None:
    """The model of verified GPU claims (the same bits a certificate's ``gpuModels`` carries,
    :func:`derot.attest.gpu_model.model_bits`); None when the verifier could not tell."""
    bits = model_bits(claims)
    return None if bits == GPU_MODEL_UNRECOGNISED else GpuModel(bits)


class GpuPolicyMet:
    """The app's GPU policy: a GPU is attested when required, and every GPU is of an allowed model."""

    name = "gpu_policy"

    def check(self, claims, snapshot, request):
        app = snapshot.apps.get(request.app_id) if request.purpose == "app" else None
        if app is None:
            return None
        gpus = [c for c in _all(claims) if c.platform == Platform.NVIDIA_GPU]
        if app.gpu_required and not gpus:
            return refuse(PolicyReason.GPU_REQUIRED, "the app requires an attested GPU; the evidence has none")
        allowed = GpuModel(app.gpu_models & sum(GpuModel))
        if not allowed:
            return None
        for gpu in gpus:
            model = gpu_model_of(gpu)
            if model is None or not model & allowed:
                shown = model.name if model is not None else "an unknown model"
                return refuse(PolicyReason.GPU_MODEL_NOT_ALLOWED,
                              f"the GPU is {shown}; the app allows {'/'.join(m.name for m in GpuModel if m & allowed)}")
        return None


def snp_tcb_shortfall(claims: Claims, snapshot) -> str | None:
    """Which SEV-SNP TCB component is below governance's minimum for the product (``None`` if none)."""
    minimums = getattr(snapshot, "snp_min_tcb", {}).get(claims.tee_attributes.get("product"))
    tcb = claims.tee_attributes.get("tcb")
    if not minimums or not tcb:
        return None
    for name in SNP_TCB_COMPONENTS:
        want = minimums.get(name)
        if want is None:
            continue
        have = tcb.get(name)
        if have is None or have < want:
            return f"{name} {have} < minimum {want} for {claims.tee_attributes['product']}"
    return None


def effective_tcb_status(claims: Claims, snapshot) -> TcbStatus:
    """The claims' TCB status with governance's SEV-SNP minimum TCB applied: OUT_OF_DATE below it.
    Certificates should carry this status."""
    if claims.platform == Platform.SEV_SNP and snp_tcb_shortfall(claims, snapshot) is not None:
        return min(claims.tcb_status, TcbStatus.OUT_OF_DATE)
    return claims.tcb_status
