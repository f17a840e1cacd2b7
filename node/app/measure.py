"""The measurement digest an app owner allows on-chain, computed from the registers a TEE reports.

The digest is :func:`derot.attest.claims.measurement_digest` over the platform's identity registers
(``MRTD, RTMR0..3, MRCONFIGID`` for TDX; ``MEASUREMENT, HOST_DATA`` for SEV-SNP). Registers not given are
zero, as in a TEE launched without them. Values are bytes or hex text (``0x`` optional), e.g. the output
of a reproducible-build tool or of ``dcap-qvl``/``snpguest`` on a known-good report.

    digest = tdx_measurement(mrtd=MRTD, rtmr0=R0, rtmr1=R1, rtmr2=R2, rtmr3=R3)
    digest = snp_measurement(LAUNCH_MEASUREMENT)            # then: derot app allow APP --platform ...
"""

from __future__ import annotations

from derot.attest.claims import measurement_digest
from derot.constants import Platform

TDX_SIZES = {"MRTD": 48, "RTMR0": 48, "RTMR1": 48, "RTMR2": 48, "RTMR3": 48, "MRCONFIGID": 48}
SNP_SIZES = {"MEASUREMENT": 48, "HOST_DATA": 32}

Value = bytes | str | None


def _register(name: str, value: Value, size: int) -> bytes:
    if value is None:
        if name in ("MRTD", "MEASUREMENT"):
            raise ValueError(f"{name} is required: it is the launch measurement")
        return bytes(size)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = bytes.fromhex(text[2:] if text.lower().startswith("0x") else text)
        except ValueError:
            raise ValueError(f"{name} must be hex, got {text[:100]!r}") from None
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise ValueError(f"{name} must be {size} bytes ({2 * size} hex digits)")
    return bytes(value)


def tdx_measurement(mrtd: Value, rtmr0: Value = None, rtmr1: Value = None, rtmr2: Value = None,
                    rtmr3: Value = None, mrconfigid: Value = None) -> bytes:
    """The 32-byte digest of a TDX TD with these registers (48 bytes each; omitted ones are zero)."""
    given = {"MRTD": mrtd, "RTMR0": rtmr0, "RTMR1": rtmr1, "RTMR2": rtmr2, "RTMR3": rtmr3, "MRCONFIGID": mrconfigid}
    return measurement_digest(Platform.TDX, {n: _register(n, given[n], s) for n, s in TDX_SIZES.items()})


def snp_measurement(measurement: Value, host_data: Value = None) -> bytes:
    """The 32-byte digest of an SEV-SNP guest with this launch measurement (48 bytes) and HOST_DATA
    (32 bytes; omitted is zero)."""
    given = {"MEASUREMENT": measurement, "HOST_DATA": host_data}
    return measurement_digest(Platform.SEV_SNP, {n: _register(n, given[n], s) for n, s in SNP_SIZES.items()})
