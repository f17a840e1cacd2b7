"""`derot demo crypto` runs end to end and reports the invariants it demonstrates."""

import subprocess
import sys


def test_crypto_demo_runs_and_keeps_keys_across_reshare():
    out = subprocess.run(
        [sys.executable, "-m", "derot.cli.main", "demo", "crypto"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "group keys unchanged: True" in out.stdout
    assert "same app key after reshare: True" in out.stdout
    assert "excluded bad share" in out.stdout
