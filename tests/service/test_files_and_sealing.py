"""Issue 9 item 8: the node's files are private (0600 in 0700 folders), and TEE sealing on SEV-SNP
comes from the secure processor's derived key (the firmware played by tests/app/tee_kernel.py)."""

from __future__ import annotations

import importlib.util
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from derot.app.tee import AttestationDisabled, RequestGate, SnpDevice
from derot.attest.devnet import DevnetRoots, DevnetTee
from derot.constants import Platform
from derot.service import logs
from derot.service.config import ConfigError, load_config
from derot.service.sealing import key_from_file, key_from_snp
from derot.service.storage import NodeStore


def _kernel_models():
    """tests/app/tee_kernel.py, loaded by path (it lives with the device tests)."""
    path = Path(__file__).resolve().parent.parent / "app" / "tee_kernel.py"
    spec = importlib.util.spec_from_file_location("derot_test_tee_kernel", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # what most services run with: files 0644, folders 0755
    yield
    os.umask(old)


def test_store_files_are_0600_in_a_0700_folder(tmp_path, loose_umask):
    data = tmp_path / "data" / "node"
    store = NodeStore.open(data / "node.db", key=b"k" * 32, create=True)
    store.put_identity("ed25519", b"\x01" * 32, public=b"pub")
    files = sorted(p.name for p in data.iterdir())
    assert {"node.db", "node.db-wal", "node.db-shm"} <= set(files)
    for name in files:
        assert _mode(data / name) == 0o600, name
    store.close()
    assert _mode(data) == 0o700 and _mode(data.parent) == 0o700


def test_existing_loose_store_is_tightened(tmp_path, loose_umask, caplog):
    db = tmp_path / "node.db"
    NodeStore.open(db, key=b"k" * 32, create=True).close()
    os.chmod(db, 0o644)
    tmp_path.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        NodeStore.open(db, key=b"k" * 32).close()
    assert _mode(db) == 0o600
    assert _mode(tmp_path) == 0o755 and "other users may list it" in caplog.text  # the operator's folder: named


def test_seal_key_and_log_file_are_private(tmp_path, loose_umask):
    key_from_file(tmp_path / "keys" / "seal.key", create=True)
    assert _mode(tmp_path / "keys") == 0o700 and _mode(tmp_path / "keys" / "seal.key") == 0o600
    with logs.open_private(tmp_path / "logs" / "node.log") as f:
        f.write(b"line\n")
    assert _mode(tmp_path / "logs") == 0o700 and _mode(tmp_path / "logs" / "node.log") == 0o600
    loose = tmp_path / "old.log"
    loose.write_text("x")
    loose.chmod(0o644)
    logs.open_private(loose, "a").close()
    assert _mode(loose) == 0o600 and loose.read_text() == "x"


def test_log_section_file(tmp_path, loose_umask):
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logs.configure("info", "json", node="n1", file=str(tmp_path / "l" / "derot.log"))
        logging.getLogger("derot.test").warning("hello")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert '"msg":"hello"' in (tmp_path / "l" / "derot.log").read_text()
    assert _mode(tmp_path / "l" / "derot.log") == 0o600


# --------------------------------------------------------------------------- SEV-SNP sealing key


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> DevnetRoots:
    return DevnetRoots.generate(tmp_path_factory.mktemp("roots"))


def _device(tmp_path, guest) -> SnpDevice:
    node = tmp_path / "sev-guest"
    node.write_bytes(b"")
    return SnpDevice(node, ioctl=guest.ioctl, gate=RequestGate(), vmpl=guest.vmpl, extended=False)


def test_snp_sealing_key_is_bound_to_image_and_chip(tmp_path, roots):
    kernel = _kernel_models()
    tee = DevnetTee(roots, Platform.SEV_SNP, {"MEASUREMENT": b"\x01" * 48})
    guest = kernel.SnpGuest(tee, vmpl=1)
    key = key_from_snp(_device(tmp_path, guest))
    assert len(key) == 32 and key_from_snp(_device(tmp_path, guest)) == key
    # the firmware's key is not used as is (HKDF with derot's label)
    raw = _device(tmp_path, guest).derived_key()
    assert raw != key and len(raw) == 32
    # another image on the same chip, and the same image on another chip, get other keys
    other_image = kernel.SnpGuest(DevnetTee(roots, Platform.SEV_SNP, {"MEASUREMENT": b"\x02" * 48}), vmpl=1)
    other_image._chip_secret = guest._chip_secret
    assert key_from_snp(_device(tmp_path, other_image)) != key
    assert key_from_snp(_device(tmp_path, kernel.SnpGuest(tee, vmpl=1))) != key
    # the store opens with it, and only with it
    store = NodeStore.open(tmp_path / "node.db", key=key, create=True)
    store.close()
    NodeStore.open(tmp_path / "node.db", key=key_from_snp(_device(tmp_path, guest))).close()


def test_snp_sealing_key_request_at_a_lower_vmpl_is_refused(tmp_path, roots):
    guest = _kernel_models().SnpGuest(DevnetTee(roots, Platform.SEV_SNP), vmpl=2)
    device = _device(tmp_path, guest)
    with pytest.raises(Exception, match="MSG_KEY_RSP status 0x16"):
        device.derived_key(vmpl=0)


def test_snp_sealing_with_a_dead_vmpck_says_reboot(tmp_path, roots):
    guest = _kernel_models().SnpGuest(DevnetTee(roots, Platform.SEV_SNP))
    guest.vmpck_alive = False
    with pytest.raises(AttestationDisabled, match="until the guest reboots"):
        key_from_snp(_device(tmp_path, guest))


# --------------------------------------------------------------------------- config surface


def test_node_config_exposes_the_device_options(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('[attest]\nnode_tee = "snp"\nvek_path = "/etc/derot/vcek.der"\nprivlevel = 2\n'
                    '[seal]\nmethod = "snp"\n[log]\nfile = "/var/log/derot/node.log"\n')
    config = load_config(path, env={"DEROT_ATTEST_COLLATERAL_PATH": "/etc/derot/collateral.json"})
    assert config.attest.device_options() == {"vek_path": "/etc/derot/vcek.der",
                                              "collateral_path": "/etc/derot/collateral.json",
                                              "privlevel": 2, "expect": Platform.SEV_SNP}
    assert config.seal.method == "snp" and config.log.file == "/var/log/derot/node.log"
    assert load_config(env={}).attest.device_options() == {"vek_path": None, "collateral_path": None,
                                                           "privlevel": None}
    with pytest.raises(ConfigError, match="privlevel"):
        load_config(env={"DEROT_ATTEST_PRIVLEVEL": "4"})


def test_snp_seal_method_off_an_snp_guest_is_a_clear_setup_error(tmp_path, monkeypatch):
    from derot.app.tee.gate import RequestGate as Gate
    from derot.service.setup import SetupError, open_store

    if os.path.exists("/dev/sev-guest"):
        pytest.skip("this machine is an SEV-SNP guest")
    monkeypatch.setattr("derot.app.tee.gate._snp_gate", Gate(0.0))
    config = load_config(env={"DEROT_NODE_DATA_DIR": str(tmp_path / "d"), "DEROT_SEAL_METHOD": "snp"})
    with pytest.raises(SetupError, match="method = 'snp'.*/dev/sev-guest does not exist"):
        open_store(config, create=True)
    assert not (tmp_path / "d" / "node.db").exists()


def test_rim_settings_give_the_node_a_rim_verifier(tmp_path, vectors_dir):
    """``[attest] rim_dir`` / ``rim_url``: the node's trust compares GPU blocks with RIMs from the bundle (here
    NVIDIA's real test RIMs, verified under the pinned RIM root) or the service; neither set: no comparison."""
    from derot.attest.nvidia_rim import RimVerifier
    from derot.service.setup import trust_config

    bundle = tmp_path / "rims"
    bundle.mkdir()
    (bundle / "NV_GPU_DRIVER_GH100_545.00").write_bytes((vectors_dir / "nvidia_nvtrust/Driver_RIM_test_no_gpu.swidtag").read_bytes())
    env = {"DEROT_NODE_DATA_DIR": str(tmp_path / "d")}
    assert trust_config(load_config(env=env)).rims is None
    trust = trust_config(load_config(env={**env, "DEROT_ATTEST_RIM_DIR": str(bundle)}))
    assert isinstance(trust.rims, RimVerifier) and trust.rims.store.service_url is None
    at = 1_717_200_000  # 2024-06-01: inside the test RIM signer's validity
    rim, why = trust.rims._rim("NV_GPU_DRIVER_GH100_545.00", at)
    assert why is None and rim.version == "545.00"
    trust = trust_config(load_config(env={**env, "DEROT_ATTEST_RIM_URL": "https://rim.example/v1/rim/"}))
    assert trust.rims.store.service_url == "https://rim.example/v1/rim"
    assert trust.rims.store.cache_dir == tmp_path / "d" / "rim"
    for bad in ({"DEROT_ATTEST_RIM_URL": "file:///etc/passwd"}, {"DEROT_ATTEST_RIM_DIR": str(tmp_path / "absent")}):
        with pytest.raises(ConfigError, match="rim_"):
            load_config(env={**env, **bad})
