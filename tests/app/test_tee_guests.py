"""The TEE devices on real guest shapes (issue 18): SNP at VMPL >= 1, hostile or cut certificate tables,
a disabled VMPCK, host throttling, TDX EBUSY, configfs permissions. The kernel, firmware and host are
played by the models in tee_kernel.py; reports are real-format devnet reports checked by the verifier."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from derot.app.tee import (
    AttestationDisabled,
    FirmwareError,
    PlatformMismatch,
    RequestGate,
    SnpConfigfsDevice,
    SnpDevice,
    TdxConfigfsDevice,
    TeeConfigError,
    TeeIOError,
    detect_device,
    device_status,
)
from derot.app.tee.configfs import BUSY_BUDGET, ConfigfsTsm
from derot.attest import sev_snp
from derot.attest.devnet import DevnetRoots, DevnetTee
from derot.attest.intel_quote import parse_quote
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.constants import Platform

from .tee_kernel import CRL_GUID, VCEK_GUID, FakeClock, FakeTsm, SnpGuest, TdxGuest, cert_table

ROOT = "/fake/config/tsm/report"


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> DevnetRoots:
    return DevnetRoots.generate(tmp_path_factory.mktemp("roots"))


@pytest.fixture(scope="module")
def snp_tee(roots) -> DevnetTee:
    return DevnetTee(roots, Platform.SEV_SNP, {"MEASUREMENT": b"\x07" * 48})


@pytest.fixture(scope="module")
def tdx_tee(roots) -> DevnetTee:
    return DevnetTee(roots, Platform.TDX)


@pytest.fixture
def device_node(tmp_path) -> Path:
    path = tmp_path / "sev-guest"
    path.write_bytes(b"")
    return path


def _vmpl_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vmpck_id"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the models themselves


def test_model_configfs_rules(snp_tee):
    """The configfs model refuses what the kernel refuses, so the device tests below mean something."""
    guest = SnpGuest(snp_tee, vmpl=2)
    tsm = FakeTsm(ROOT, "sev_guest", guest, privlevel_floor=2)
    tsm.mkdir(f"{ROOT}/a")
    with pytest.raises(OSError) as info:  # no inblob yet
        tsm.read(f"{ROOT}/a/outblob", 1 << 20)
    assert info.value.errno == errno.EINVAL
    tsm.write(f"{ROOT}/a/inblob", bytes(63))
    assert tsm.read(f"{ROOT}/a/generation", 64) == b"1\n"  # bumped by the inblob write
    with pytest.raises(OSError) as info:  # 63 bytes: sev_report_new refuses
        tsm.read(f"{ROOT}/a/outblob", 1 << 20)
    assert info.value.errno == errno.EINVAL
    tsm.write(f"{ROOT}/a/inblob", bytes(64))
    with pytest.raises(OSError) as info:  # privlevel unset = 0 < the guest's VMPL 2: firmware INVALID_PARAM
        tsm.read(f"{ROOT}/a/outblob", 1 << 20)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        tsm.write(f"{ROOT}/a/privlevel", b"1\n")
    assert info.value.errno == errno.EINVAL and tsm.read(f"{ROOT}/a/generation", 64) == b"2\n"
    tsm.write(f"{ROOT}/a/privlevel", b"2\n")
    assert sev_snp.parse_report(tsm.read(f"{ROOT}/a/outblob", 1 << 20)).vmpl == 2
    # the inblob length rule on its own (privlevel already at the floor): only 64 bytes make a report
    for size in (0, 1, 32, 63):
        tsm.write(f"{ROOT}/a/inblob", bytes(size))
        with pytest.raises(OSError) as info:
            tsm.read(f"{ROOT}/a/outblob", 1 << 20)
        assert info.value.errno == errno.EINVAL, size
    with pytest.raises(OSError) as info:  # TSM_REPORT_INBLOB_MAX
        tsm.write(f"{ROOT}/a/inblob", bytes(65))
    assert info.value.errno == errno.EFBIG


def test_model_tdx_inblob_rule(tdx_tee):
    tsm = FakeTsm(ROOT, "tdx_guest", TdxGuest(tdx_tee))
    tsm.mkdir(f"{ROOT}/t")
    tsm.write(f"{ROOT}/t/inblob", bytes(63))
    with pytest.raises(OSError) as info:
        tsm.read(f"{ROOT}/t/outblob", 1 << 20)
    assert info.value.errno == errno.EINVAL
    tsm.write(f"{ROOT}/t/inblob", bytes(64))
    assert parse_quote(tsm.read(f"{ROOT}/t/outblob", 1 << 20)).body.report_data == bytes(64)


# --------------------------------------------------------------------------- 1. SNP at VMPL >= 1


def test_configfs_snp_under_an_svsm_asks_at_privlevel_floor(snp_tee, roots):
    guest = SnpGuest(snp_tee, vmpl=2, certs=cert_table((VCEK_GUID, snp_tee.vek_der)))
    tsm = FakeTsm(ROOT, "sev_guest", guest, privlevel_floor=2)
    rd = os.urandom(64)
    ev = SnpConfigfsDevice(ROOT, fs=tsm, gate=RequestGate()).evidence(rd)
    claims = verify_evidence(ev, TrustConfig.devnet(roots))
    assert claims.report_data == rd and sev_snp.parse_report(ev.quote).vmpl == 2
    # an explicit higher level is honoured; one below the floor is refused before anything is written
    assert sev_snp.parse_report(SnpConfigfsDevice(ROOT, fs=tsm, privlevel=3, gate=RequestGate()).evidence(rd).quote
                                ).vmpl == 3
    asked = guest.requests
    with pytest.raises(TeeConfigError, match="below .*privlevel_floor 2"):
        SnpConfigfsDevice(ROOT, fs=tsm, privlevel=1, gate=RequestGate()).evidence(rd)
    assert guest.requests == asked and tsm.instances == {}


def test_sev_guest_under_an_svsm_asks_at_the_guests_vmpl(snp_tee, device_node, tmp_path):
    guest = SnpGuest(snp_tee, vmpl=1, certs=cert_table((VCEK_GUID, snp_tee.vek_der)))
    device = SnpDevice(device_node, ioctl=guest.ioctl, gate=RequestGate(), vmpck_param=_vmpl_file(tmp_path, "1\n"))
    assert sev_snp.parse_report(device.evidence(os.urandom(64)).quote).vmpl == 1
    override = SnpDevice(device_node, ioctl=guest.ioctl, gate=RequestGate(), vmpl=3,
                         vmpck_param=_vmpl_file(tmp_path, "1\n"))
    assert sev_snp.parse_report(override.evidence(os.urandom(64)).quote).vmpl == 3


def test_guest_vmpl_prefers_privlevel_floor_then_vmpck_id(snp_tee, tmp_path, caplog):
    """/dev/sev-guest's default VMPL (also the sealing key's): configfs privlevel_floor, else vmpck_id, else 0."""
    from derot.app.tee.sev_guest import guest_vmpl

    tsm = FakeTsm(ROOT, "sev_guest", SnpGuest(snp_tee, vmpl=2), privlevel_floor=2)
    assert guest_vmpl(ROOT, _vmpl_file(tmp_path, "0\n"), fs=tsm) == 2 and tsm.instances == {}
    tdx = FakeTsm(ROOT, "tdx_guest", None)  # no privlevel_floor attribute: the driver's parameter decides
    assert guest_vmpl(ROOT, _vmpl_file(tmp_path, "1\n"), fs=tdx) == 1
    with caplog.at_level("INFO", "derot.app.tee"):
        assert guest_vmpl(None, _vmpl_file(tmp_path, "-1\n")) == 0 and "set privlevel" in caplog.text


# --------------------------------------------------------------------------- 2. certificate tables


def test_kernel_cut_table_keeps_the_intact_vcek(snp_tee, caplog):
    """A 20 KB CRL after the VCEK: the kernel cuts auxblob at 16 KiB; the VCEK entry is still whole."""
    certs = cert_table((VCEK_GUID, snp_tee.vek_der), (CRL_GUID, os.urandom(20000)))
    tsm = FakeTsm(ROOT, "sev_guest", SnpGuest(snp_tee, certs=certs))
    ev = SnpConfigfsDevice(ROOT, fs=tsm, gate=RequestGate()).evidence(os.urandom(64))
    assert ev.vek == snp_tee.vek_der and "cut off" in caplog.text


def test_sev_guest_too_many_certificates_uses_vek_path(snp_tee, device_node, tmp_path):
    vek = tmp_path / "vcek.der"
    vek.write_bytes(snp_tee.vek_der)
    guest = SnpGuest(snp_tee, certs=cert_table((VCEK_GUID, snp_tee.vek_der), (CRL_GUID, bytes(20000))),
                     honest_certs_length=True)
    device = SnpDevice(device_node, ioctl=guest.ioctl, gate=RequestGate(), vek_path=vek, extended=True, vmpl=0)
    ev = device.evidence(os.urandom(64))
    assert ev.vek == snp_tee.vek_der and guest.vmpck_alive and device.status().state == "ok"


# --------------------------------------------------------------------------- 3. config surface


def test_detect_checks_the_configured_platform_and_passes_options(tmp_path, device_node):
    vek = tmp_path / "vcek.der"
    device = detect_device(configfs_root=tmp_path / "none", sev_guest=device_node, vek_path=vek, privlevel=2,
                           expect=Platform.SEV_SNP)
    assert isinstance(device, SnpDevice) and device.vmpl == 2
    with pytest.raises(PlatformMismatch, match="sev-snp guest .* configuration names tdx"):
        detect_device(configfs_root=tmp_path / "none", sev_guest=device_node, expect=Platform.TDX)


# --------------------------------------------------------------------------- 4. a disabled VMPCK


def test_dead_vmpck_on_sev_guest_says_reboot(snp_tee, device_node):
    guest = SnpGuest(snp_tee, certs=cert_table((VCEK_GUID, snp_tee.vek_der)))
    guest.vmpck_alive = False  # another process's failed request wiped it
    device = SnpDevice(device_node, ioctl=guest.ioctl, gate=RequestGate(), vmpl=0)
    with pytest.raises(AttestationDisabled, match="attestation unavailable until the guest reboots") as info:
        device.evidence(bytes(64))
    assert info.value.reason == "tee_attestation_disabled" and "ENOTTY" in str(info.value)
    status = device_status(device)
    assert status.state == "disabled" and not status.available and "ENOTTY" in status.detail
    # later calls do not touch the device again
    with pytest.raises(AttestationDisabled):
        device.evidence(bytes(64))
    assert guest.requests == 0


def test_dead_vmpck_on_configfs_says_reboot(snp_tee):
    guest = SnpGuest(snp_tee)
    guest.vmpck_alive = False
    device = SnpConfigfsDevice(ROOT, fs=FakeTsm(ROOT, "sev_guest", guest), gate=RequestGate())
    with pytest.raises(AttestationDisabled, match="until the guest reboots"):
        device.evidence(bytes(64))
    assert device.status().state == "disabled"


def test_firmware_failure_reports_the_cause_then_reboot(snp_tee, device_node):
    guest = SnpGuest(snp_tee, certs=cert_table((VCEK_GUID, snp_tee.vek_der)), host_interval=2.0)
    device = SnpDevice(device_node, ioctl=guest.ioctl, gate=RequestGate(0.0, guest.clock), vmpl=0)
    device.evidence(os.urandom(64))
    with pytest.raises(FirmwareError, match="BUSY.*until the guest reboots") as info:
        device.evidence(os.urandom(64))  # no spacing: the host throttles, the old kernel wipes the key
    assert info.value.disabled and not guest.vmpck_alive
    with pytest.raises(AttestationDisabled, match="BUSY"):
        device.evidence(os.urandom(64))
    assert device.status().state == "disabled" and "BUSY" in device.status().detail


@pytest.mark.parametrize("interface", ["sev-guest", "configfs"])
def test_newer_kernel_busy_timeout_says_reboot(snp_tee, device_node, interface):
    """A newer kernel retries a host BUSY inside the driver for 60 s, then fails ETIMEDOUT and wipes the VMPCK."""
    guest = SnpGuest(snp_tee, certs=cert_table((VCEK_GUID, snp_tee.vek_der)), host_interval=2.0, old_kernel=False)
    gate = RequestGate(0.0, guest.clock)  # no spacing: the second request is throttled
    if interface == "sev-guest":
        device = SnpDevice(device_node, ioctl=guest.ioctl, gate=gate, vmpl=0)
    else:
        device = SnpConfigfsDevice(ROOT, fs=FakeTsm(ROOT, "sev_guest", guest), gate=gate)
    device.evidence(os.urandom(64))
    with pytest.raises(AttestationDisabled, match="until the guest reboots.*BUSY.*ETIMEDOUT"):
        device.evidence(os.urandom(64))
    assert not guest.vmpck_alive and device.status().state == "disabled"
    asked = guest.requests
    with pytest.raises(AttestationDisabled):
        device.evidence(os.urandom(64))
    assert guest.requests == asked  # not asked again


# --------------------------------------------------------------------------- 5. self-throttling


def test_requests_are_spaced_so_the_host_never_throttles(snp_tee, device_node):
    clock = FakeClock()
    guest = SnpGuest(snp_tee, certs=cert_table((VCEK_GUID, snp_tee.vek_der)), clock=clock, host_interval=2.0)
    gate = RequestGate(2.0, clock)  # what snp_gate() is: SNP_INTERVAL = 2 s
    configfs = SnpConfigfsDevice(ROOT, fs=FakeTsm(ROOT, "sev_guest", guest), gate=gate)
    ioctl = SnpDevice(device_node, ioctl=guest.ioctl, gate=gate, vmpl=0)
    for device in (configfs, ioctl, configfs, ioctl):
        device.evidence(os.urandom(64))
    assert guest.busy_answers == 0 and guest.vmpck_alive and guest.requests == 4
    assert clock.sleeps == [2.0, 2.0, 2.0]


def test_default_snp_gate_spaces_two_seconds():
    from derot.app.tee.gate import SNP_INTERVAL, snp_gate

    assert SNP_INTERVAL == 2.0 and snp_gate() is snp_gate() and snp_gate().interval == 2.0


def test_requests_are_serialized_across_threads(snp_tee):
    inside, most = [0], [0]
    lock = threading.Lock()
    guest = SnpGuest(snp_tee, certs=cert_table((VCEK_GUID, snp_tee.vek_der)))

    class Counting:
        def report_new(self, inblob, privlevel):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            try:
                time.sleep(0.01)
                return guest.report_new(inblob, privlevel)
            finally:
                with lock:
                    inside[0] -= 1

    device = SnpConfigfsDevice(ROOT, fs=FakeTsm(ROOT, "sev_guest", Counting()), gate=RequestGate())
    threads = [threading.Thread(target=device.evidence, args=(os.urandom(64),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert most[0] == 1 and guest.requests == 4


def test_exit_codes_are_trusted_only_on_eio(snp_tee, device_node):
    guest = SnpGuest(snp_tee)
    guest.fail_next = (errno.EINVAL, 0x16, 0)  # an older kernel copied back garbage with EINVAL
    device = SnpDevice(device_node, ioctl=guest.ioctl, gate=RequestGate(), vmpl=0, extended=True)
    with pytest.raises(TeeIOError, match="before reaching the firmware.*errno 22") as info:
        device.evidence(bytes(64))
    assert type(info.value) is TeeIOError and device.status().state == "failing"


# --------------------------------------------------------------------------- 6. smaller items


def test_tdx_ebusy_is_retried_with_backoff(tdx_tee):
    clock = FakeClock()
    tsm = FakeTsm(ROOT, "tdx_guest", TdxGuest(tdx_tee, busy_reads=3))
    rd = os.urandom(64)
    ev = TdxConfigfsDevice(ROOT, fs=tsm, clock=clock).evidence(rd)
    assert parse_quote(ev.quote).body.report_data == rd
    assert clock.sleeps == [0.25, 0.5, 1.0]
    forever = FakeTsm(ROOT, "tdx_guest", TdxGuest(tdx_tee, busy_reads=10**6))
    with pytest.raises(TeeIOError, match="still busy after") as info:
        TdxConfigfsDevice(ROOT, fs=forever, clock=clock).evidence(rd)
    assert info.value.errno == errno.EBUSY and sum(clock.sleeps) >= BUSY_BUDGET + 1.75
    assert forever.instances == {}


@pytest.mark.parametrize("platform", ["sev_guest", "tdx_guest"])
def test_private_instance_created_and_removed_on_success(snp_tee, tdx_tee, platform):
    if platform == "sev_guest":
        tsm = FakeTsm(ROOT, platform, SnpGuest(snp_tee, certs=cert_table((VCEK_GUID, snp_tee.vek_der))))
        device = SnpConfigfsDevice(ROOT, fs=tsm, gate=RequestGate())
    else:
        tsm = FakeTsm(ROOT, platform, TdxGuest(tdx_tee))
        device = TdxConfigfsDevice(ROOT, fs=tsm)
    device.evidence(os.urandom(64))
    device.evidence(os.urandom(64))
    assert len(tsm.created) == 2 and tsm.created == tsm.removed and tsm.instances == {}
    assert len(set(tsm.created)) == 2 and all(name.startswith(f"derot-{os.getpid()}-") for name in tsm.created)
    assert tsm.reads.count("outblob") == 2


def test_privlevel_floor_read_through_a_private_instance(snp_tee):
    tsm = FakeTsm(ROOT, "sev_guest", SnpGuest(snp_tee, vmpl=3), privlevel_floor=3)
    assert ConfigfsTsm(ROOT, "sev_guest", fs=tsm).read_privlevel_floor() == 3 and tsm.instances == {}


def _in_child_as_nobody(fn) -> str:
    """Run ``fn`` in a forked child as uid/gid 65534 (when we are root); its result or exception, as text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if os.geteuid() == 0:
                os.setgroups([65534])
                os.setgid(65534)
                os.setuid(65534)
            out = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = f"{type(exc).__name__}: {exc}"
        os.write(write_end, str(out).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return data.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to set up a root-only configfs and a group device")
def test_configfs_permission_falls_back_to_a_group_device():
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        tsm = base / "tsm"
        tsm.mkdir(mode=0o755)  # root-only for mkdir, like configfs-tsm
        node = base / "sev-guest"
        node.write_bytes(b"")
        os.chown(node, 0, 65534)
        node.chmod(0o660)  # group-accessible, as an operator would grant it
        out = _in_child_as_nobody(lambda: type(detect_device(configfs_root=tsm, sev_guest=node)).__name__)
        assert out == "SnpDevice"
        node.chmod(0o600)
        out = _in_child_as_nobody(lambda: type(detect_device(configfs_root=tsm, sev_guest=node)).__name__)
        assert out.startswith("TeePermissionDenied") and str(node) in out
    finally:
        shutil.rmtree(base)


def test_device_status_for_every_device(roots):
    from derot.app.tee import DevnetDevice, TeeStatus

    assert device_status(DevnetDevice(roots, Platform.TDX)) == TeeStatus("ok")
    assert device_status(object()).state == "unknown" and device_status(object()).available
