"""Sealed SQLite storage: secrets sealed at rest, atomic epoch transitions, replay cache."""

import sqlite3

import pytest

from derot.service.sealing import Sealer, UnsealError, key_from_file
from derot.service.storage import NodeStore, StoreError


def test_sealed_blob_binds_its_slot_and_key():
    sealer = Sealer(b"k" * 32)
    blob = sealer.seal("shares/epoch=1", b"secret share")
    assert sealer.unseal("shares/epoch=1", blob) == b"secret share"
    with pytest.raises(UnsealError, match="epoch=2"):
        sealer.unseal("shares/epoch=2", blob)
    with pytest.raises(UnsealError):
        Sealer(b"x" * 32).unseal("shares/epoch=1", blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(UnsealError):
        sealer.unseal("shares/epoch=1", tampered)
    assert "k" * 8 not in repr(sealer)


def test_key_file_is_created_private(tmp_path):
    path = tmp_path / "seal.key"
    with pytest.raises(FileNotFoundError):
        key_from_file(path)
    key = key_from_file(path, create=True)
    assert len(key) == 32 and key_from_file(path) == key
    assert path.stat().st_mode & 0o777 == 0o600


def test_secrets_are_not_stored_in_clear(tmp_path):
    store = NodeStore.open(tmp_path / "node.db", key=b"s" * 32, create=True)
    secret = b"\x11" * 32
    store.put_identity("ed25519", secret, public=b"pub")
    store.save_epoch(1, {"threshold": 2}, b"\x22" * 64)
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret not in raw and b"\x22" * 64 not in raw
    reopened = NodeStore.open(tmp_path / "node.db", key=b"s" * 32)
    assert reopened.identity("ed25519") == secret and reopened.identity_public("ed25519") == b"pub"


def test_wrong_passphrase_is_a_clear_error(tmp_path):
    NodeStore.open(tmp_path / "n.db", passphrase="correct horse", create=True).close()
    assert NodeStore.open(tmp_path / "n.db", passphrase="correct horse").path.exists()
    with pytest.raises(StoreError, match="wrong sealing key or passphrase"):
        NodeStore.open(tmp_path / "n.db", passphrase="battery staple")
    with pytest.raises(StoreError, match="node init"):
        NodeStore.open(tmp_path / "missing.db", passphrase="x")


def test_epoch_activation_erases_older_shares_atomically(tmp_path):
    store = NodeStore.open(tmp_path / "node.db", key=b"s" * 32, create=True)
    store.save_epoch(1, {"e": 1}, b"old shares")
    store.activate_epoch(1)
    store.save_epoch(2, {"e": 2}, b"new shares")
    assert store.active_epoch().epoch == 1 and store.epoch(2).status == "pending"
    store.activate_epoch(2)
    assert store.active_epoch().shares == b"new shares"
    old = store.epoch(1)
    assert old.status == "retired" and old.shares is None
    with pytest.raises(StoreError):
        store.save_epoch(2, {}, b"again")
    with pytest.raises(StoreError):
        store.activate_epoch(9)


def test_restart_keeps_shares(tmp_path):
    store = NodeStore.open(tmp_path / "node.db", key=b"s" * 32, create=True)
    store.save_epoch(3, {"group": "x"}, b"shares")
    store.activate_epoch(3)
    store.close()
    again = NodeStore.open(tmp_path / "node.db", key=b"s" * 32)
    record = again.active_epoch()
    assert (record.epoch, record.public, record.shares) == (3, {"group": "x"}, b"shares")


def test_replay_cache(tmp_path):
    store = NodeStore.open(tmp_path / "node.db", key=b"s" * 32, create=True)
    assert store.add_if_absent(b"nonce", expires_at=200, now=100)
    assert not store.add_if_absent(b"nonce", expires_at=300, now=150)
    assert store.add_if_absent(b"nonce", expires_at=400, now=201)  # expired entry may be reused
    assert store.add_if_absent(b"other", expires_at=300, now=150)


def test_certificate_log(tmp_path):
    store = NodeStore.open(tmp_path / "node.db", key=b"s" * 32, create=True)
    store.log_certificate(b"\x01" * 32, 1, b"\x02" * 32, 999, b"cert", b"sig")
    store.log_certificate(b"\x01" * 32, 1, b"\x02" * 32, 999, b"cert", b"sig")
    assert store.certificate(b"\x01" * 32) == (b"cert", b"sig") and store.certificate_count() == 1
    assert sqlite3.connect(tmp_path / "node.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_dkg_session_snapshots_are_sealed_and_erased_with_their_epoch(tmp_path):
    store = NodeStore.open(tmp_path / "node.db", key=b"s" * 32, create=True)
    secret = b"\x5a" * 64
    for epoch in (1, 2, 3):
        store.put_dkg_state(epoch, bytes([epoch]) * 32, secret + bytes([epoch]))
    assert store.dkg_state(2, b"\x02" * 32) == secret + b"\x02"
    assert store.dkg_state(2, b"\x01" * 32) is None  # another session of the same epoch: nothing
    store.erase_dkg_states(2)  # a node left out of epoch 2 forgets runs up to it
    assert store.dkg_state(1, b"\x01" * 32) is None and store.dkg_state(2, b"\x02" * 32) is None
    assert store.dkg_state(3, b"\x03" * 32) == secret + b"\x03"
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret not in raw
