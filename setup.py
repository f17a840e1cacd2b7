"""Package list for the node/ folder installed under the import name ``derot``, and the wheel's build step.

Everything else about the distribution is in pyproject.toml. ``build_py`` adds to a built wheel what a
source checkout finds beside node/:
- the protobuf/gRPC stubs, generated from ``protocol/`` with grpcio-tools (a build-time requirement only),
  plus the .proto files themselves under ``derot/_proto/protocol/``;
- the contract artifacts (ABI, bytecode) from ``contracts/build`` under ``derot/chain/contracts/``.
An editable install only generates the stubs into node/_proto: it reads ``protocol/`` and ``contracts/build``
in place.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _proto_module():
    """node/_proto/__init__.py, loaded by path (it imports only the standard library at module level)."""
    spec = importlib.util.spec_from_file_location("_derot_proto_build", ROOT / "node" / "_proto" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithGeneratedFiles(build_py):
    """``build_py`` plus the generated stubs, the .proto sources and the contract artifacts."""

    def run(self):
        super().run()
        proto_root = ROOT / "protocol"
        if getattr(self, "editable_mode", False):
            # an editable install reads protocol/ and contracts/build in place; its stubs go into node/_proto
            _proto_module().generate_into(proto_root, ROOT / "node" / "_proto")
            return
        package = Path(self.build_lib) / "derot"
        self._copy_tree(proto_root, package / "_proto" / "protocol", "*.proto")
        _proto_module().generate_into(proto_root, package / "_proto")
        artifacts = ROOT / "contracts" / "build"
        if not (artifacts / "manifest.json").is_file():
            raise RuntimeError(f"{artifacts} has no manifest.json: the contract artifacts are missing")
        self._copy_tree(artifacts, package / "chain" / "contracts", "*.json")

    @staticmethod
    def _copy_tree(source: Path, target: Path, pattern: str) -> None:
        files = sorted(source.rglob(pattern))
        if not files:
            raise RuntimeError(f"no {pattern} files under {source}")
        for file in files:
            out = target / file.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, out)


setup(
    package_dir={"derot": "node"},
    packages=["derot"] + [f"derot.{name}" for name in find_packages("node")],
    cmdclass={"build_py": BuildWithGeneratedFiles},
)
