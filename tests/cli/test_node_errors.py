"""``derot node`` error paths: one line on stderr, no traceback, the documented exit code.

Each case runs the real ``derot`` entry point in a subprocess against a real sealed store made by
``derot node init`` (passphrase sealing). Nothing here needs a chain except the RPC that must not answer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from derot.cli import errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def derot(*argv: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEROT_")}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "derot.cli.main", *argv], capture_output=True, text=True,
                          timeout=120, env=base, cwd=cwd)


def one_line(result: subprocess.CompletedProcess, code: int, reason: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"derot: {reason}: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("node")
    write_config(d, "node.toml")
    made = derot("node", "init", "--config", str(d / "node.toml"), env={"DEROT_SEAL_PASSPHRASE": "right"})
    assert made.returncode == 0, made.stderr
    return d


def write_config(d: Path, name: str, *, rpc: str | None = None, public: int | None = None,
                 level: str = "info", operator_key_file: str = "", metrics: int | None = None) -> Path:
    rpc = rpc or f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = d / name
    path.write_text(f"""
[node]
data_dir = "{d}"
public_listen = "127.0.0.1:{public or free_port()}"
peer_listen = "127.0.0.1:{free_port()}"

[seal]
method = "passphrase"

[chain]
rpc_url = "{rpc}"
registry = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"
operator_key_file = "{operator_key_file}"

[log]
level = "{level}"
""" + (f"""
[metrics]
listen = "127.0.0.1:{metrics}"
""" if metrics else ""))
    return path


def test_a_missing_config_file(tmp_path):
    line = one_line(derot("node", "run", "--config", str(tmp_path / "absent.toml")), errors.USAGE, "config_error")
    assert "absent.toml" in line


def test_a_missing_operator_key_file(node_dir):
    config = write_config(node_dir, "nokey.toml", operator_key_file=str(node_dir / "no-such.key"))
    line = one_line(derot("node", "register", "--config", str(config), env={"DEROT_SEAL_PASSPHRASE": "right"}),
                    errors.USAGE, "config_error")
    assert "no-such.key" in line


def test_a_wrong_passphrase(node_dir):
    line = one_line(derot("node", "status", "--config", str(node_dir / "node.toml"),
                          env={"DEROT_SEAL_PASSPHRASE": "wrong"}), errors.SEALED, "store_error")
    assert "passphrase" in line and "wrong" not in line.replace("wrong sealing key", "")


def test_no_passphrase_at_all(node_dir):
    one_line(derot("node", "status", "--config", str(node_dir / "node.toml")), errors.SEALED, "store_error")


def test_an_unreachable_rpc_during_node_run(node_dir):
    line = one_line(derot("node", "run", "--config", str(node_dir / "node.toml"),
                          env={"DEROT_SEAL_PASSPHRASE": "right"}), errors.UNREACHABLE, "unreachable")
    assert "does not answer" in line


def test_a_grpc_port_in_use(node_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(node_dir, "busy.toml", public=taken.getsockname()[1])
        line = one_line(derot("node", "run", "--config", str(config), env={"DEROT_SEAL_PASSPHRASE": "right"}),
                        errors.ADDRESS_IN_USE, "address_in_use")
    assert "[node].public_listen" in line


def test_a_metrics_port_in_use(node_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(node_dir, "busy-metrics.toml", metrics=taken.getsockname()[1])
        line = one_line(derot("node", "run", "--config", str(config), env={"DEROT_SEAL_PASSPHRASE": "right"}),
                        errors.ADDRESS_IN_USE, "address_in_use")
    assert "[metrics].listen" in line


def test_a_bad_log_level(node_dir):
    config = write_config(node_dir, "loud.toml", level="loud")
    line = one_line(derot("node", "run", "--config", str(config), env={"DEROT_SEAL_PASSPHRASE": "right"}),
                    errors.USAGE, "config_error")
    assert "'loud'" in line


def test_health_of_a_node_that_is_not_running(node_dir):
    result = derot("node", "health", "--config", str(node_dir / "node.toml"))
    assert result.returncode == errors.UNREACHABLE and result.stdout.startswith("unreachable"), result


def test_an_unexpected_exception_is_one_line_and_exit_70(monkeypatch, capsys):
    """The guard itself: a bug in a handler is one line, no traceback, exit 70."""
    import argparse

    def broken(args):
        raise KeyError("boom")

    code = errors.guarded(broken)(argparse.Namespace(json=False))
    err = capsys.readouterr().err
    assert code == errors.INTERNAL and err.count("\n") == 1 and err.startswith("derot: internal_error: KeyError")
