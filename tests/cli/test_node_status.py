"""What ``derot node status`` reads from a node's metrics endpoint: the gauges and the per-peer share verdicts.

Against a real Prometheus HTTP endpoint serving the node's own registry (``derot.service.metrics.Metrics``).
The whole command against running node processes is in tests/e2e/test_operations.py.
"""

from __future__ import annotations

from derot.cli import probe
from derot.cli.node_cmd import _print
from derot.service.metrics import Metrics


def test_status_reads_gauges_and_share_verdicts_per_peer():
    metrics = Metrics()
    port = metrics.serve("127.0.0.1:0")
    metrics.epoch.set(3)
    metrics.chain_lag.set(2)
    metrics.shares.labels("2", "accepted").inc(5)
    metrics.shares.labels("2", "bad_share").inc()
    metrics.shares.labels("10", "accepted").inc(4)
    seen = probe.gauges(f"127.0.0.1:{port}")
    assert seen["epoch"] == 3 and seen["chain_lag_blocks"] == 2
    assert seen["peers"] == {"2": {"accepted": 5, "bad_share": 1}, "10": {"accepted": 4}}


def test_a_node_without_peer_shares_yet(capsys):
    metrics = Metrics()
    port = metrics.serve("127.0.0.1:0")
    seen = probe.gauges(f"127.0.0.1:{port}")
    assert seen["peers"] == {}
    _print({"node": {"health": "SERVING", **seen}}, False)  # an empty section is printed as "none"
    out = capsys.readouterr().out
    assert "peers" in out and "none" in out


def test_an_unreachable_metrics_endpoint_is_named():
    assert probe.gauges("127.0.0.1:1")["error"].startswith("metrics unreachable")
