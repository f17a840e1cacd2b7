"""Governance shortcuts for anvil: pass a proposal by mining blocks and warping past the timelock."""

from __future__ import annotations

from collections.abc import Sequence

from derot.chain.actions import Action
from derot.chain.governance import Governance, Support
from derot.devnet.anvil import mine, warp


def pass_proposal(gov: Governance, proposal_id: int, voters: Sequence, executor=None) -> dict:
    """Vote FOR with every voter, then queue and execute, mining and warping anvil as needed.
    Returns the receipts of the votes, the queue and the execute."""
    w3 = gov.w3
    snapshot = gov.governor.functions.proposalSnapshot(proposal_id).call()
    if w3.eth.block_number <= snapshot:
        mine(w3, snapshot - w3.eth.block_number + 1)
    votes = [gov.vote(voter, proposal_id, Support.FOR) for voter in voters]
    deadline = gov.governor.functions.proposalDeadline(proposal_id).call()
    if w3.eth.block_number <= deadline:
        mine(w3, deadline - w3.eth.block_number + 1)
    caller = executor or voters[0]
    queued = gov.queue(caller, proposal_id)
    warp(w3, gov.timelock_delay() + 1)
    executed = gov.execute(caller, proposal_id)
    return {"votes": votes, "queue": queued, "execute": executed}


def enact(gov: Governance, proposer, actions: Sequence[Action], description: str, voters: Sequence) -> int:
    """Propose and pass ``actions`` on anvil; returns the proposal id."""
    proposal_id = gov.propose(proposer, actions, description)
    pass_proposal(gov, proposal_id, voters)
    return proposal_id
