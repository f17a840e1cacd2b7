"""Deploy the derot contracts and wire their roles.

``deploy(w3, deployer, params)`` creates, in order:
1. ``DerotToken`` (ERC20Votes): the whole supply minted to ``params.holders``;
2. ``DerotTimelock`` (min delay ``timelock_delay`` s), the deployer as temporary admin, anyone may execute;
3. ``DerotGovernor`` over the token and the timelock (delay/period in blocks, quorum fraction, threshold);
4. the Governor gets PROPOSER and CANCELLER on the timelock, and the SecurityCouncil gets CANCELLER too
   (``council_cancels``): it can stop a queued proposal during the timelock delay, never make one;
5. ``DerotRegistry`` owned by the deployer, with the SecurityCouncil; its epoch timeout is set, then the
   ``bootstrap`` actions are applied directly (devnet set-up: enable platforms, approve nodes, start the DKG);
6. registry ownership moves to the timelock, and the deployer renounces the timelock admin role.

After step 6 nobody but the Governor (through the timelock) can change the registry, and the council can
only restrict. ``Deployment`` is what clients need afterwards; it round-trips through a JSON file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eth_utils import to_checksum_address
from web3 import Web3

from derot.chain.artifacts import load_artifact
from derot.chain.tx import deploy_contract, deploy_contract_receipt, send

ZERO_ADDRESS = "0x" + "00" * 20
TOKEN_UNIT = 10**18


@dataclass(frozen=True)
class DeployParams:
    """Governance parameters. Block counts are blocks; ``timelock_delay`` is seconds."""

    holders: tuple[tuple[str, int], ...] = ()  # (address, amount in token base units)
    council: str | None = None
    voting_delay: int = 7200  # ~1 day of 12 s blocks
    voting_period: int = 50400  # ~1 week
    proposal_threshold: int = 0
    quorum_percent: int = 4
    timelock_delay: int = 2 * 24 * 3600
    token_name: str = "derot governance"
    token_symbol: str = "DEROT"
    bootstrap: tuple = ()  # derot.chain.actions.Action values, applied before ownership moves
    epoch_timeout: int = 7200  # blocks a pending DKG/reshare may take before anyone may expire it (~1 day)
    council_cancels: bool = True  # the SecurityCouncil holds the timelock's CANCELLER role

    @classmethod
    def production(cls, holders, council: str | None, **overrides) -> DeployParams:
        """Mainnet-like: 1 day voting delay, 1 week voting, 4% quorum, 2 days timelock, 1% to propose."""
        holders = tuple((to_checksum_address(a), int(n)) for a, n in holders)
        supply = sum(n for _, n in holders)
        return cls(holders=holders, council=council, **{"proposal_threshold": supply // 100, **overrides})

    @classmethod
    def devnet(cls, holders, council: str | None, **overrides) -> DeployParams:
        """Fast governance for devnets, demos and tests: 1 block delay, 20 blocks voting, 60 s timelock."""
        holders = tuple((to_checksum_address(a), int(n)) for a, n in holders)
        settings = dict(voting_delay=1, voting_period=20, quorum_percent=4, timelock_delay=60, epoch_timeout=600)
        settings.update(overrides)
        return cls(holders=holders, council=council, **settings)


@dataclass(frozen=True)
class Deployment:
    """Addresses of one derot deployment; ``deploy_block`` is the registry's creation block, where
    followers and proposal listings start reading events."""

    chain_id: int
    registry: str
    governor: str
    timelock: str
    token: str
    deploy_block: int
    params: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> Deployment:
        return cls.from_json(Path(path).read_text())


def deploy(w3: Web3, deployer, params: DeployParams, *, self_delegate: Sequence = ()) -> Deployment:
    """Deploy and wire everything (see the module docstring). ``self_delegate`` holds token-holder accounts
    (LocalAccount) that delegate their votes to themselves right away, as devnets and tests need."""
    holders = [to_checksum_address(a) for a, _ in params.holders]
    amounts = [int(n) for _, n in params.holders]
    token = deploy_contract(
        w3, deployer, load_artifact("DerotToken"), params.token_name, params.token_symbol, holders, amounts
    )
    timelock = deploy_contract(
        w3, deployer, load_artifact("DerotTimelock"), params.timelock_delay, [], [ZERO_ADDRESS], deployer.address
    )
    governor = deploy_contract(
        w3,
        deployer,
        load_artifact("DerotGovernor"),
        token.address,
        timelock.address,
        params.voting_delay,
        params.voting_period,
        params.proposal_threshold,
        params.quorum_percent,
    )
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):
        role_id = getattr(timelock.functions, role)().call()
        send(w3, deployer, timelock.functions.grantRole(role_id, governor.address), what=f"grant {role}")

    council = to_checksum_address(params.council) if params.council else ZERO_ADDRESS
    if params.council_cancels and params.council:
        role_id = timelock.functions.CANCELLER_ROLE().call()
        send(w3, deployer, timelock.functions.grantRole(role_id, council), what="grant CANCELLER to the council")
    registry, receipt = deploy_contract_receipt(
        w3, deployer, load_artifact("DerotRegistry"), deployer.address, council
    )
    from derot.chain.actions import SetEpochTimeout
    from derot.chain.registry import Registry

    Registry(w3, registry.address).apply(deployer, (SetEpochTimeout(params.epoch_timeout), *params.bootstrap))
    send(w3, deployer, registry.functions.transferOwnership(timelock.address), what="registry → timelock")
    admin_role = timelock.functions.DEFAULT_ADMIN_ROLE().call()
    send(w3, deployer, timelock.functions.renounceRole(admin_role, deployer.address), what="renounce admin")

    for holder in self_delegate:
        send(w3, holder, token.functions.delegate(holder.address), what="delegate votes")

    return Deployment(
        chain_id=w3.eth.chain_id,
        registry=registry.address,
        governor=governor.address,
        timelock=timelock.address,
        token=token.address,
        deploy_block=receipt["blockNumber"],
        params={
            "voting_delay": params.voting_delay,
            "voting_period": params.voting_period,
            "quorum_percent": params.quorum_percent,
            "timelock_delay": params.timelock_delay,
            "proposal_threshold": params.proposal_threshold,
            "council": council,
            "council_cancels": bool(params.council_cancels and params.council),
            "epoch_timeout": params.epoch_timeout,
        },
    )
