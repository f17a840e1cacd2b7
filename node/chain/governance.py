"""Proposals through the DerotGovernor: propose → vote → queue → execute, and readable summaries.

``Governance(w3, deployment)`` drives the OpenZeppelin Governor the way any DAO tool would: a proposal is
(targets, values, calldatas, description); its id is ``hashProposal``; ``queue`` and ``execute`` need the
same four values, which are recovered from the ``ProposalCreated`` event. Actions are the typed values of
:mod:`derot.chain.actions`, so a proposal's summary lists exactly what the calldata will do.

``derot.devnet.governance.pass_proposal`` pushes a proposal through on anvil (devnets, demos, tests).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils import keccak, to_checksum_address
from web3 import Web3

from derot.chain.actions import Action, ActionError, decode_action
from derot.chain.artifacts import load_artifact
from derot.chain.deploy import Deployment
from derot.chain.registry import Registry
from derot.chain.tx import send


class ProposalState(enum.IntEnum):
    """OpenZeppelin IGovernor.ProposalState."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXPIRED = 6
    EXECUTED = 7


class Support(enum.IntEnum):
    """GovernorCountingSimple vote types."""

    AGAINST = 0
    FOR = 1
    ABSTAIN = 2


@dataclass(frozen=True)
class Proposal:
    """A proposal as recorded by ProposalCreated plus its live state."""

    id: int
    proposer: str
    description: str
    targets: tuple[str, ...]
    values: tuple[int, ...]
    calldatas: tuple[bytes, ...]
    actions: tuple[Action | str, ...]  # decoded action, or a description of an undecodable call
    vote_start: int
    vote_end: int
    created_block: int
    state: ProposalState
    votes_for: int
    votes_against: int
    votes_abstain: int
    quorum: int
    eta: int  # timelock ETA (Unix time) once queued, else 0

    @property
    def description_hash(self) -> bytes:
        return keccak(text=self.description)

    def summary(self, unit: int = 10**18) -> str:
        """Multi-line human summary."""
        lines = [
            f"proposal {self.id}",
            f"  state:    {self.state.name.lower()}",
            f"  proposer: {self.proposer}",
            f"  title:    {self.description.splitlines()[0] if self.description else '(none)'}",
            f"  voting:   blocks {self.vote_start}..{self.vote_end}",
            f"  votes:    for {_fmt(self.votes_for, unit)}, against {_fmt(self.votes_against, unit)}, "
            f"abstain {_fmt(self.votes_abstain, unit)} (quorum {_fmt(self.quorum, unit)})",
        ]
        if self.eta:
            lines.append(f"  eta:      {self.eta} (Unix time)")
        lines.append("  actions:")
        for i, action in enumerate(self.actions, start=1):
            text = action.summary() if isinstance(action, Action) else action
            council = " [council may also do this at once]" if isinstance(action, Action) and action.council_allowed else ""
            lines.append(f"    {i}. {text}{council}")
        return "\n".join(lines)


def _fmt(amount: int, unit: int) -> str:
    if unit <= 1:
        return str(amount)
    whole, frac = divmod(amount, unit)
    return f"{whole}" if not frac else f"{amount / unit:.4f}".rstrip("0")


class Governance:
    """The Governor, token, timelock and registry of one deployment."""

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.registry = Registry(w3, deployment.registry)
        self.governor = w3.eth.contract(address=deployment.governor, abi=load_artifact("DerotGovernor")["abi"])
        self.token = w3.eth.contract(address=deployment.token, abi=load_artifact("DerotToken")["abi"])
        self.timelock = w3.eth.contract(address=deployment.timelock, abi=load_artifact("DerotTimelock")["abi"])

    # settings -----------------------------------------------------------------------------------
    def voting_delay(self) -> int:
        return self.governor.functions.votingDelay().call()

    def voting_period(self) -> int:
        return self.governor.functions.votingPeriod().call()

    def timelock_delay(self) -> int:
        return self.timelock.functions.getMinDelay().call()

    def votes(self, account: str, block: int | None = None) -> int:
        if block is None:
            return self.token.functions.getVotes(to_checksum_address(account)).call()
        return self.token.functions.getPastVotes(to_checksum_address(account), block).call()

    def delegate(self, account, to: str | None = None):
        """Delegate ``account``'s voting power (to itself by default); needed before votes count."""
        target = to_checksum_address(to) if to else account.address
        return send(self.w3, account, self.token.functions.delegate(target), what="delegate votes")

    # lifecycle ----------------------------------------------------------------------------------
    def encode(self, actions: Sequence[Action]) -> tuple[list[str], list[int], list[bytes]]:
        targets, datas = [], []
        for action in actions:
            target, data = action.encode(self.registry)
            targets.append(target)
            datas.append(data)
        return targets, [0] * len(actions), datas

    def proposal_id(self, actions: Sequence[Action], description: str) -> int:
        targets, values, datas = self.encode(actions)
        return self.governor.functions.hashProposal(targets, values, datas, keccak(text=description)).call()

    def propose(self, account, actions: Sequence[Action], description: str) -> int:
        """Submit a proposal; returns its id."""
        if not actions:
            raise ActionError("a proposal needs at least one action")
        targets, values, datas = self.encode(actions)
        send(self.w3, account, self.governor.functions.propose(targets, values, datas, description), what="propose")
        return self.governor.functions.hashProposal(targets, values, datas, keccak(text=description)).call()

    def vote(self, account, proposal_id: int, support: Support = Support.FOR, reason: str = ""):
        fn = (
            self.governor.functions.castVoteWithReason(proposal_id, int(support), reason)
            if reason
            else self.governor.functions.castVote(proposal_id, int(support))
        )
        return send(self.w3, account, fn, what=f"vote {Support(support).name.lower()}")

    def queue(self, account, proposal_id: int):
        p = self.proposal(proposal_id)
        fn = self.governor.functions.queue(list(p.targets), list(p.values), list(p.calldatas), p.description_hash)
        return send(self.w3, account, fn, what="queue")

    def execute(self, account, proposal_id: int):
        p = self.proposal(proposal_id)
        fn = self.governor.functions.execute(list(p.targets), list(p.values), list(p.calldatas), p.description_hash)
        return send(self.w3, account, fn, what="execute")

    def state(self, proposal_id: int) -> ProposalState:
        return ProposalState(self.governor.functions.state(proposal_id).call())

    def timelock_operation(self, proposal_id: int) -> bytes:
        """The timelock operation id of a queued proposal (GovernorTimelockControl's salt is the governor's
        address, left-aligned, XOR the description hash)."""
        p = self.proposal(proposal_id)
        salt = bytes(a ^ b for a, b in zip(bytes.fromhex(self.governor.address[2:]) + bytes(12), p.description_hash))
        return bytes(self.timelock.functions.hashOperationBatch(
            list(p.targets), list(p.values), list(p.calldatas), bytes(32), salt).call())

    def council_cancel(self, council, proposal_id: int):
        """The SecurityCouncil vetoes a queued proposal during the timelock delay (its CANCELLER role). The
        timelock refuses it for a proposal that replaces the council or changes timelock roles."""
        operation = self.timelock_operation(proposal_id)
        return send(self.w3, council, self.timelock.functions.cancel(operation), what="council cancel")

    # reading proposals --------------------------------------------------------------------------
    def _created_events(self, proposal_id: int | None = None):
        events = self.governor.events.ProposalCreated().get_logs(
            from_block=self.deployment.deploy_block, to_block="latest"
        )
        if proposal_id is not None:
            events = [e for e in events if e["args"]["proposalId"] == proposal_id]
        return events

    def proposals(self) -> list[Proposal]:
        return [self._from_event(e) for e in self._created_events()]

    def proposal(self, proposal_id: int) -> Proposal:
        events = self._created_events(proposal_id)
        if not events:
            raise KeyError(f"no proposal {proposal_id}")
        return self._from_event(events[-1])

    def _from_event(self, event) -> Proposal:
        args = event["args"]
        pid = args["proposalId"]
        targets = tuple(args["targets"])
        datas = tuple(bytes(d) for d in args["calldatas"])
        actions: list[Action | str] = []
        for target, data in zip(targets, datas):
            try:
                actions.append(decode_action(self.registry, target, data))
            except ActionError as exc:
                actions.append(f"call {target} with 0x{data[:4].hex()}… ({exc})")
        against, for_, abstain = self.governor.functions.proposalVotes(pid).call()
        snapshot = args["voteStart"]
        head = self.w3.eth.block_number
        quorum = self.governor.functions.quorum(snapshot).call() if snapshot < head else 0
        return Proposal(
            id=pid,
            proposer=args["proposer"],
            description=args["description"],
            targets=targets,
            values=tuple(args["values"]),
            calldatas=datas,
            actions=tuple(actions),
            vote_start=args["voteStart"],
            vote_end=args["voteEnd"],
            created_block=event["blockNumber"],
            state=self.state(pid),
            votes_for=for_,
            votes_against=against,
            votes_abstain=abstain,
            quorum=quorum,
            eta=self.governor.functions.proposalEta(pid).call(),
        )
