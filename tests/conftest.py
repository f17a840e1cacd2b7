"""Shared pytest configuration. Fixtures for a subsystem live in that subsystem's conftest.py."""

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parent / "vectors"
#: the one test that runs solc-js (a single-threaded process for ~40 s on the reference VM)
RECOMPILE_TEST = "test_artifacts.py::test_recompiling_reproduces_the_checked_in_bytecode"
_solc: Future | None = None


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """Real evidence and roots copied from ../shared/vectors (attributions in each SOURCE.txt)."""
    return VECTORS


def pytest_collection_finish(session) -> None:
    """When the recompile test will run, start its solc-js run now, beside the other tests, on one core
    the mostly single-process tests leave free; the test then waits for the output."""
    global _solc
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker collects every test: solc starts in the test
        return
    if any(item.nodeid.endswith(RECOMPILE_TEST) for item in session.items):
        from derot.devnet import compile as build

        pool = ThreadPoolExecutor(1, thread_name_prefix="solc")
        _solc = pool.submit(lambda: build.run_solc(build.build_input()))
        pool.shutdown(wait=False)


@pytest.fixture
def solc_output() -> dict:
    """solc-js's Standard JSON output for contracts/src (started at collection when possible)."""
    if _solc is not None:
        return _solc.result()
    from derot.devnet import compile as build

    return build.run_solc(build.build_input())
