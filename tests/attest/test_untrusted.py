"""Bounded parsing of untrusted input (issue: the node under attack, finding 1).

The crash this guards against kills the interpreter, so the decisive checks run in a subprocess:
a segfault there fails the test instead of taking pytest down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from derot import untrusted
from derot.limits import LIMITS
from derot.attest.collateral import Collateral
from derot.attest.errors import CollateralError

BOMB = "[" * 100_000 + "]" * 100_000


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_nested_collateral_after_py_ecc_import_is_refused_not_a_crash():
    # py_ecc (imported by eth_account, which the node imports) raises the recursion limit to 100000
    proc = _run("""
        import sys
        import derot.service.node  # the node's whole import graph, py_ecc included
        from derot.attest.collateral import Collateral
        from derot.attest.errors import CollateralError
        bomb = "[" * 100000 + "]" * 100000
        for text in (bomb, '{"tcb_info": "' + bomb + '"}', '{"a":' * 50000 + '1' + '}' * 50000):
            try:
                Collateral.from_json(text)
            except CollateralError as exc:
                assert "nests" in str(exc) or "lacks" in str(exc), exc
        print("limit", sys.getrecursionlimit())
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "limit 1000" in proc.stdout


def test_unbounded_stdlib_json_would_crash_in_the_same_setting():
    """The attack is real: without the bound, the same input kills the interpreter (or hits the limit)."""
    proc = _run("""
        import json, sys
        import py_ecc  # raises the recursion limit, as in the node
        json.loads("[" * 100000 + "]" * 100000)
    """)
    assert proc.returncode != 0


def test_json_depth_ignores_brackets_in_strings():
    assert untrusted.json_depth('{"a": "[[[[{{{{", "b": [[1]]}') == 3
    assert untrusted.json_depth('"\\"[[["') == 0


@pytest.mark.parametrize("text,reason", [
    (BOMB, "nests"),
    ("x" * (LIMITS.max_json_bytes + 1), "over the limit"),
    ("{", "not JSON"),
])
def test_json_loads_refuses_with_a_named_reason(text, reason):
    with pytest.raises(untrusted.UntrustedInputError, match=reason) as info:
        untrusted.json_loads(text, what="test")
    assert info.value.reason == "malformed_request"


def test_collateral_refuses_deep_nesting_in_inner_documents():
    doc = {k: "x" for k in ("pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain",
                            "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature")}
    import json
    doc["tcb_info"] = "[" * 5000 + "]" * 5000
    with pytest.raises(CollateralError, match="nests"):
        Collateral.from_json(json.dumps(doc))


def test_der_depth_bound():
    leaf = bytes([0x04, 0x01, 0xAA])
    value = leaf  # wrapped in 40 SEQUENCEs
    for _ in range(40):
        n = len(value)
        header = bytes([0x30, n]) if n < 128 else bytes([0x30, 0x82]) + n.to_bytes(2, "big")
        value = header + value
    with pytest.raises(untrusted.UntrustedInputError, match="nests"):
        untrusted.der_check_depth(value, what="test")
    shallow = leaf
    for _ in range(5):
        shallow = bytes([0x30, len(shallow)]) + shallow
    untrusted.der_check_depth(shallow, what="test")
    with pytest.raises(untrusted.UntrustedInputError, match="overruns"):
        untrusted.der_check_depth(bytes([0x30, 0x05, 0x04, 0x01]), what="test")
