"""A real anvil (Foundry's dev EVM node) from ``contracts/node_modules``, for tests, devnets and benchmarks.

``Anvil`` starts the binary on a free port, waits until it answers JSON-RPC, logs to a file and stops it
cleanly (SIGTERM, then SIGKILL after a grace period). Dev accounts are derived from the mnemonic, so
callers sign transactions locally exactly as against a production node.

The module-level helpers (``mine``, ``warp``, ``snapshot``, ``revert``, ``reorg``) use anvil's dev RPC
methods on any Web3 connected to an anvil (for example the devnet's docker container).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from derot.chain.artifacts import CONTRACTS_DIR
from derot.errors import DerotError

#: Foundry's default dev mnemonic (public test keys; never use on a real network).
DEV_MNEMONIC = "test test test test test test test test test test test junk"
ANVIL_BIN = CONTRACTS_DIR / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


class AnvilError(DerotError, RuntimeError):
    """anvil could not be found, did not start, or exited."""

    reason = "anvil_failed"


def find_anvil() -> Path:
    """``$DEROT_ANVIL``, else the npm package's binary, else ``anvil`` on PATH."""
    env = os.environ.get("DEROT_ANVIL")
    if env:
        return Path(env)
    if ANVIL_BIN.is_file():
        return ANVIL_BIN
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise AnvilError(f"anvil not found at {ANVIL_BIN}; run `make npm`")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def dev_accounts(count: int = 10, mnemonic: str = DEV_MNEMONIC) -> list[LocalAccount]:
    """The accounts anvil funds for ``mnemonic`` (BIP-44 path m/44'/60'/0'/0/i)."""
    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


def rpc(url: str, method: str, params: list | None = None, timeout: float = 5.0):
    """One JSON-RPC call with the standard library (used for readiness checks)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise AnvilError(f"{method}: {reply['error']}")
    return reply["result"]


class Anvil:
    """One anvil process. Use as a context manager, or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        chain_id: int = 31337,
        block_time: float | None = None,
        accounts: int = 10,
        mnemonic: str = DEV_MNEMONIC,
        state_path: Path | None = None,
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
        detach: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.chain_id = chain_id
        self.block_time = block_time
        self.account_count = accounts
        self.mnemonic = mnemonic
        self.state_path = state_path
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self.detach = detach  # own session: keeps running after the starting process exits (devnets)
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def accounts(self) -> list[LocalAccount]:
        return dev_accounts(self.account_count, self.mnemonic)

    def command(self) -> list[str]:
        cmd = [
            str(find_anvil()),
            "--host", self.host,
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.account_count),
            "--mnemonic", self.mnemonic,
        ]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        if self.state_path:
            cmd += ["--state", str(self.state_path)]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 20.0) -> Anvil:
        if self.running:
            return self
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="anvil-", suffix=".log")[1])
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=self.detach,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._close_log()
                raise AnvilError(f"anvil exited with {self._proc.returncode}; log: {self.log_path}")
            try:
                if int(rpc(self.url, "eth_chainId", timeout=1.0), 16) == self.chain_id:
                    return self
            except (OSError, urllib.error.URLError, AnvilError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise AnvilError(f"anvil did not answer on {self.url} within {timeout}s; log: {self.log_path}")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (anvil dumps ``--state`` on exit), SIGKILL after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------
# anvil dev RPC helpers (any Web3 connected to an anvil)


def mine(w3, blocks: int = 1) -> None:
    w3.provider.make_request("anvil_mine", [hex(blocks)])


def warp(w3, seconds: int) -> None:
    """Advance the clock by ``seconds`` and mine one block with the new time."""
    w3.provider.make_request("evm_increaseTime", [int(seconds)])
    mine(w3, 1)


def snapshot(w3) -> str:
    return w3.provider.make_request("evm_snapshot", [])["result"]


def revert(w3, snapshot_id: str) -> bool:
    return bool(w3.provider.make_request("evm_revert", [snapshot_id])["result"])


def reorg(w3, depth: int, transactions: list | None = None) -> None:
    """Replace the last ``depth`` blocks with new ones holding ``transactions`` (anvil_reorg)."""
    reply = w3.provider.make_request("anvil_reorg", [depth, transactions or []])
    if "error" in reply:
        raise AnvilError(f"anvil_reorg: {reply['error']}")
