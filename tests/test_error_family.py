"""One error family: every exception class derot defines derives from :class:`derot.errors.DerotError`, and has
a non-empty snake_case ``reason`` (a class attribute, or one set per instance by its constructor)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import derot
from derot.errors import DerotError

#: modules that need a device or an optional tool at import time are still imported; none is skipped
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def derot_exceptions() -> dict[str, type]:
    found = {}
    for info in pkgutil.walk_packages(derot.__path__, "derot."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_derot_exception_is_a_derot_error():
    found = derot_exceptions()
    assert len(found) >= 35  # the roots and their subclasses
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, DerotError))
    assert outside == []


def test_class_level_reasons_are_snake_case_codes():
    for name, cls in derot_exceptions().items():
        reason = cls.__dict__.get("reason")
        if isinstance(reason, str):
            assert SNAKE.match(reason), (name, reason)
