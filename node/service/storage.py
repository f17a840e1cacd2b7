"""The node's SQLite store (WAL): sealed identity keys and shares, epochs, issued certificates, replay cache.

Invariants:
- every secret (identity private keys, key shares) is stored sealed (:mod:`derot.service.sealing`),
  with the row's slot name as AAD; public data is stored in clear;
- an epoch's shares are written once (``pending``) and become ``active`` in one transaction that also
  erases the shares of every older epoch, so a crash never leaves two active epochs or a half-erased one;
- the replay cache refuses a key seen before its expiry; entries are pruned lazily;
- the database and its ``-wal``/``-shm``/``-journal`` files are mode 0600, and a folder the store
  creates is mode 0700 (SQLite gives the side files the database's mode, so the database is created
  0600 before SQLite opens it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from derot.errors import DerotError
from derot.service.sealing import Sealer, UnsealError, key_from_passphrase

log = logging.getLogger("derot.service.storage")

SCHEMA_VERSION = 1
_SIDE_FILES = ("-wal", "-shm", "-journal")
_warned_folders: set[str] = set()
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS identity (name TEXT PRIMARY KEY, public BLOB, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    epoch INTEGER PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'retired')),
    public TEXT NOT NULL,
    sealed_shares BLOB,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    serial BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    app_id BLOB NOT NULL,
    issued_at INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    certificate BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS replay (key BLOB PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dkg_sessions (
    epoch INTEGER NOT NULL,
    session_id BLOB NOT NULL,
    sealed BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (epoch, session_id)
);
CREATE INDEX IF NOT EXISTS replay_expiry ON replay (expires_at);
"""


class StoreError(DerotError):
    """The store cannot be opened or used as asked (missing, wrong key, inconsistent state)."""

    reason = "store_error"


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700. An existing folder is left as it is, with
    a warning (once per process) if others may enter it (the operator chose it; derot's files in it are 0600)."""
    path = Path(path)
    missing = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        missing.append(parent)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask; 0700 is what we mean
    mode = path.stat().st_mode
    if not missing and mode & 0o077 and str(path) not in _warned_folders:
        _warned_folders.add(str(path))
        log.warning("folder %s is mode %o: other users may list it (derot's files in it are 0600)",
                    path, stat.S_IMODE(mode))


def private_file(path: Path) -> None:
    """Make ``path`` exist with mode 0600 (created so, or tightened if it is looser)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _private_store_files(path: Path) -> None:
    """The store's folder 0700 (if we create it), the database and any side files 0600."""
    private_dir(path.parent)
    private_file(path)
    for suffix in _SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            private_file(side)


@dataclass(frozen=True)
class EpochRecord:
    """An epoch as this node stored it. ``shares`` is ``None`` once erased (or never held)."""

    epoch: int
    status: str
    public: dict
    shares: bytes | None


class NodeStore:
    """One node's persistent state. Thread-safe (one connection guarded by a lock)."""

    def __init__(self, path: Path, sealer: Sealer):
        self.path = Path(path)
        self._sealer = sealer
        self._lock = threading.Lock()
        _private_store_files(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._check_seal()

    # opening ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, key: bytes | None = None, passphrase: str | None = None, create: bool = False):
        """Open (or with ``create``, create) a store sealed by a key or a passphrase."""
        path = Path(path)
        if not path.exists() and not create:
            raise StoreError(f"no node store at {path} (run `derot node init`)")
        if (key is None) == (passphrase is None):
            raise StoreError("give exactly one of a sealing key or a sealing passphrase")
        _private_store_files(path)
        if passphrase is not None:
            salt = cls._salt(path)
            key = key_from_passphrase(passphrase, salt)
        return cls(path, Sealer(key))

    @staticmethod
    def _salt(path: Path) -> bytes:
        db = sqlite3.connect(path)
        try:
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE name='scrypt_salt'").fetchone()
            if row:
                return bytes(row[0])
            salt = secrets.token_bytes(16)
            db.execute("INSERT INTO meta VALUES ('scrypt_salt', ?)", (salt,))
            db.commit()
            return salt
        finally:
            db.close()

    def _check_seal(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE name='seal_check'").fetchone()
        if row is None:
            with self._tx():
                self._db.execute("INSERT INTO meta VALUES ('seal_check', ?)", (self._sealer.seal("seal-check", b"derot"),))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION).encode(),))
            return
        try:
            self._sealer.unseal("seal-check", bytes(row[0]))
        except UnsealError:
            self._db.close()
            raise StoreError(f"{self.path}: wrong sealing key or passphrase") from None

    def _tx(self):
        return _Transaction(self._db, self._lock)

    def _one(self, sql: str, args: tuple = ()):
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()

    # public metadata ----------------------------------------------------------------------------
    def put_meta(self, name: str, value: bytes) -> None:
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"user:{name}", value))

    def meta(self, name: str) -> bytes | None:
        row = self._one("SELECT value FROM meta WHERE name=?", (f"user:{name}",))
        return None if row is None else bytes(row[0])

    # identity -----------------------------------------------------------------------------------
    def put_identity(self, name: str, secret: bytes, public: bytes | None = None) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO identity VALUES (?, ?, ?)",
                (name, public, self._sealer.seal(f"identity/{name}", secret)),
            )

    def identity(self, name: str) -> bytes:
        row = self._one("SELECT sealed FROM identity WHERE name=?", (name,))
        if row is None:
            raise StoreError(f"no identity key {name!r} in {self.path} (run `derot node init`)")
        return self._sealer.unseal(f"identity/{name}", bytes(row[0]))

    def identity_public(self, name: str) -> bytes | None:
        row = self._one("SELECT public FROM identity WHERE name=?", (name,))
        return None if row is None or row[0] is None else bytes(row[0])

    def has_identity(self, name: str) -> bool:
        return self._one("SELECT 1 FROM identity WHERE name=?", (name,)) is not None

    # epochs -------------------------------------------------------------------------------------
    def save_epoch(self, epoch: int, public: dict, shares: bytes | None) -> None:
        """Record a finished DKG/reshare as ``pending`` (replaces an earlier pending result)."""
        sealed = None if shares is None else self._sealer.seal(f"shares/epoch={epoch}", shares)
        with self._tx():
            row = self._db.execute("SELECT status FROM epochs WHERE epoch=?", (epoch,)).fetchone()
            if row and row[0] != "pending":
                raise StoreError(f"epoch {epoch} is already {row[0]}")
            self._db.execute(
                "INSERT OR REPLACE INTO epochs VALUES (?, 'pending', ?, ?, ?)",
                (epoch, json.dumps(public, sort_keys=True), sealed, int(time.time())),
            )

    def activate_epoch(self, epoch: int, *, erase_older: bool = True) -> None:
        """Atomically make ``epoch`` active and retire every older epoch, erasing their shares unless
        ``erase_older`` is false (the activation is not final yet: derot.chain.finality.ShareRetirement)."""
        with self._tx():
            row = self._db.execute("SELECT status FROM epochs WHERE epoch=?", (epoch,)).fetchone()
            if row is None:
                raise StoreError(f"epoch {epoch} is unknown to this node")
            now = int(time.time())
            erase = ", sealed_shares=NULL" if erase_older else ""
            self._db.execute(f"UPDATE epochs SET status='retired'{erase}, updated_at=? WHERE epoch<?", (now, epoch))
            self._db.execute("UPDATE epochs SET status='active', updated_at=? WHERE epoch=?", (now, epoch))
            if erase_older:  # the DKG run keys go with the old shares, never on an activation not yet final
                self._db.execute("DELETE FROM dkg_sessions WHERE epoch<=?", (epoch,))

    def erase_shares_before(self, epoch: int) -> None:
        """Retire every epoch older than ``epoch`` and erase its shares, and the DKG run keys up to ``epoch``
        (this node left the committee)."""
        with self._tx():
            self._db.execute(
                "UPDATE epochs SET status='retired', sealed_shares=NULL, updated_at=? WHERE epoch<?",
                (int(time.time()), epoch),
            )
            self._db.execute("DELETE FROM dkg_sessions WHERE epoch<=?", (epoch,))

    # DKG session state (restart safety: derot.service.dkg_runner) ------------------------------
    def put_dkg_state(self, epoch: int, session_id: bytes, state: bytes) -> None:
        """Persist, sealed, one DKG session's snapshot (it holds the run's epoch decryption key)."""
        sealed = self._sealer.seal(f"dkg/epoch={epoch}/session={session_id.hex()}", state)
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO dkg_sessions VALUES (?, ?, ?, ?)",
                             (epoch, session_id, sealed, int(time.time())))

    def dkg_state(self, epoch: int, session_id: bytes) -> bytes | None:
        row = self._one("SELECT sealed FROM dkg_sessions WHERE epoch=? AND session_id=?", (epoch, session_id))
        if row is None:
            return None
        return self._sealer.unseal(f"dkg/epoch={epoch}/session={session_id.hex()}", bytes(row[0]))

    def erase_dkg_states(self, epoch: int) -> None:
        """Forget every DKG session state of epochs up to ``epoch`` (their keys are no longer needed)."""
        with self._tx():
            self._db.execute("DELETE FROM dkg_sessions WHERE epoch<=?", (epoch,))

    def epoch(self, epoch: int) -> EpochRecord | None:
        row = self._one("SELECT epoch, status, public, sealed_shares FROM epochs WHERE epoch=?", (epoch,))
        return None if row is None else self._record(row)

    def active_epoch(self) -> EpochRecord | None:
        row = self._one(
            "SELECT epoch, status, public, sealed_shares FROM epochs WHERE status='active' ORDER BY epoch DESC LIMIT 1"
        )
        return None if row is None else self._record(row)

    def _record(self, row) -> EpochRecord:
        epoch, status, public, sealed = row
        shares = None if sealed is None else self._sealer.unseal(f"shares/epoch={epoch}", bytes(sealed))
        return EpochRecord(epoch, status, json.loads(public), shares)

    # certificates -------------------------------------------------------------------------------
    def log_certificate(self, serial: bytes, epoch: int, app_id: bytes, not_after: int, cert: bytes, sig: bytes) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO certificates VALUES (?, ?, ?, ?, ?, ?, ?)",
                (serial, epoch, app_id, int(time.time()), not_after, cert, sig),
            )

    def certificate(self, serial: bytes) -> tuple[bytes, bytes] | None:
        row = self._one("SELECT certificate, signature FROM certificates WHERE serial=?", (serial,))
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def certificate_count(self) -> int:
        return self._one("SELECT COUNT(*) FROM certificates")[0]

    # replay cache -------------------------------------------------------------------------------
    def add_if_absent(self, key: bytes, expires_at: int, now: int | None = None) -> bool:
        """Record ``key`` until ``expires_at``; False if it is already recorded and not expired.

        Implements :class:`derot.attest.replay.ReplayStore`, so the policy engine can use the node store.
        """
        now = int(time.time()) if now is None else now
        with self._tx():
            row = self._db.execute("SELECT expires_at FROM replay WHERE key=?", (key,)).fetchone()
            if row is not None and row[0] > now:
                return False
            self._db.execute("INSERT OR REPLACE INTO replay VALUES (?, ?)", (key, expires_at))
            if secrets.randbelow(256) == 0:
                self._db.execute("DELETE FROM replay WHERE expires_at <= ?", (now,))
        return True


class _Transaction:
    """``with`` block: BEGIN IMMEDIATE … COMMIT (ROLLBACK on error) under the store lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock):
        self._db, self._lock = db, lock

    def __enter__(self):
        self._lock.acquire()
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb):
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()
        return False
