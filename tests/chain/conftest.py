"""One real anvil per test session, the contracts deployed once, and an evm_snapshot/evm_revert per test.

The session world: governance token split whale 60% / mid 36% / small 3% / stranger 1% (quorum 4%), a
SecurityCouncil, five registered node operators of which three form the active epoch 1 (t = 2), TDX and
SEV-SNP enabled, and one app allowed on TDX. Everything is set up through the real contracts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from web3 import Web3

from derot.certs import Certificate
from derot.chain import actions as A
from derot.devnet.anvil import Anvil, revert, snapshot
from derot.chain.deploy import DeployParams, Deployment, deploy
from derot.chain.governance import Governance
from derot.devnet.governance import enact
from derot.chain.registry import Registry
from derot.constants import CERT_VERSION, Platform, TcbStatus
from derot.crypto.bls import G2, random_scalar

UNIT = 10**18


@dataclass
class Env:
    anvil: Anvil
    w3: Web3
    deployment: Deployment
    registry: Registry
    gov: Governance
    deployer: object
    council: object
    whale: object
    mid: object
    small: object
    stranger: object
    app_owner: object
    nodes: list
    sk: int
    pk: G2
    kd: G2
    app_id: bytes
    measurement: bytes
    extra: dict = field(default_factory=dict)

    @property
    def voters(self):
        return [self.whale, self.mid]

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def enact(self, actions, description: str = "test proposal") -> int:
        return enact(self.gov, self.whale, list(actions), f"{description} #{os.urandom(4).hex()}", self.voters)

    def cert(self, **overrides) -> Certificate:
        """A certificate that verifies against the session world."""
        now = self.now()
        fields = dict(
            version=CERT_VERSION,
            chain_id=self.w3.eth.chain_id,
            registry=self.registry.address,
            epoch=self.registry.current_epoch(),
            serial=os.urandom(32),
            app_id=self.app_id,
            key_version=1,
            key_type=1,
            subject_key=os.urandom(33),
            platform=int(Platform.TDX),
            measurement=self.measurement,
            evidence_hash=os.urandom(32),
            tcb_status=int(TcbStatus.UP_TO_DATE),
            not_before=now - 60,
            not_after=now + 24 * 3600,
            policy_block=self.w3.eth.block_number,
        )
        fields.update(overrides)
        return Certificate(**fields)


def register_node(registry: Registry, account, port: int) -> None:
    registry.register_node(
        account,
        identity_key=os.urandom(32),
        x25519_key=os.urandom(32),
        endpoint=f"127.0.0.1:{port}",
        tls_key_hash=os.urandom(32),
        evidence_hash=os.urandom(32),
    )


@pytest.fixture(scope="session")
def anvil(tmp_path_factory):
    log = tmp_path_factory.mktemp("anvil") / "anvil.log"
    with Anvil(accounts=20, log_path=log) as node:
        yield node


@pytest.fixture(scope="session")
def env(anvil) -> Env:
    w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
    accounts = anvil.accounts()
    deployer, council, whale, mid, small, stranger, app_owner = accounts[:7]
    nodes = accounts[7:12]
    holders = [(whale.address, 600 * UNIT), (mid.address, 360 * UNIT), (small.address, 30 * UNIT),
               (stranger.address, 10 * UNIT)]
    params = DeployParams.devnet(
        holders,
        council.address,
        bootstrap=(A.AllowPlatform(int(Platform.TDX)), A.AllowPlatform(int(Platform.SEV_SNP))),
    )
    deployment = deploy(w3, deployer, params, self_delegate=[whale, mid, small, stranger])
    registry = Registry(w3, deployment.registry)
    gov = Governance(w3, deployment)
    for i, node in enumerate(nodes):
        register_node(registry, node, 7000 + i)
    members = tuple(n.address for n in nodes[:3])
    enact(gov, whale, [*(A.AddNode(n.address) for n in nodes), A.StartDkg(members, 2)], "bootstrap committee",
          [whale, mid])
    sk = random_scalar()
    pk, kd = G2.generator() * sk, G2.generator() * random_scalar()
    transcript = os.urandom(32)
    for node in nodes[:2]:
        registry.report_epoch(node, 1, pk, kd, transcript)
    app_id = registry.register_app(app_owner, b"\x01" * 32)
    measurement = os.urandom(32)
    registry.set_app_measurement(app_owner, app_id, Platform.TDX, measurement, True)
    return Env(anvil, w3, deployment, registry, gov, deployer, council, whale, mid, small, stranger, app_owner,
               nodes, sk, pk, kd, app_id, measurement)


@pytest.fixture
def chain(env):
    """The session world, restored after the test."""
    snap = snapshot(env.w3)
    try:
        yield env
    finally:
        assert revert(env.w3, snap)
