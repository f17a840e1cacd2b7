"""Misbehaving nodes over the wire: a DKG dealer that cheats is disqualified and the DKG completes;
a node that returns corrupted shares is identified, excluded, and requests still succeed."""

from __future__ import annotations

import json

import pytest

from derot.chain.exclusions import ExclusionReason
from derot.constants import KeyType, Platform

pytestmark = pytest.mark.slow

CHEATER, CORRUPT = 3, 4


@pytest.fixture(scope="module")
def faulty_network(tmp_path_factory, request):
    start_devnet = request.getfixturevalue("devnet_starter")
    net = start_devnet("faulty", nodes=4, threshold=3, node_faults={CHEATER: "dkg_cheat", CORRUPT: "corrupt_shares"})
    yield net
    net.down()


def _dkg_finished(net, index):
    for line in (net.node_processes[index - 1].directory / "node.log").read_text().splitlines():
        if line.startswith("{") and '"msg":"dkg finished"' in line:
            return json.loads(line)
    return None


def test_cheating_dealer_is_disqualified_and_dkg_completes(faulty_network):
    registry = faulty_network.registry_client()
    epoch = registry.epoch(1)
    assert epoch.group_key_sig is not None  # the epoch activated
    # it activates on `threshold` reports: wait until every honest member serves it (it logs "dkg finished" first)
    faulty_network.wait_serving(1, [1, 2, 4], timeout=120)
    for honest in (1, 2, 4):
        finished = _dkg_finished(faulty_network, honest)
        assert finished is not None, f"node {honest} did not finish the DKG"
        assert CHEATER not in finished["qualified"]
        assert str(CHEATER) in finished["excluded"]
    # each honest member's report put the exclusion and its reason on-chain (EpochExclusions, per reporter)
    honest = {faulty_network.node_processes[i - 1].operator.lower() for i in (1, 2, 4)}
    reports = [r for r in registry.epoch_exclusions(epoch) if r.reporter.lower() in honest]
    assert reports, "no honest member reported its exclusions on-chain"
    for report in reports:
        assert report.excluded[CHEATER] is ExclusionReason.PROVEN_COMPLAINT, report


def test_corrupted_shares_are_excluded_and_requests_succeed(faulty_network, request):
    harness = request.getfixturevalue("harness_for")(faulty_network)
    app = harness.app(Platform.TDX, client=harness.client([1]))
    addresses, excluded = set(), set()
    for _ in range(20):  # node 4 is among the gateway's first 3 answers in most of them
        key = app.get_key()
        addresses.add(key.ethereum_address)
        excluded.update(key.excluded)
        assert CORRUPT not in key.contributors
    assert len(addresses) == 1
    assert excluded == {CORRUPT}
    cert = app.get_certificate(key.keys.public_key(KeyType.ED25519), KeyType.ED25519)
    assert CORRUPT not in cert.contributors
    # the gateway counted node 4's shares as invalid in its metrics
    import urllib.request

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{faulty_network.node_processes[0].metrics_port}/metrics").read()
    invalid = [l for l in metrics.decode().splitlines()
               if l.startswith("derot_peer_shares_total") and f'peer="{CORRUPT}"' in l and "invalid_share" in l]
    assert invalid and float(invalid[0].split()[-1]) >= 1


def test_node_restarted_mid_dkg_resumes_and_never_deals_twice(tmp_path):
    """Node 2 exits right after persisting its deal, before sending it (issue 12, finding 1: a restarted
    node used to deal a second bundle, be excluded as an equivocator, and have its share revealed). It is
    restarted; it resumes from its sealed session state, sends the bundle it already made, and everyone
    qualifies it."""
    import time

    from derot.devnet.network import Devnet
    from derot.devnet.processes import alive

    net = Devnet(tmp_path / "restart", progress=lambda _: None, nodes=4, threshold=3, phase_timeout=30.0,
                 node_faults={2: "dkg_crash_after_deal"})
    try:
        net.up(wait=False, timeout=120)
        crashed = net.node_processes[1]
        deadline = time.monotonic() + 120
        while alive(crashed.pid):
            assert time.monotonic() < deadline, "node 2 never reached its deal"
            time.sleep(0.2)
        net.start_node(crashed)
        net.wait_for_epoch(1, timeout=180)
        net.wait_serving(1, [1, 2, 3, 4], timeout=120)  # activation needs only `threshold` reports
        for index in (1, 2, 3, 4):
            finished = _dkg_finished(net, index)
            assert finished is not None, f"node {index} did not finish the DKG"
            assert finished["qualified"] == [1, 2, 3, 4] and finished["excluded"] == {}
        log = (crashed.directory / "node.log").read_text()
        starts = [json.loads(line) for line in log.splitlines() if '"msg":"dkg started"' in line]
        assert [s["resumed"] for s in starts] == [False, True]
    finally:
        net.down()
