"""Every public class, function and method of the SDK modules has a docstring (they are its reference)."""

from __future__ import annotations

import importlib
import inspect

import pytest

SDK = ["derot.app", "derot.app.sdk", "derot.app.client", "derot.app.api", "derot.app.relying", "derot.app.measure",
       "derot.app.settings", "derot.app.discovery", "derot.app.owner"]


def undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = [] if (module.__doc__ or "").strip() else [module_name]
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(f"{module_name}.{name}")
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member) and not (member.__doc__ or "").strip():
                    missing.append(f"{module_name}.{name}.{attr}")
    return missing


@pytest.mark.parametrize("module", SDK)
def test_public_sdk_names_are_documented(module):
    assert undocumented(module) == []


def test_the_check_sees_a_missing_docstring(tmp_path, monkeypatch):
    (tmp_path / "undoc_probe.py").write_text('"""m"""\nclass Thing:\n    def go(self):\n        return 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert undocumented("undoc_probe") == ["undoc_probe.Thing", "undoc_probe.Thing.go"]
