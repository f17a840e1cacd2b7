"""Named TD and enclave attributes: what :mod:`derot.attest.policy_tee` decides on, and the structured
signal that picks derot's own Intel verifier.

TD ATTRIBUTES (u64, little-endian in the TD report; bit numbers as in Intel's TDX module ABI and the
Linux kernel's ``asm/shared/tdx.h``)::

    0 DEBUG | 4 HGS_PLUS_PROF | 5 PERF_PROF | 6 PMT_PROF | 16 ICSSD | 17 SERVTD_EXT | 27 LASS
    28 SEPT_VE_DISABLE | 29 MIGRATABLE | 30 PKS | 31 KL | 62 TPA | 63 PERFMON

Every other bit is reserved (must be zero). dcap-qvl 0.7.0 refuses, after verifying everything else and
without returning any fact: DEBUG, the three profiling bits, SERVTD_EXT, MIGRATABLE, a clear
SEPT_VE_DISABLE, reserved bits (it tolerates bits 18-22; derot calls them reserved) and, in a TD 1.5
report, a non-zero MRSERVICETD; for SGX, a debug enclave. :func:`dcap_policy_objections` computes that
set from the parsed (not yet verified) quote body: when it is non-empty, dcap-qvl's answer can only be
a policy refusal, so :mod:`derot.attest.intel` verifies with :mod:`derot.attest.intel_dcap` instead and
lets policy decide. The choice never depends on dcap-qvl's error text, which echoes collateral (attacker
text).
"""

from __future__ import annotations

from derot.attest.intel_quote import SgxReportBody, TdReportBody

TD_ATTRIBUTE_BITS: dict[str, int] = {
    "debug": 0, "hgs_plus_prof": 4, "perf_prof": 5, "pmt_prof": 6, "icssd": 16, "servtd_ext": 17, "lass": 27,
    "sept_ve_disable": 28, "migratable": 29, "pks": 30, "kl": 31, "tpa": 62, "perfmon": 63,
}
TD_KNOWN_MASK = sum(1 << b for b in TD_ATTRIBUTE_BITS.values())
TD_RESERVED_MASK = ((1 << 64) - 1) & ~TD_KNOWN_MASK
PROFILING = ("hgs_plus_prof", "perf_prof", "pmt_prof")


def td_attribute_flags(td_attributes: bytes) -> dict[str, object]:
    """Each named bit as a bool, plus ``reserved`` (the reserved bits that are set, as hex)."""
    value = int.from_bytes(td_attributes, "little")
    flags: dict[str, object] = {name: bool(value >> bit & 1) for name, bit in TD_ATTRIBUTE_BITS.items()}
    flags["reserved"] = f"{value & TD_RESERVED_MASK:016x}"
    return flags


def tdx_facts(body: TdReportBody) -> dict[str, object]:
    """The facts the TDX policy rules read (``Claims.tee_attributes``)."""
    return {
        "td_attributes": td_attribute_flags(body.td_attributes),
        "mr_service_td": None if body.mr_service_td is None else body.mr_service_td.hex(),
        "mr_service_td_zero": body.mr_service_td is None or not any(body.mr_service_td),
        "seam_attributes": body.seam_attributes.hex(),
    }


def dcap_policy_objections(body: SgxReportBody | TdReportBody) -> tuple[str, ...]:
    """The names of the attribute facts dcap-qvl 0.7.0 refuses by its own policy (module docstring)."""
    if isinstance(body, SgxReportBody):
        return ("debug",) if body.debug else ()
    flags = td_attribute_flags(body.td_attributes)
    out = [n for n in ("debug", *PROFILING, "servtd_ext", "migratable") if flags[n]]
    if not flags["sept_ve_disable"]:
        out.append("sept_ve_disable_clear")
    if int(flags["reserved"], 16):
        out.append("reserved")
    if body.mr_service_td is not None and any(body.mr_service_td):
        out.append("mr_service_td")
    return tuple(out)
