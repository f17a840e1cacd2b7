"""`derot gov` output: --json on every command (options after the command too), short unique proposal ids,
ISO 8601 times with voting windows in blocks and time, decoded reverts, readable numbers, a warning for zero
voting power, the actions' summary in the description, hardware-id lengths, aborted epochs in `gov state`.
Against the session anvil."""

from __future__ import annotations

import json
import re

import pytest

from derot.chain import actions as A
from derot.cli.gov_view import short_ids, votes_text
from derot.cli.main import main
from derot.devnet.anvil import mine, warp

FMSPC = "00906ed50000"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def gov(chain, tmp_path, monkeypatch, capsys):
    path = tmp_path / "deployment.json"
    chain.deployment.save(path)
    monkeypatch.delenv("DEROT_RPC", raising=False)
    monkeypatch.delenv("DEROT_DEPLOYMENT", raising=False)
    monkeypatch.delenv("DEROT_KEY", raising=False)

    def run(*argv, key=None):
        extra = ["--rpc", chain.anvil.url, "--deployment", str(path)]  # after the command
        if key is not None:
            key_file = tmp_path / f"{key.address}.key"
            key_file.write_text(key.key.hex())
            extra += ["--key-file", str(key_file)]
        code = main(["gov", *argv, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    def run_json(*argv, key=None):
        code, out, err = run(*argv, "--json", key=key)
        assert code == 0, err
        return json.loads(out), err

    run.json = run_json
    return run


def test_numbers_and_short_ids_are_readable():
    assert votes_text(10**6 * 10**18) == "1,000,000"
    assert votes_text(25 * 10**17) == "2.5"
    ids = [int("ab" * 32, 16), int("ab" * 31 + "cd", 16), int("12" * 32, 16)]
    shorts = short_ids(ids)
    assert shorts[ids[2]] == "#12121212"
    assert len(set(shorts.values())) == 3 and all(len(s) > 9 for i, s in shorts.items() if i != ids[2])


def test_every_command_speaks_json_with_options_after_the_command(chain, gov):
    actions, _ = gov.json("actions")
    assert any(a["name"] == "revoke-fmspc" and a["council"] for a in actions["actions"])
    dry, _ = gov.json("propose", "--dry-run", "-m", "Revoke it", "revoke-fmspc", FMSPC)
    assert dry["dry_run"] and "Actions:\n1. Revoke FMSPC 00906ed50000" in dry["description"]

    proposed, _ = gov.json("propose", "-m", "Revoke a leaked FMSPC", "revoke-fmspc", FMSPC, key=chain.whale)
    short = proposed["short_id"]
    assert re.fullmatch(r"#[0-9a-f]{8,}", short)
    voting = proposed["voting"]
    assert ISO.match(voting["opens"]) and ISO.match(voting["closes"]) and voting["estimated"] is True
    assert voting["end_block"] > voting["start_block"]

    listed, _ = gov.json("list")
    assert short in [p["short_id"] for p in listed["proposals"]]
    mine(chain.w3, chain.gov.voting_delay() + 1)
    voted, _ = gov.json("vote", short, "for", key=chain.whale)
    assert voted["votes"] == "600" and voted["id"] == proposed["id"]
    gov.json("vote", short.lstrip("#"), "for", key=chain.mid)  # the prefix without '#'
    mine(chain.w3, chain.gov.voting_period())
    shown, _ = gov.json("show", short)
    assert shown["state"] == "succeeded" and shown["votes"]["for"] == "960"
    assert shown["voting"]["estimated"] is False and ISO.match(shown["voting"]["closes"])
    queued, _ = gov.json("queue", short, key=chain.stranger)
    assert ISO.match(queued["executable_from"])
    warp(chain.w3, chain.gov.timelock_delay() + 1)
    executed, _ = gov.json("execute", short, key=chain.stranger)
    assert executed["actions"] == ["Revoke FMSPC 00906ed50000"]
    on_chain = chain.gov.proposal(int(proposed["id"])).description
    assert on_chain.startswith("Revoke a leaked FMSPC\n\nActions:\n1. Revoke FMSPC 00906ed50000")

    state, _ = gov.json("state")
    assert FMSPC in state["revoked"]["fmspcs"] and state["platforms"]["tdx"]["enabled"]
    assert ISO.match(state["time"])
    delegated, _ = gov.json("delegate", key=chain.small)
    assert delegated["delegate_votes"] == "30"
    council, _ = gov.json("council", "revoke", "chip", "ab" * 64, key=chain.council)
    assert council["action"].startswith("Revoke SEV-SNP chip id")


def test_readme_council_command_with_the_key_file_last(chain, gov):
    code, out, err = gov("council", "revoke", "fmspc", FMSPC, key=chain.council)
    assert code == 0, err
    assert "council: Revoke FMSPC 00906ed50000" in out


def test_reverts_are_decoded(chain, gov):
    proposed, _ = gov.json("propose", "-m", "Revoke early", "revoke-fmspc", FMSPC, key=chain.whale)
    code, _, err = gov("queue", proposed["short_id"], key=chain.stranger)
    assert code == 1 and "proposal is Pending (needs Succeeded)" in err, err
    assert "GovernorUnexpectedProposalState" not in err and err.count("\n") == 1


def test_voting_with_zero_power_warns(chain, gov):
    proposed, _ = gov.json("propose", "-m", "Zero power", "revoke-fmspc", FMSPC, key=chain.whale)
    mine(chain.w3, chain.gov.voting_delay() + 1)
    code, out, err = gov("vote", proposed["short_id"], "for", key=chain.app_owner)  # holds no tokens
    assert code == 0, err
    assert "warning:" in err and "has 0 votes" in err and "with 0 votes" in out


@pytest.mark.parametrize("kind, expected, given", [("chip", "64", 63), ("gpu-fwid", "1..64", 65), ("fmspc", "6", 5),
                                                    ("ppid", "16", 15), ("pck", "32", 31), ("gpu-device", "1..32", 33)])
def test_hardware_ids_are_checked_for_length(chain, gov, kind, expected, given):
    code, _, err = gov("council", "revoke", kind, "ab" * given, key=chain.council)
    assert code == 1 and f"must be {expected} bytes, got {given}" in err, err


@pytest.mark.parametrize("kind, size", [("chip", 64), ("ppid", 16), ("gpu-device", 9)])
def test_an_all_zero_machine_id_is_refused(chain, gov, kind, size):
    """An all-zero id names no machine (a VLEK report's masked chip_id): revoking it is refused before sending."""
    code, _, err = gov("council", f"revoke-{kind}", "00" * size, key=chain.council)
    assert code == 1 and "must not be all zero" in err, err


def test_state_shows_an_aborted_epoch(chain, gov):
    members = [n.address for n in chain.nodes[:3]]
    chain.enact([A.StartReshare(tuple(members), 3)], "reshare to abort")
    code, _, err = gov("council", "abort-epoch", key=chain.council)
    assert code == 0, err
    code, out, err = gov("state")
    assert code == 0, err
    assert re.search(r"epoch \d+ aborted \(failed run\)", out), out
    state, _ = gov.json("state")
    assert state["aborted_epochs"]


# the per-machine ids of the real vectors (tests/attest/test_revocation.py), as `derot attest verify` prints them
MACHINE_IDS = {"ppid": "811dca2a26b952e85bb6448b097ba4fd",
               "pck": "ce2bee4d12e5ca320a3d14cf665de55eb5d59012253f37b5048e4061a5b260f5",
               "chip": "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc"
                       "15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6",
               "gpu-device": "412921ce551e4eeda3"}
STATE_KEYS = {"ppid": "intel_ppids", "pck": "intel_pck_certificates", "chip": "chip_ids", "gpu-device": "gpu_devices"}


def test_every_machine_kind_through_a_cli_proposal_and_the_council(chain, gov):
    """Issue 16: one proposal revoking one machine of each vendor (`revoke-ppid X + revoke-pck Y + ...`), voted,
    queued and executed with `derot gov`; then the council revokes another machine of each kind at once."""
    import os

    words = []
    for kind, ident in MACHINE_IDS.items():
        words += ["+", f"revoke-{kind}", ident] if words else [f"revoke-{kind}", ident]
    proposed, _ = gov.json("propose", "-m", "Revoke four compromised machines", *words, key=chain.whale)
    mine(chain.w3, chain.gov.voting_delay() + 1)
    gov.json("vote", proposed["short_id"], "for", key=chain.whale)
    gov.json("vote", proposed["short_id"], "for", key=chain.mid)
    mine(chain.w3, chain.gov.voting_period())
    gov.json("queue", proposed["short_id"], key=chain.stranger)
    warp(chain.w3, chain.gov.timelock_delay() + 1)
    executed, _ = gov.json("execute", proposed["short_id"], key=chain.stranger)
    assert len(executed["actions"]) == 4
    council = {"ppid": os.urandom(16).hex(), "pck": os.urandom(32).hex(), "chip": os.urandom(64).hex(),
               "gpu-device": os.urandom(20).hex()}
    for kind, ident in council.items():
        code, out, err = gov("council", f"revoke-{kind}", ident, key=chain.council)
        assert code == 0 and out.startswith("council: Revoke"), err
    state, _ = gov.json("state")
    for kind in MACHINE_IDS:
        assert {MACHINE_IDS[kind], council[kind]} <= set(state["revoked"][STATE_KEYS[kind]]), kind
