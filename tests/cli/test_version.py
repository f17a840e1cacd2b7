"""``derot -V`` and ``derot --version`` print the installed version and exit 0."""

from __future__ import annotations

import subprocess
import sys

from derot import __version__


def test_short_and_long_version_flags():
    for flag in ("-V", "--version"):
        result = subprocess.run([sys.executable, "-m", "derot.cli.main", flag], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and result.stdout.strip() == f"derot {__version__}", (flag, result)
