"""The compiled contract artifacts (ABI and bytecode) the runtime reads; compiling is devnet tooling
(:mod:`derot.devnet.compile`).

``contracts/build`` in the repository is the checked-in source of truth. A built wheel carries a copy
as package data (``derot/chain/contracts/*.json``, written by setup.py's build step), so an installed
package never looks outside itself; a source checkout (editable install) reads ``contracts/build``.
"""

from __future__ import annotations

import json
from pathlib import Path

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
BUILD_DIR = CONTRACTS_DIR / "build"
MANIFEST = BUILD_DIR / "manifest.json"
#: where a built wheel keeps its copy of contracts/build (absent in a source checkout)
PACKAGED_DIR = Path(__file__).resolve().parent / "contracts"


def artifact_dir() -> Path:
    """The directory the artifacts are read from: the packaged copy, else the checkout's contracts/build."""
    if (PACKAGED_DIR / "manifest.json").is_file():
        return PACKAGED_DIR
    return BUILD_DIR


def artifact_names() -> list[str]:
    """Every contract with an artifact, sorted (``manifest.json`` is not one)."""
    return sorted(f.stem for f in artifact_dir().glob("*.json") if f.name != "manifest.json")


def load_artifact(name: str) -> dict:
    """The artifact of contract ``name`` (``abi``, ``bytecode``, ...); a fresh dict on every call."""
    file = artifact_dir() / f"{name}.json"
    if not file.is_file():
        raise FileNotFoundError(f"no artifact for {name} in {file.parent}; in a source checkout run "
                                "`python -m derot.devnet.compile`")
    return json.loads(file.read_text())
