"""The compiled contract artifacts (ABI and bytecode) the runtime reads; compiling is devnet tooling
(:mod:`derot.devnet.compile`). Artifacts are checked in under ``contracts/build``."""

from __future__ import annotations

import json
from pathlib import Path

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
BUILD_DIR = CONTRACTS_DIR / "build"
MANIFEST = BUILD_DIR / "manifest.json"


def load_artifact(name: str) -> dict:
    """The checked-in artifact of contract ``name`` (``abi``, ``bytecode``, ...)."""
    file = BUILD_DIR / f"{name}.json"
    if not file.is_file():
        raise FileNotFoundError(f"no artifact for {name}; run `python -m derot.devnet.compile`")
    return json.loads(file.read_text())
