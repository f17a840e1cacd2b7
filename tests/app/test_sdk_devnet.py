"""The one-call SDK against a real devnet (anvil, contracts, 5 node processes, devnet TEEs).

- the README's app snippet and docs/sdk.md's run as written, with only $DEROT_* set;
- the asyncio client gets the same key and a certificate, concurrently, without blocking the event loop;
- get_key follows a keyVersion rotation without being told;
- a hung gateway (SIGSTOP) costs the hedge delay, not the 15 s attempt timeout;
- with 3 of 5 members down the headline reason is ``not_enough_shares``, not ``unavailable``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from derot.app import AsyncDerotClient, DerotClient, RequestFailed, verify_certificate
from derot.app.owner import AppOwner
from derot.attest.devnet import devnet_measurement_digest, image_registers
from derot.constants import Platform
from derot.devnet.network import APP_OWNER, Devnet

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
IMAGE = "sdk-app v1"


def snippet(doc: str) -> str:
    """The first python block of ``doc`` (a path under the repository)."""
    text = (REPO / doc).read_text()
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match, f"{doc} has no python block"
    return match.group(1)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    net = Devnet(tmp_path_factory.mktemp("sdk"), nodes=5, threshold=3)
    try:
        net.up(timeout=240)
        yield net
    finally:
        net.down()


@pytest.fixture(scope="module")
def app_id(devnet) -> bytes:
    owner = AppOwner.connect(devnet.rpc_url, devnet.registry, devnet.accounts[APP_OWNER])
    app_id = owner.register(os.urandom(32))
    for platform in (Platform.TDX, Platform.SEV_SNP):
        owner.allow(app_id, platform, devnet_measurement_digest(platform, image_registers(platform, IMAGE)))
    devnet.wait_confirmed()
    devnet.wait_for_block(devnet.w3().eth.block_number + 2)
    return app_id


def client(devnet, app_id: bytes, **kwargs) -> DerotClient:
    return DerotClient(app_id.hex(), devnet=devnet.directory, devnet_image=IMAGE, environ={}, **kwargs)


@pytest.mark.parametrize("doc", ["README.md", "docs/sdk.md"])
def test_the_docs_snippet_runs_as_written(devnet, app_id, tmp_path, doc):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEROT_")}
    env.update(DEROT_DEVNET=str(devnet.directory), DEROT_APP_ID=app_id.hex(), DEROT_DEVNET_IMAGE=IMAGE,
               GRPC_VERBOSITY="ERROR")
    result = subprocess.run([sys.executable, "-c", snippet(doc)], capture_output=True, text=True, timeout=300,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with client(devnet, app_id) as mine:
        expected = mine.get_key().ethereum_address
    assert f"address {expected}" in result.stdout
    assert "certificate OK valid True" in result.stdout, result.stdout


def test_the_async_client_gets_the_same_key_without_blocking_the_loop(devnet, app_id):
    with client(devnet, app_id) as blocking:
        expected = blocking.get_key()

    async def main():
        ticks = 0
        done = asyncio.Event()

        async def tick():  # counts while the calls are in flight; a blocked loop would not count
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        async with AsyncDerotClient(app_id.hex(), devnet=devnet.directory, devnet_image=IMAGE, environ={}) as app:
            keys = await asyncio.gather(app.get_key(), app.get_key())
            cert = await app.get_certificate(keys[0])
        done.set()
        await ticker
        return keys, cert, ticks

    keys, cert, ticks = asyncio.run(main())
    assert [k.ethereum_address for k in keys] == [expected.ethereum_address] * 2
    assert cert.certificate.app_id == app_id and cert.certificate.key_version == expected.key_version
    assert ticks >= 5, f"the event loop ran only {ticks} times while the client worked"

    # the relying party's one call: the real certificate passes off- and on-chain, one flipped bit fails both
    chain = {"rpc_url": devnet.rpc_url, "registry": devnet.registry}
    good = verify_certificate(cert.encoded, cert.signature_eip2537, onchain=True, **chain)
    assert good.ok and good.reason.name == "OK" and good.onchain.name == "OK"
    tampered = bytearray(cert.encoded)
    tampered[-1] ^= 1
    bad = verify_certificate(bytes(tampered), cert.signature_eip2537, onchain=True, **chain)
    assert not bad.ok and bad.reason.name != "OK" and bad.onchain.name != "OK"


def test_get_key_follows_a_rotation(devnet, app_id):
    with client(devnet, app_id) as app:
        before = app.get_key()
        assert before.key_version == 1
        owner = AppOwner.connect(devnet.rpc_url, devnet.registry, devnet.accounts[APP_OWNER])
        owner.rotate(app_id, 2)
        devnet.wait_confirmed()
        deadline = time.monotonic() + 60
        while True:  # the nodes apply the rotation once its block is confirmed; until then they serve v1
            try:
                after = app.get_key()
                if after.key_version == 2:
                    break
            except RequestFailed as exc:
                assert exc.reason in ("key_version_mismatch", "not_confirmed"), exc
            assert time.monotonic() < deadline, "the client never moved to keyVersion 2"
            time.sleep(0.5)
        assert after.key_version == 2
        assert after.ethereum_address != before.ethereum_address
        cert = app.get_certificate(after)
        assert cert.certificate.key_version == 2


def test_a_hung_gateway_costs_the_hedge_delay_not_the_attempt_timeout(devnet, app_id):
    hung = devnet.node_processes[0]
    endpoints = [p.public_endpoint for p in devnet.node_processes]
    with client(devnet, app_id, endpoints=endpoints, timeout=15.0, hedge_after=1.0) as app:
        app.get_key()  # connected, warm: the hung node's channel is open
        os.kill(hung.pid, signal.SIGSTOP)
        try:
            app._session().client._next = 0  # the next call starts on the hung gateway
            started = time.monotonic()
            key = app.get_key()
            elapsed = time.monotonic() - started
        finally:
            os.kill(hung.pid, signal.SIGCONT)
    assert key.ethereum_address
    print(f"answered in {elapsed:.2f} s with gateway 1 hung (hedge delay "
          f"{app._session().client.hedge_delay():.2f} s)")
    assert elapsed < 10.0, f"took {elapsed:.1f} s: the client waited on the hung gateway"


def test_three_of_five_down_is_not_enough_shares(devnet, app_id):
    endpoints = [p.public_endpoint for p in devnet.node_processes]
    for proc in devnet.node_processes[:3]:
        devnet.stop_node(proc, kill=True)
    with client(devnet, app_id, endpoints=endpoints, timeout=10.0) as app:
        with pytest.raises(RequestFailed) as failed:
            app.get_key(key_version=2)
    assert failed.value.reason == "not_enough_shares", failed.value.attempts
    assert {a.reason for a in failed.value.attempts} >= {"unavailable", "not_enough_shares"}
