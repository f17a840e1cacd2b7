"""Structural rules of the code base (issue 10), checked mechanically on the source tree:

- no module of the ``derot`` package over 600 lines, no function over 80 (generated ``_proto`` stubs aside);
- no ``getattr(exc, "reason", ...)`` / ``hasattr(exc, "diagnostics")`` glue: every derot error is a
  :class:`derot.errors.DerotError` with a ``reason``, so code tests ``isinstance`` and reads ``exc.reason``;
- every ``docs/<name>.md`` a docstring, comment or doc cites exists, and nothing cites a ``DESIGN.md`` that
  is not in the repository;
- ``derot.limits`` is the one place for the bounds the issue found disagreeing (``MAX_CONTEXT``,
  ``CLOCK_SKEW``): no module defines its own.

Each check prints what it measured, so a failure names the offending file and line.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from derot.attest.policy import RequestFresh
from derot.crypto import kd
from derot.limits import LIMITS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "node"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_proto" not in p.relative_to(PACKAGE).parts)


def test_no_module_over_600_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in modules()}
    assert len(sizes) > 100  # the walk found the package
    print("largest:", sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_over_80_lines():
    long, count = [], 0
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count += 1
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    print(count, "functions")
    assert count > 1000 and long == []


def _glue(tree: ast.AST) -> list[int]:
    """Lines calling ``getattr(x, "reason", ...)`` or ``hasattr(x, "reason"|"diagnostics")``."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in ("reason", "diagnostics")):
            found.append(node.lineno)
    return found


def test_no_reason_glue_outside_the_error_family():
    assert _glue(ast.parse('r = getattr(exc, "reason", "x")\nhasattr(e, "diagnostics")')) == [1, 2]  # control
    glue = {str(p.relative_to(ROOT)): lines for p in modules() if (lines := _glue(ast.parse(p.read_text())))}
    assert glue == {}


def _texts() -> list[Path]:
    sources = [*modules(), *(ROOT / "tests").rglob("*.py"), *(ROOT / "docs").glob("*.md"),
               *(ROOT / "contracts" / "src").rglob("*.sol"), *(ROOT / "bench").rglob("*.py")]
    return [p for p in sources if p.is_file()]


def test_cited_docs_exist_and_no_design_md_outside_the_repository():
    cited, design_md = set(), []
    for path in _texts():
        text = path.read_text()
        cited |= set(re.findall(r"\bdocs/([a-z0-9_-]+\.md)", text))
        if path != Path(__file__).resolve():
            design_md += [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
                          for m in re.finditer(r"DESIGN\.md", text)]
    print("cited docs:", sorted(cited))
    assert "design.md" in cited
    assert sorted(name for name in cited if not (ROOT / "docs" / name).is_file()) == []
    assert design_md == []


def test_the_limits_the_issue_found_disagreeing_live_only_in_derot_limits():
    assert (LIMITS.max_context, LIMITS.max_clock_skew) == (1024, 30)
    pattern = re.compile(r"^\s*(MAX_CONTEXT|CLOCK_SKEW|MAX_SKEW)\s*[:=]", re.MULTILINE)
    defined = [str(p.relative_to(ROOT)) for p in modules() if pattern.search(p.read_text())]
    assert defined == []
    # and the readers agree with it: the policy's default skew, key derivation's context bound
    assert inspect.signature(RequestFresh).parameters["max_skew"].default == LIMITS.max_clock_skew
    kd.kd_message(bytes(32), 0, bytes(LIMITS.max_context))
    with pytest.raises(ValueError, match="context longer"):
        kd.kd_message(bytes(32), 0, bytes(LIMITS.max_context + 1))


def _devnet_imports(tree: ast.Module) -> list[tuple[int, bool]]:
    """(line, at module level) of every import of derot.devnet in ``tree``."""
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        if any(n == "derot.devnet" or n.startswith("derot.devnet.") for n in names):
            found.append((node.lineno, id(node) in top))
    return found


def test_only_devnet_cli_commands_import_devnet_code_and_only_inside_handlers():
    """Statically: outside derot.devnet, only derot.cli imports it, never at module level (the dynamic check of
    ``derot node run`` is tests/cli/test_runtime_imports.py)."""
    assert _devnet_imports(ast.parse("import derot.devnet.anvil\ndef f():\n    from derot.devnet import network")) \
        == [(1, True), (3, False)]  # control
    outside_cli, top_level = [], []
    for path in modules():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "devnet":
            continue
        for line, at_top in _devnet_imports(ast.parse(path.read_text())):
            if at_top:
                top_level.append(f"{rel}:{line}")
            if rel.parts[0] != "cli":
                outside_cli.append(f"{rel}:{line}")
    assert (outside_cli, top_level) == ([], [])
