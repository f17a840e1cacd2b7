"""A built wheel works on its own: build it, install it into a fresh venv, use it from outside the checkout.

No network: the wheel is built without build isolation (this venv's setuptools and grpcio-tools), and
installed with ``--no-deps --no-index``. Its dependencies come from this venv's site-packages, added to the
fresh venv's path by a ``.pth`` line, which (unlike a site directory) does not run this venv's editable
finder, so ``derot`` can only be imported from the wheel. The check then proves:
- ``derot --help`` and ``derot --version`` run from the console script;
- the SDK imports, and the protobuf stubs and the contract artifacts load from inside the installed package;
- every module the run imported outside the wheel belongs to a distribution in the closure of the wheel's
  declared runtime requirements (extras excluded): nothing needed is undeclared; build-, test- and
  devnet-only packages, present in this venv, are hidden from the probe as they are absent for users;
- the test-only and devnet-only packages (py-ecc, grpcio-tools, amqtt, pytest) are not declared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib.metadata as md, json, sys
from pathlib import Path

class Absent:
    # build-, test- and devnet-only packages are installed in the test venv but not in a user's: hide them
    # (grpc imports grpc_tools opportunistically), so a runtime import of one fails here as it would there
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("grpc_tools", "amqtt", "pytest", "hypothesis"):
            raise ModuleNotFoundError(f"No module named {name!r} (not installed for users)", name=name)
        return None

sys.meta_path.insert(0, Absent())
import derot, derot.app, derot.app.sdk, derot.certs
from derot import _proto
from derot.app import DerotClient, AsyncDerotClient, verify_certificate, measurement_digest
from derot.chain import artifacts
from derot.chain.registry import Registry
from derot.attest.trust import TrustConfig
from derot.crypto import kd

package = Path(derot.__file__).parent
kd.TransportKey.generate()
TrustConfig.production_defaults()  # reads every pinned root from the package data
node_pb2 = _proto.load("node_pb2")
abi = artifacts.load_artifact("DerotRegistry")["abi"]
site = Path(sys.argv[1])
outside = sorted({m.split(".")[0] for m, mod in list(sys.modules.items())
                  if getattr(mod, "__file__", None) and Path(mod.__file__).is_relative_to(site)})
print(json.dumps({
    "package": str(package),
    "stubs": node_pb2.__file__,
    "artifacts": str(artifacts.artifact_dir()),
    "registry_functions": sum(1 for item in abi if item.get("type") == "function"),
    "protos": sorted(p.name for p in (package / "_proto" / "protocol" / "derot" / "v1").glob("*.proto")),
    "typed": (package / "py.typed").is_file(),
    "requires": md.requires("derot") or [],
    "outside": outside,
    "module_dists": {m: md.packages_distributions().get(m, []) for m in outside},
}))
"""


def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(requirements: list[str]) -> set[str]:
    """Distribution names reachable from ``requirements`` (markers evaluated here; extras not followed)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _canon(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend(Requirement(r) for r in (metadata.requires(req.name) or []))
        except metadata.PackageNotFoundError:
            pass
    return seen


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = tmp_path_factory.mktemp("build")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out),
         str(REPO)],
        capture_output=True, text=True, timeout=600, cwd=build,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("derot-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed, its dependencies visible from this venv."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                             "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env_dir


def _run(env_dir: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DEROT_"))}
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_the_wheel_carries_stubs_protos_artifacts_roots_and_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("derot/_proto/derot/v1/node_pb2.py", "derot/_proto/derot/v1/node_pb2_grpc.py",
                     "derot/_proto/protocol/derot/v1/node.proto", "derot/chain/contracts/DerotRegistry.json",
                     "derot/chain/contracts/manifest.json", "derot/attest/roots/intel_sgx_root_ca.der",
                     "derot/py.typed", "derot-0.1.0.dist-info/licenses/LICENSE"):
        assert required in names, required
    assert not any(n.startswith(("tests/", "contracts/", "protocol/", "node/")) for n in names)
    packaged = {n.rsplit("/", 1)[1] for n in names if n.startswith("derot/chain/contracts/")}
    assert packaged == {p.name for p in (REPO / "contracts" / "build").glob("*.json")}


@pytest.mark.slow
def test_the_installed_wheel_works_from_outside_the_checkout(installed, tmp_path):
    derot = installed / "bin" / "derot"
    helped = _run(installed, str(derot), "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "derot" in helped.stdout and "Traceback" not in helped.stderr
    version = _run(installed, str(derot), "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("derot "), version

    deps_site = sysconfig.get_path("purelib")
    probe = _run(installed, str(installed / "bin" / "python"), "-c", PROBE, deps_site, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    package = Path(seen["package"])
    assert package.is_relative_to(installed), seen["package"]
    assert Path(seen["stubs"]).is_relative_to(package)
    assert Path(seen["artifacts"]) == package / "chain" / "contracts"
    assert seen["registry_functions"] > 20
    assert seen["protos"] == sorted(p.name for p in (REPO / "protocol" / "derot" / "v1").glob("*.proto"))
    assert seen["typed"]

    runtime = [r for r in seen["requires"] if "extra ==" not in r]
    declared = {_canon(r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip()) for r in runtime}
    assert not declared & {"py-ecc", "grpcio-tools", "amqtt", "pytest", "hypothesis"}, declared
    closure = _closure(runtime)
    undeclared = {module: dists for module, dists in seen["module_dists"].items()
                  if dists and not any(_canon(d) in closure for d in dists)}
    assert not undeclared, f"imported but not in the declared requirements' closure: {undeclared}"
