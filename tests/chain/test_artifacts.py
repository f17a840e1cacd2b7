"""contracts/build must match contracts/src: the checked-in ABI and bytecode are what the sources compile to."""

from __future__ import annotations

import json
import shutil

import pytest

from derot.devnet import compile as build


def test_artifacts_are_fresh():
    problems = build.staleness()
    assert not problems, "run `python -m derot.devnet.compile`:\n" + "\n".join(problems)


def test_staleness_check_notices_a_changed_source(tmp_path, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(build.SRC_DIR, src)
    monkeypatch.setattr(build, "SRC_DIR", src)
    monkeypatch.setattr(build, "CONTRACTS_DIR", tmp_path)
    assert build.staleness() == []
    registry = src / "DerotRegistry.sol"
    registry.write_text(registry.read_text().replace("MAX_COMMITTEE = 255", "MAX_COMMITTEE = 254"))
    assert any("sources" in p for p in build.staleness())


def test_staleness_check_notices_an_edited_artifact(tmp_path, monkeypatch):
    out = tmp_path / "build"
    shutil.copytree(build.BUILD_DIR, out)
    monkeypatch.setattr(build, "BUILD_DIR", out)
    monkeypatch.setattr(build, "MANIFEST", out / "manifest.json")
    artifact = json.loads((out / "DerotRegistry.json").read_text())
    artifact["bytecode"] = artifact["bytecode"][:-2] + "00"
    (out / "DerotRegistry.json").write_text(json.dumps(artifact))
    assert build.staleness() == ["DerotRegistry.json was modified after it was built"]


def test_registry_fits_the_eip170_code_size_limit():
    runtime = build.load_artifact("DerotRegistry")["deployedBytecode"]
    assert (len(runtime) - 2) // 2 <= 24_576


@pytest.mark.slow
def test_recompiling_reproduces_the_checked_in_bytecode(solc_output):
    """Runs the pinned solc-js (~40 s with viaIR; started at collection, tests/conftest.py) and compares
    with contracts/build byte for byte."""
    fresh = build.artifacts_from(solc_output, build.solc_version())
    for name, artifact in fresh.items():
        checked_in = build.load_artifact(name)
        assert checked_in["bytecode"] == artifact["bytecode"], name
        assert checked_in["deployedBytecode"] == artifact["deployedBytecode"], name
        assert checked_in["abi"] == artifact["abi"], name
