"""The node runtime loads no devnet tooling: ``derot node run`` (up to reading its config) imports nothing from
``derot.devnet`` and no anvil or solc code. Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
from derot.cli.main import main
try:
    main(["node", "run", "--config", "/nonexistent/derot-node.toml"])
except SystemExit:
    pass
except Exception:
    pass
import derot.service.node, derot.service.mqtt, derot.service.setup  # the whole runtime graph
EXTRA
names = sorted(sys.modules)
print(json.dumps({
    "devnet": [n for n in names if n == "derot.devnet" or n.startswith("derot.devnet.")],
    "toolchain": [n for n in names if any(w in n.lower() for w in ("anvil", "solc", "amqtt"))],
    "loaded_node": "derot.service.node" in names,
}))
"""


def probe(extra: str = "") -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE.replace("EXTRA", extra)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_node_run_imports_no_devnet_anvil_or_solc_code():
    assert probe() == {"devnet": [], "toolchain": [], "loaded_node": True}


def test_the_probe_sees_devnet_code_when_it_is_imported():
    """Control: the same probe reports devnet tooling once something imports it."""
    seen = probe("import derot.devnet.broker, derot.devnet.anvil")
    assert "derot.devnet.broker" in seen["devnet"] and any("anvil" in n for n in seen["toolchain"])
