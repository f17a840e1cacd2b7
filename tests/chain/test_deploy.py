"""After deploy(): only the Governor (through the timelock) controls the registry."""

from __future__ import annotations

import pytest

from derot.chain import actions as A
from derot.chain.deploy import Deployment
from derot.chain.tx import TransactionFailed, send


def test_roles_after_deploy(chain):
    d = chain.deployment
    timelock = chain.gov.timelock.functions
    assert chain.registry.owner() == d.timelock
    assert chain.registry.security_council() == chain.council.address
    assert timelock.hasRole(timelock.PROPOSER_ROLE().call(), d.governor).call()
    assert timelock.hasRole(timelock.CANCELLER_ROLE().call(), d.governor).call()
    assert timelock.hasRole(timelock.EXECUTOR_ROLE().call(), "0x" + "00" * 20).call()  # anyone executes
    admin = timelock.DEFAULT_ADMIN_ROLE().call()
    assert not timelock.hasRole(admin, chain.deployer.address).call()
    assert timelock.hasRole(admin, d.timelock).call()  # only the timelock administers itself
    assert chain.gov.governor.functions.timelock().call() == d.timelock
    assert chain.gov.governor.functions.token().call() == d.token


def test_deployer_keeps_no_power(chain):
    with pytest.raises(TransactionFailed, match="OwnableUnauthorizedAccount"):
        chain.registry.apply(chain.deployer, [A.AllowPlatform(2)])
    timelock = chain.gov.timelock
    with pytest.raises(TransactionFailed, match="AccessControlUnauthorizedAccount"):
        send(chain.w3, chain.deployer, timelock.functions.schedule(
            chain.registry.address, 0, b"", bytes(32), bytes(32), 60))


def test_bootstrap_actions_and_deployment_file_round_trip(chain, tmp_path):
    assert {int(p) for p, r in chain.registry.platform_rules().items() if r.enabled} == {1, 3}
    path = tmp_path / "deployment.json"
    chain.deployment.save(path)
    assert Deployment.load(path) == chain.deployment
