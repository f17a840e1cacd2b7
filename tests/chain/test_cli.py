"""`derot gov` as a DAO member uses it, against the session anvil."""

from __future__ import annotations

import json
import re

import pytest

from derot.devnet.anvil import mine, warp
from derot.chain.types import RevocationKind
from derot.cli.gov_view import short_ids
from derot.cli.main import main

FMSPC = "00906ed50000"


@pytest.fixture
def gov_cli(chain, tmp_path, monkeypatch, capsys):
    path = tmp_path / "deployment.json"
    chain.deployment.save(path)
    monkeypatch.setenv("DEROT_RPC", chain.anvil.url)
    monkeypatch.setenv("DEROT_DEPLOYMENT", str(path))

    def run(*argv, key=None):
        if key is None:
            monkeypatch.delenv("DEROT_KEY", raising=False)
        else:
            monkeypatch.setenv("DEROT_KEY", key.key.hex())
        code = main(["gov", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_propose_vote_queue_execute_from_the_cli(chain, gov_cli):
    code, out, err = gov_cli("propose", "-m", "Revoke a leaked FMSPC\n\nDetails.", "revoke-fmspc", FMSPC,
                             "+", "set-tcb-floor", "tdx", "up-to-date", key=chain.whale)
    assert code == 0, err
    assert "1. Revoke FMSPC 00906ed50000" in out and "2. Set the TCB floor of tdx to up-to-date" in out
    pid = re.search(r"id (\d+)", out).group(1)
    assert chain.whale.key.hex() not in out + err  # never print keys
    mine(chain.w3, chain.gov.voting_delay() + 1)
    code, out, err = gov_cli("vote", pid, "for", "--reason", "urgent", key=chain.whale)
    assert code == 0 and "voted for with 600 votes" in out, err
    assert gov_cli("vote", pid, "against", key=chain.mid)[0] == 0
    mine(chain.w3, chain.gov.voting_period())
    code, out, _ = gov_cli("show", pid)
    assert "state:    succeeded" in out and "votes:    for 600, against 360" in out
    assert "[council may also do this at once]" in out
    code, _, err = gov_cli("execute", pid, key=chain.stranger)
    assert code == 1 and "proposal is Succeeded (needs Queued)" in err  # not queued yet, decoded
    assert gov_cli("queue", pid, key=chain.stranger)[0] == 0
    warp(chain.w3, chain.gov.timelock_delay() + 1)
    code, out, err = gov_cli("execute", pid, key=chain.stranger)
    assert code == 0, err
    assert chain.registry.is_revoked(RevocationKind.FMSPC, bytes.fromhex(FMSPC))
    code, out, _ = gov_cli("list")
    assert "#" + format(int(pid), "064x")[:8] in out and "executed" in out  # short ids
    code, out, _ = gov_cli("state")
    assert "revoked FMSPCs: 00906ed50000" in out and "TCB floor up-to-date" in out  # one spelling


def test_council_revokes_from_the_cli_but_cannot_allow(chain, gov_cli):
    code, out, err = gov_cli("council", "revoke", "fmspc", FMSPC, key=chain.council)
    assert code == 0, err
    assert "council: Revoke FMSPC 00906ed50000" in out
    assert chain.registry.is_revoked(RevocationKind.FMSPC, bytes.fromhex(FMSPC))
    code, _, err = gov_cli("council", "allow-platform", "sgx", key=chain.council)
    assert code == 1 and "not a council action" in err
    code, _, err = gov_cli("council", "disable-platform", "tdx", key=chain.whale)
    assert code == 1 and "is not the SecurityCouncil" in err


def test_cli_errors_are_clear(chain, gov_cli):
    code, _, err = gov_cli("propose", "-m", "x", "revoke-fmspc", FMSPC)
    assert code == 1 and "no signing key" in err
    code, _, err = gov_cli("propose", "-m", "x", "revoke-fmspc", "0090", key=chain.whale)
    assert code == 1 and "FMSPC must be 6 bytes" in err
    code, _, err = gov_cli("propose", "-m", "x", "teleport", "now", key=chain.whale)
    assert code == 1 and "unknown action 'teleport'" in err
    code, _, err = gov_cli("propose", "-m", "x", "start-reshare", "-t", "1",
                           *(n.address for n in chain.nodes[:3]), key=chain.whale)
    assert code == 1 and "outside [floor(n/2)+1, n]" in err


def test_dry_run_and_set_threshold(chain, gov_cli):
    before = len(chain.gov.proposals())
    code, out, err = gov_cli("propose", "--dry-run", "-m", "raise t", "set-threshold", "3")
    assert code == 0, err
    assert "Reshare the group keys, unchanged, to 3 members, threshold 3" in out
    assert "proposal id would be" in out and len(chain.gov.proposals()) == before
    code, out, _ = gov_cli("actions")
    assert "revoke-fmspc" in out and "[council]" in out and "set-threshold" in out


def test_deploy_from_the_cli(chain, gov_cli, tmp_path):
    out = tmp_path / "new.json"
    code, stdout, err = gov_cli("deploy", "--devnet", "--holder", f"{chain.whale.address}:1000",
                                "--council", chain.council.address, "--out", str(out), key=chain.deployer)
    assert code == 0, err
    from derot.chain.deploy import Deployment
    from derot.chain.registry import Registry

    deployment = Deployment.load(out)
    assert deployment.registry in stdout and deployment.registry != chain.deployment.registry
    registry = Registry(chain.w3, deployment.registry)
    assert registry.owner() == deployment.timelock and registry.security_council() == chain.council.address
    assert deployment.params["voting_period"] == 20


def test_deploy_sets_governance_parameters_from_the_cli(chain, gov_cli, tmp_path):
    """Production parameters are defaults a deployment can set (issue 17): each flag reaches the contracts."""
    from derot.chain.deploy import Deployment
    from derot.chain.governance import Governance
    from derot.chain.registry import Registry

    out = tmp_path / "custom.json"
    code, _, err = gov_cli("deploy", "--holder", f"{chain.whale.address}:1000", "--council", chain.council.address,
                           "--out", str(out), "--voting-delay", "3", "--voting-period", "30", "--quorum-percent", "20",
                           "--proposal-threshold", "5", "--timelock-delay", "90", "--epoch-timeout", "50",
                           "--no-council-cancel", key=chain.deployer)
    assert code == 0, err
    deployment = Deployment.load(out)
    gov = Governance(chain.w3, deployment)
    governor = gov.governor.functions
    assert (gov.voting_delay(), gov.voting_period(), gov.timelock_delay()) == (3, 30, 90)
    assert governor.quorumNumerator().call() == 20 and governor.proposalThreshold().call() == 5
    assert Registry(chain.w3, deployment.registry).epoch_timeout() == 50
    timelock = gov.timelock.functions
    assert not timelock.hasRole(timelock.CANCELLER_ROLE().call(), chain.council.address).call()
    # without flags, a production deployment's council holds the veto and 1 % is needed to propose
    default = tmp_path / "default.json"
    code, _, err = gov_cli("deploy", "--holder", f"{chain.whale.address}:1000", "--council", chain.council.address,
                           "--out", str(default), key=chain.deployer)
    assert code == 0, err
    gov = Governance(chain.w3, Deployment.load(default))
    assert gov.voting_period() == 50400 and gov.governor.functions.proposalThreshold().call() == 10 * 10**18
    assert gov.timelock.functions.hasRole(timelock.CANCELLER_ROLE().call(), chain.council.address).call()
    code, _, err = gov_cli("deploy", "--holder", f"{chain.whale.address}:1000", "--quorum-percent", "0",
                           "--out", str(tmp_path / "bad.json"), key=chain.deployer)
    assert code != 0 and "--quorum-percent" in err


def test_council_vetoes_a_queued_proposal_from_the_cli(chain, gov_cli):
    from derot.chain import actions as A
    from derot.chain.governance import ProposalState, Support

    gov = chain.gov
    pid = gov.propose(chain.whale, [A.AllowPlatform(3)], "whale alone")
    mine(chain.w3, gov.voting_delay() + 1)
    gov.vote(chain.whale, pid, Support.FOR)
    mine(chain.w3, gov.voting_period() + 1)
    gov.queue(chain.whale, pid)
    code, _, err = gov_cli("council", "cancel", str(pid), key=chain.stranger)
    assert code == 1 and "AccessControlUnauthorizedAccount" in err
    short = short_ids([p.id for p in gov.proposals()])[pid]
    code, out, err = gov_cli("council", "cancel", short, "--json", key=chain.council)  # a short id, like every command
    assert code == 0, err
    assert json.loads(out)["id"] == str(pid) and json.loads(out)["state"] == "cancelled"
    assert gov.state(pid) is ProposalState.CANCELED
