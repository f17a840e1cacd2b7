"""Shared pytest configuration. Fixtures for a subsystem live in that subsystem's conftest.py."""

from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """Real evidence and roots copied from ../shared/vectors (attributions in each SOURCE.txt)."""
    return VECTORS
