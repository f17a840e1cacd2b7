"""The measurement helpers compute what devnet evidence and real registers yield, and refuse bad sizes."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest

from derot.app import snp_measurement, tdx_measurement
from derot.app.tee.devnet import DevnetDevice
from derot.attest.devnet import DevnetRoots, devnet_measurement_digest, image_registers
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.constants import Platform


def independent_digest(platform: int, registers: list[tuple[str, bytes]]) -> bytes:
    """The documented encoding, written out again from the docstring of derot.attest.claims."""
    h = hashlib.sha256(b"DEROT-V1-MEASUREMENT" + bytes([platform]))
    for name, value in registers:
        h.update(bytes([len(name)]) + name.encode() + struct.pack(">H", len(value)) + value)
    return h.digest()


def test_tdx_digest_matches_the_documented_encoding():
    regs = {n: os.urandom(48) for n in ("MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3", "MRCONFIGID")}
    got = tdx_measurement(regs["MRTD"].hex(), "0x" + regs["RTMR0"].hex(), regs["RTMR1"], regs["RTMR2"],
                          regs["RTMR3"], regs["MRCONFIGID"])
    assert got == independent_digest(int(Platform.TDX), list(regs.items()))
    # omitted registers are zero; order matters (RTMR1 and RTMR2 swapped gives another digest)
    assert tdx_measurement(regs["MRTD"]) == independent_digest(
        int(Platform.TDX), [("MRTD", regs["MRTD"])] + [(n, bytes(48)) for n in ("RTMR0", "RTMR1", "RTMR2", "RTMR3",
                                                                               "MRCONFIGID")])
    assert tdx_measurement(regs["MRTD"], rtmr1=regs["RTMR2"], rtmr2=regs["RTMR1"]) != \
        tdx_measurement(regs["MRTD"], rtmr1=regs["RTMR1"], rtmr2=regs["RTMR2"])


def test_snp_digest_matches_the_documented_encoding():
    launch, host = os.urandom(48), os.urandom(32)
    assert snp_measurement(launch, host) == independent_digest(
        int(Platform.SEV_SNP), [("MEASUREMENT", launch), ("HOST_DATA", host)])
    assert snp_measurement(launch) == snp_measurement(launch, bytes(32))


@pytest.mark.parametrize("platform", [Platform.TDX, Platform.SEV_SNP])
def test_the_digest_equals_what_verified_devnet_evidence_reports(tmp_path, platform):
    """An app owner computes the digest from the registers; the verifier derives the same from evidence."""
    roots = DevnetRoots.generate(tmp_path / "roots")
    registers = image_registers(platform, "measure-test v1")
    device = DevnetDevice(roots, platform, registers)
    claims = verify_evidence(device.evidence(os.urandom(64)), TrustConfig.devnet(roots))
    if platform == Platform.TDX:
        mine = tdx_measurement(registers["MRTD"])
    else:
        mine = snp_measurement(registers["MEASUREMENT"])
    assert mine == claims.measurement_digest == devnet_measurement_digest(platform, registers)


@pytest.mark.parametrize("call", [
    lambda: tdx_measurement(bytes(47)),
    lambda: tdx_measurement("zz" * 48),
    lambda: tdx_measurement(bytes(48), rtmr3=bytes(49)),
    lambda: snp_measurement(bytes(48), host_data=bytes(48)),
    lambda: snp_measurement(None and b""),
])
def test_wrong_sizes_and_bad_hex_are_refused_by_name(call):
    with pytest.raises(ValueError):
        call()
