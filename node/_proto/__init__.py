"""Protobuf/gRPC stubs generated from ``protocol/derot/v1/*.proto``.

The stubs are build products, never hand-edited and never committed.
- A built wheel carries them: setup.py's build step runs :func:`generate_into` (grpcio-tools is a
  build-time requirement only) and ships the .proto files beside them under ``protocol/``.
- A source checkout (editable install) generates them on first use, when they are missing or older than
  their source, so every entry point works (tests, CLI, benchmarks); ``make proto`` does it ahead of time.

This module imports only the standard library at module level: setup.py loads it by path.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: the .proto sources of a source checkout; absent in an installed wheel
CHECKOUT_PROTO_ROOT = PACKAGE_DIR.parent.parent / "protocol"
#: the .proto files a wheel ships (for readers and other languages' code generators)
PACKAGED_PROTO_ROOT = PACKAGE_DIR / "protocol"
PROTO_ROOT = CHECKOUT_PROTO_ROOT if (CHECKOUT_PROTO_ROOT / "derot").is_dir() else PACKAGED_PROTO_ROOT
_lock = threading.Lock()


def proto_sources(root: Path = PROTO_ROOT) -> list[Path]:
    """The ``derot/v1/*.proto`` files under ``root``, sorted."""
    return sorted((root / "derot" / "v1").glob("*.proto"))


def _is_stale() -> bool:
    if PROTO_ROOT != CHECKOUT_PROTO_ROOT:
        return False  # an installed package: its stubs were built with it, and grpcio-tools is absent
    for src in proto_sources():
        out = PACKAGE_DIR / "derot" / "v1" / (src.stem + "_pb2.py")
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            return True
    return False


def generate_into(proto_root: Path, out_dir: Path) -> list[Path]:
    """Run grpc_tools.protoc over every .proto file under ``proto_root`` into the package folder
    ``out_dir`` (``.../derot/_proto``); returns the sources. Imports grpcio-tools, a build-time dependency."""
    from grpc_tools import protoc
    import grpc_tools

    sources = proto_sources(proto_root)
    if not sources:
        raise RuntimeError(f"no .proto files under {proto_root}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(s) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + ", ".join(s.name for s in sources))
    for d in (out_dir / "derot", out_dir / "derot" / "v1"):
        (d / "__init__.py").touch()
    _relocate_imports(out_dir / "derot" / "v1")
    return sources


def generate(force: bool = False) -> None:
    """Regenerate this checkout's stubs when stale (or always with ``force``); idempotent."""
    with _lock:
        if PROTO_ROOT != CHECKOUT_PROTO_ROOT:
            return
        if not (force or _is_stale()):
            return
        try:
            import grpc_tools  # noqa: F401
        except ImportError:
            if not force and (PACKAGE_DIR / "derot" / "v1" / "node_pb2.py").exists():
                return  # older than protocol/ but usable; `make proto` (with grpcio-tools) refreshes them
            raise RuntimeError("the protobuf stubs are missing and grpcio-tools is not installed: "
                               "pip install grpcio-tools, then python -m derot._proto --force") from None
        generate_into(PROTO_ROOT, PACKAGE_DIR)


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
