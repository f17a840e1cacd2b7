"""Protobuf/gRPC stubs generated from ``protocol/derot/v1/*.proto``.

The stubs are build products, never hand-edited and never committed. ``make proto`` generates them;
importing :func:`load` generates them on first use when they are missing or older than their source,
so an editable install works from any entry point (tests, CLI, benchmarks).
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_ROOT = PACKAGE_DIR.parent.parent / "protocol"
_lock = threading.Lock()


def _sources() -> list[Path]:
    return sorted((PROTO_ROOT / "derot" / "v1").glob("*.proto"))


def _is_stale() -> bool:
    for src in _sources():
        out = PACKAGE_DIR / "derot" / "v1" / (src.stem + "_pb2.py")
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            return True
    return False


def generate(force: bool = False) -> None:
    """Run grpc_tools.protoc over every .proto file into this package (idempotent)."""
    with _lock:
        if not force and not _is_stale():
            return
        from grpc_tools import protoc  # build-time dependency, imported only when generating
        import grpc_tools

        sources = _sources()
        if not sources:
            raise RuntimeError(f"no .proto files under {PROTO_ROOT}")
        include = Path(grpc_tools.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={PACKAGE_DIR}",
            f"--pyi_out={PACKAGE_DIR}",
            f"--grpc_python_out={PACKAGE_DIR}",
            *[str(s) for s in sources],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + ", ".join(s.name for s in sources))
        for d in (PACKAGE_DIR / "derot", PACKAGE_DIR / "derot" / "v1"):
            (d / "__init__.py").touch()
        _relocate_imports(PACKAGE_DIR / "derot" / "v1")


#: protoc writes ``from derot.v1 import x_pb2`` (from the .proto paths); the stubs live inside this
#: package, whose own import name is ``derot``, so their sibling imports are rewritten to it.
_GENERATED_PREFIX = "from derot.v1 import"
_PACKAGED_PREFIX = "from derot._proto.derot.v1 import"


def _relocate_imports(directory: Path) -> None:
    for file in directory.glob("*.py*"):
        text = file.read_text()
        if _GENERATED_PREFIX in text:
            file.write_text(text.replace(_GENERATED_PREFIX, _PACKAGED_PREFIX))


_loaded: dict = {}


def load(name: str):
    """Import a generated module, e.g. ``load("dkg_pb2")`` → ``derot._proto.derot.v1.dkg_pb2``.

    The staleness check (a glob and stats) runs on a module's first load only: hot paths call this
    per request, and a module already imported would not be re-imported anyway."""
    module = _loaded.get(name)
    if module is None:
        generate()
        module = _loaded[name] = importlib.import_module(f"derot._proto.derot.v1.{name}")
    return module
