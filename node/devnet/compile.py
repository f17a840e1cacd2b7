"""Compile the Solidity sources in ``contracts/src`` with solc-js and write ABI/bytecode artifacts.

``python -m derot.devnet.compile`` (or ``make contracts``) compiles; ``--check`` exits 1 if the checked-in
artifacts in ``contracts/build`` are stale against the sources (the test suite runs the same check).

How it works: every source file reachable from ``contracts/src`` (including OpenZeppelin files from
``contracts/node_modules``) is read here and put into one solc Standard JSON input, so the compiler needs no
import callback. That input is fed to the pinned npm ``solc`` (solc-js, a WebAssembly build of solc; no
native solc is needed). ``contracts/build/manifest.json`` records the SHA-256 of that exact input, so
staleness is a pure function of the sources, the settings and the compiler version.

Invariants:
- artifacts are written only for contracts defined under ``contracts/src`` outside ``lib/`` (libraries with
  internal functions only are inlined and have no artifact);
- the Standard JSON input is canonical (sorted keys, sorted sources), so its hash is reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from derot.chain.artifacts import BUILD_DIR, CONTRACTS_DIR, MANIFEST, load_artifact  # noqa: F401 (re-export)
from derot.errors import DerotError

SRC_DIR = CONTRACTS_DIR / "src"
NODE_MODULES = CONTRACTS_DIR / "node_modules"
SOLCJS = NODE_MODULES / "solc" / "solc.js"

SETTINGS: dict = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "prague",
    "viaIR": True,
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"]}
    },
}

_IMPORT_RE = re.compile(r"""^\s*import\s+(?:[^"';]*?\s+from\s+)?["']([^"']+)["']\s*;""", re.MULTILINE)


class CompileError(DerotError, RuntimeError):
    """solc reported errors, or a source/import could not be found."""

    reason = "compile_failed"


@dataclass(frozen=True)
class BuildInput:
    """The canonical Standard JSON input and its SHA-256."""

    standard_json: str
    sha256: str
    solc_version: str


def _resolve(unit: str, path: str) -> str:
    """Solidity import resolution: relative paths against the importing unit's directory, others as-is."""
    if path.startswith("./") or path.startswith("../"):
        return posixpath.normpath(posixpath.join(posixpath.dirname(unit), path))
    return path


def _read_unit(unit: str) -> str:
    if unit.startswith("src/"):
        file = CONTRACTS_DIR / unit
    else:
        file = NODE_MODULES / unit
    if not file.is_file():
        raise CompileError(f"cannot find source unit {unit!r} (looked at {file})")
    return file.read_text()


def collect_sources() -> dict[str, str]:
    """All source units reachable from ``contracts/src``, keyed by unit name (``src/...``, ``@openzeppelin/...``)."""
    roots = sorted("src/" + p.relative_to(SRC_DIR).as_posix() for p in SRC_DIR.rglob("*.sol"))
    sources: dict[str, str] = {}
    todo = list(roots)
    while todo:
        unit = todo.pop()
        if unit in sources:
            continue
        text = _read_unit(unit)
        sources[unit] = text
        todo.extend(_resolve(unit, imp) for imp in _IMPORT_RE.findall(text))
    return dict(sorted(sources.items()))


def solc_version() -> str:
    package = json.loads((NODE_MODULES / "solc" / "package.json").read_text())
    return package["version"]


def build_input() -> BuildInput:
    sources = collect_sources()
    document = {
        "language": "Solidity",
        "sources": {unit: {"content": text} for unit, text in sources.items()},
        "settings": SETTINGS,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    version = solc_version()
    digest = hashlib.sha256(f"solc-js {version}\n".encode() + text.encode()).hexdigest()
    return BuildInput(text, digest, version)


def run_solc(build: BuildInput) -> dict:
    """Run solc-js on the Standard JSON input; raise CompileError on any error diagnostic."""
    if not SOLCJS.is_file():
        raise CompileError(f"solc-js not installed at {SOLCJS}; run `make npm`")
    # solc-js reads stdin with readFileSync(0), which fails with EAGAIN on a pipe, and exits before a large
    # stdout pipe is drained: give it regular files for both.
    with tempfile.TemporaryFile("w+") as stdin, tempfile.TemporaryFile("w+") as stdout:
        stdin.write(build.standard_json)
        stdin.seek(0)
        proc = subprocess.run(
            ["node", str(SOLCJS), "--standard-json"],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            cwd=CONTRACTS_DIR,
            check=False,
        )
        stdout.seek(0)
        text = stdout.read()
    if proc.returncode != 0:
        raise CompileError(f"solc-js exited {proc.returncode}: {proc.stderr.strip()}")
    # solc-js may print warnings about the environment before the JSON document
    output = json.loads(text[text.index("{") :])
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(e.get("formattedMessage", e.get("message", "?")) for e in errors))
    return output


def artifacts_from(output: dict, version: str) -> dict[str, dict]:
    """Contract name → artifact dict, for contracts defined under src/ (not src/lib/)."""
    artifacts: dict[str, dict] = {}
    for unit, contracts in sorted(output.get("contracts", {}).items()):
        if not unit.startswith("src/") or unit.startswith("src/lib/"):
            continue
        for name, data in sorted(contracts.items()):
            if name in artifacts:
                raise CompileError(f"two contracts named {name}")
            artifacts[name] = {
                "contractName": name,
                "sourceName": unit,
                "compiler": f"solc-js {version}",
                "abi": data["abi"],
                "bytecode": "0x" + data["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
                "methodIdentifiers": data["evm"].get("methodIdentifiers", {}),
            }
    return artifacts


def _artifact_text(artifact: dict) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def compile_contracts() -> dict[str, dict]:
    """Compile and write ``contracts/build``; returns the artifacts."""
    build = build_input()
    artifacts = artifacts_from(run_solc(build), build.solc_version)
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    for old in BUILD_DIR.glob("*.json"):
        old.unlink()
    files = {}
    for name, artifact in artifacts.items():
        text = _artifact_text(artifact)
        (BUILD_DIR / f"{name}.json").write_text(text)
        files[f"{name}.json"] = hashlib.sha256(text.encode()).hexdigest()
    manifest = {
        "compiler": f"solc-js {build.solc_version}",
        "settings": SETTINGS,
        "input_sha256": build.sha256,
        "artifacts_sha256": files,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return artifacts


def staleness() -> list[str]:
    """Reasons the checked-in artifacts do not match the sources (empty list = fresh)."""
    if not MANIFEST.is_file():
        return [f"{MANIFEST} is missing"]
    manifest = json.loads(MANIFEST.read_text())
    problems = []
    build = build_input()
    if manifest.get("input_sha256") != build.sha256:
        problems.append("sources, settings or compiler version changed since the artifacts were built")
    recorded = manifest.get("artifacts_sha256", {})
    present = {p.name for p in BUILD_DIR.glob("*.json") if p.name != MANIFEST.name}
    for name in sorted(present ^ set(recorded)):
        problems.append(f"artifact set differs from the manifest: {name}")
    for name, digest in sorted(recorded.items()):
        file = BUILD_DIR / name
        if file.is_file() and hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            problems.append(f"{name} was modified after it was built")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m derot.devnet.compile", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that contracts/build is fresh")
    args = parser.parse_args(argv)
    if args.check:
        problems = staleness()
        for problem in problems:
            print(f"stale: {problem}", file=sys.stderr)
        if not problems:
            print("contracts/build is up to date")
        return 1 if problems else 0
    try:
        artifacts = compile_contracts()
    except CompileError as exc:
        print(f"compile failed:\n{exc}", file=sys.stderr)
        return 1
    for name, artifact in artifacts.items():
        size = (len(artifact["deployedBytecode"]) - 2) // 2
        print(f"{name:28s} {size:6d} bytes runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
