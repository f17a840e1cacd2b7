"""Gas of every user-facing derot contract call, measured on a real anvil (prints a table).

    python bench/gas.py

Each row is one mined transaction's ``gasUsed``. "execution" subtracts the intrinsic cost (21,000 plus
calldata at 4/16 gas per zero/non-zero byte), i.e. what a relying contract pays when it calls the function.
Target from the issue: verifyCertificate ≤ 150,000 gas. Anchor: Automata's fully on-chain DCAP quote
verification costs about 4–5 M gas, about 325–410 k with a ZK proof.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from web3 import Web3  # noqa: E402

from derot.certs import Certificate, Reason  # noqa: E402
from derot.chain import actions as A  # noqa: E402
from derot.devnet.anvil import Anvil, mine, warp  # noqa: E402
from derot.chain.deploy import DeployParams, deploy  # noqa: E402
from derot.chain.governance import Governance, Support  # noqa: E402
from derot.devnet.governance import enact  # noqa: E402
from derot.chain.registry import Registry  # noqa: E402
from derot.chain.tx import send  # noqa: E402
from derot.chain.types import RevocationKind  # noqa: E402
from derot.attest.identity import hardware_key  # noqa: E402
from derot.constants import CERT_VERSION, Platform, TcbStatus  # noqa: E402
from derot.crypto.bls import G2, random_scalar  # noqa: E402

TARGET_VERIFY = 150_000


def intrinsic(w3: Web3, receipt) -> int:
    tx = w3.eth.get_transaction(receipt["transactionHash"])
    data = bytes(tx["input"])
    return 21_000 + sum(16 if b else 4 for b in data) + (32_000 if tx["to"] is None else 0)


@dataclass
class Bench:
    """One anvil with a deployed registry and governance, and the rows measured so far."""

    w3: Web3
    reg: Registry
    gov: Governance
    accounts: list
    rows: list[tuple[str, int, int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.deployer, self.council, self.whale, self.mid, self.app_owner, self.relying = self.accounts[:6]
        self.nodes = self.accounts[6:11]

    def row(self, name: str, receipt, note: str = "") -> None:
        self.rows.append((name, receipt["gasUsed"], receipt["gasUsed"] - intrinsic(self.w3, receipt), note))


def _deploy(w3: Web3, accounts: list) -> Bench:
    deployer, council, whale, mid = accounts[:4]
    params = DeployParams.devnet([(whale.address, 600 * 10**18), (mid.address, 400 * 10**18)], council.address,
                                 bootstrap=(A.AllowPlatform(int(Platform.TDX)),))
    deployment = deploy(w3, deployer, params, self_delegate=[whale, mid])
    return Bench(w3, Registry(w3, deployment.registry), Governance(w3, deployment), accounts)


def _committee(b: Bench) -> int:
    """Nodes register, a DKG and a reshare report their keys; returns the group secret (signs certificates)."""
    reg, gov, whale, mid, nodes = b.reg, b.gov, b.whale, b.mid, b.nodes
    for i, node in enumerate(nodes):
        receipt = reg.register_node(node, identity_key=os.urandom(32), x25519_key=os.urandom(32),
                                    endpoint=f"node{i}.example:7443", tls_key_hash=os.urandom(32),
                                    evidence_hash=os.urandom(32))
    b.row("registerNode (operator)", receipt)
    members = tuple(n.address for n in nodes)
    enact(gov, whale, [*(A.AddNode(a) for a in members), A.StartDkg(members, 3)], "committee", [whale, mid])

    sk = random_scalar()
    pk, kd = G2.generator() * sk, G2.generator() * random_scalar()
    transcript = os.urandom(32)
    b.row("reportEpoch: first report", reg.report_epoch(nodes[0], 1, pk, kd, os.urandom(32)),
          "checks both keys (G2MSM); approved members only")
    b.row("reportEpoch: replaced report", reg.report_epoch(nodes[0], 1, pk, kd, transcript),
          "withdraws the earlier vote")
    b.row("reportEpoch: agreeing report", reg.report_epoch(nodes[1], 1, pk, kd, transcript))
    b.row("reportEpoch: t-th report, DKG", reg.report_epoch(nodes[2], 1, pk, kd, transcript),
          "activates; writes the key store")
    enact(gov, whale, [A.StartReshare(members[:4], 3)], "reshare", [whale, mid])
    reg.report_epoch(nodes[0], 2, pk, kd, transcript)
    b.row("reportEpoch: agreeing report, 2 exclusions", reg.report_epoch(nodes[1], 2, pk, kd, transcript, ([4, 5], [1, 4])),
          "EpochExclusions event (per reporter)")
    b.row("reportEpoch: t-th report, reshare", reg.report_epoch(nodes[2], 2, pk, kd, transcript),
          "same keys: store reused")
    return sk


def _app(b: Bench) -> tuple[bytes, bytes]:
    """An app is registered and configured; returns its appId and allowed TDX measurement."""
    w3, reg, app_owner, relying = b.w3, b.reg, b.app_owner, b.relying
    salt = os.urandom(32)
    send(w3, app_owner, reg.contract.functions.registerApp(salt))  # the app used below
    b.row("registerApp", send(w3, app_owner, reg.contract.functions.registerApp(os.urandom(32))))
    app_id = reg.app_id_of(app_owner.address, salt)
    measurement = os.urandom(32)
    b.row("setAppMeasurement", reg.set_app_measurement(app_owner, app_id, Platform.TDX, measurement, True),
          "capped at 64 per app")
    b.row("setAppTeeExceptions", reg.set_app_tee_exceptions(app_owner, app_id, ["td_migratable", "vmpl"]))
    b.row("setAppGpuPolicy", reg.set_app_gpu_policy(app_owner, app_id, ["H100", "H200"], True))
    b.row("setAppDelegate (EOA)", reg.set_app_delegate(app_owner, app_id, relying.address))
    allowed_gas = w3.eth.estimate_gas({"to": reg.address, "data": reg.contract.encode_abi(
        "isAppAllowed", [app_id, int(Platform.TDX), measurement])})
    b.rows.append(("isAppAllowed (EOA delegate, call)", allowed_gas, allowed_gas - 21_000 - 16 * 68, "answers false"))
    reg.set_app_delegate(app_owner, app_id, None)
    other = reg.register_app(app_owner, os.urandom(32))
    b.row("transferAppOwnership (step 1)", reg.transfer_app_ownership(app_owner, other, relying.address))
    b.row("acceptAppOwnership (step 2)", reg.accept_app_ownership(relying, other))
    return app_id, measurement


def _council(b: Bench) -> bytes:
    """The security council's direct actions; returns the revoked Intel PPID."""
    reg, council = b.reg, b.council
    b.row("council revoke (FMSPC)", reg.apply(council, [A.Revoke(RevocationKind.FMSPC, os.urandom(6))]))
    b.row("council revoke (SNP chip id)", reg.apply(council, [A.Revoke(RevocationKind.CHIP_ID, os.urandom(64))]))
    revoked_ppid = os.urandom(16)
    b.row("council revoke (Intel PPID)", reg.apply(council, [A.Revoke(RevocationKind.PPID, revoked_ppid)]))
    b.row("council revoke (Intel PCK cert)", reg.apply(council, [A.Revoke(RevocationKind.PCK_CERT, os.urandom(32))]))
    b.row("council revoke (GPU device)", reg.apply(council, [A.Revoke(RevocationKind.GPU_DEVICE, os.urandom(9))]))
    b.row("council raise TCB floor", reg.apply(council, [A.SetTcbFloor(1, int(TcbStatus.SW_HARDENING_NEEDED))]))
    b.row("council suspendNode", reg.apply(council, [A.SuspendNode(b.nodes[4].address)]),
          "loops the current committee: t approved must remain")
    return revoked_ppid


def _governance(b: Bench) -> None:
    """A proposal through vote, queue and execute; an expired epoch; a proposal the council cancels."""
    w3, reg, gov, whale, mid = b.w3, b.reg, b.gov, b.whale, b.mid
    members = tuple(n.address for n in b.nodes)
    description = f"revoke an FMSPC {os.urandom(4).hex()}"
    revoke = [A.Revoke(RevocationKind.FMSPC, os.urandom(6))]
    receipt = send(w3, whale, gov.governor.functions.propose(*gov.encode(revoke), description))
    b.row("propose (1 revoke action)", receipt)
    pid = gov.proposal_id(revoke, description)
    mine(w3, gov.voting_delay() + 1)
    b.row("vote (castVote)", gov.vote(whale, pid, Support.FOR))
    gov.vote(mid, pid, Support.FOR)
    mine(w3, gov.voting_period())
    b.row("queue", gov.queue(whale, pid))
    warp(w3, gov.timelock_delay() + 1)
    b.row("execute (revoke FMSPC)", gov.execute(whale, pid))

    enact(gov, whale, [A.StartReshare(members[:4], 3)], "a reshare that never finishes", [whale, mid])
    mine(w3, reg.epoch_timeout())
    b.row("expireEpoch (anyone, after the timeout)", reg.expire_epoch(b.relying))

    description = f"a proposal the council stops {os.urandom(4).hex()}"
    pid = gov.propose(whale, revoke, description)
    mine(w3, gov.voting_delay() + 1)
    gov.vote(whale, pid, Support.FOR)
    gov.vote(mid, pid, Support.FOR)
    mine(w3, gov.voting_period())
    gov.queue(whale, pid)
    b.row("council cancel (timelock)", gov.council_cancel(b.council, pid), "CANCELLER role")


def _certificates(b: Bench, sk: int, app_id: bytes, measurement: bytes, revoked_ppid: bytes) -> None:
    """verifyCertificate: valid certificates of several shapes, a revoked one, a bad point, a wrong key."""
    w3, reg, relying = b.w3, b.reg, b.relying
    now = w3.eth.get_block("latest")["timestamp"]

    def certificate(subject_len: int, hardware: int = 3, revoked: bool = False) -> Certificate:
        keys = sorted(os.urandom(32) for _ in range(hardware - revoked))
        if revoked:
            keys = sorted(keys + [hardware_key(RevocationKind.PPID, revoked_ppid)])
        return Certificate(CERT_VERSION, w3.eth.chain_id, reg.address, 2, os.urandom(32), app_id, 1, 1,
                           os.urandom(subject_len), int(Platform.TDX), measurement, os.urandom(32),
                           int(TcbStatus.UP_TO_DATE), now - 60, now + 86_400, w3.eth.block_number, tuple(keys))

    # hardware keys: an Intel TEE lists 3 (FMSPC, PPID, PCK), SEV-SNP 1, each NVIDIA GPU 3 more
    for subject_len, hardware, label in ((33, 3, "secp256k1 key"), (32, 3, "Ed25519 key"),
                                         (33, 0, "no hardware keys"), (33, 1, "SNP, 1 hardware key"),
                                         (33, 27, "TDX + 8 GPUs, 27 keys")):
        cert = certificate(subject_len, hardware)
        sig = cert.sign(sk).to_eip2537()
        assert reg.verify_certificate(cert.encode(), sig) is Reason.OK
        receipt = send(w3, relying, reg.contract.functions.verifyCertificate(cert.encode(), sig))
        b.row(f"verifyCertificate ({label})", receipt, f"OK; {hardware} hardware keys")
    revoked_cert = certificate(33, 3, revoked=True)
    revoked_sig = revoked_cert.sign(sk).to_eip2537()
    assert reg.verify_certificate(revoked_cert.encode(), revoked_sig) is Reason.HARDWARE_REVOKED
    receipt = send(w3, relying, reg.contract.functions.verifyCertificate(revoked_cert.encode(), revoked_sig))
    b.row("verifyCertificate (revoked PPID)", receipt, "HARDWARE_REVOKED")
    bad = bytearray(sig)
    bad[100] ^= 1
    receipt = send(w3, relying, reg.contract.functions.verifyCertificate(cert.encode(), bytes(bad)))
    b.row("verifyCertificate (bad point)", receipt, "MALFORMED_SIGNATURE; the precompile burns the gas it gets")
    wrong = certificate(33)
    receipt = send(w3, relying, reg.contract.functions.verifyCertificate(wrong.encode(),
                                                                          wrong.sign(random_scalar()).to_eip2537()))
    b.row("verifyCertificate (wrong key)", receipt, "BAD_SIGNATURE")


def _print_table(rows: list[tuple[str, int, int, str]], hardfork: str) -> int:
    print(f"derot contract gas (anvil {hardfork} hardfork; EIP-2537 prices: pairing 2 pairs 102,900, "
          "map_fp_to_g1 5,500, g1add 375)\n")
    print(f"{'call':42s} {'tx gasUsed':>11s} {'execution':>10s}  note")
    print("-" * 100)
    for name, used, execution, note in rows:
        print(f"{name:42s} {used:>11,} {execution:>10,}  {note}")
    verify = [r for r in rows if r[0] == "verifyCertificate (secp256k1 key)"][0]
    verdict = "meets" if verify[2] <= TARGET_VERIFY else "MISSES"
    print(f"\nverifyCertificate execution gas {verify[2]:,} {verdict} the {TARGET_VERIFY:,} target "
          f"(whole transaction {verify[1]:,} incl. 21,000 base and calldata).")
    print("Anchor: Automata on-chain DCAP verification ~4-5 M gas; with a ZK proof ~325-410 k gas.")
    return 0 if verify[2] <= TARGET_VERIFY else 1


def main() -> int:
    with Anvil(accounts=16) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 60}))
        hardfork = w3.provider.make_request("anvil_nodeInfo", [])["result"].get("hardFork", "?")
        b = _deploy(w3, anvil.accounts())
        sk = _committee(b)
        app_id, measurement = _app(b)
        revoked_ppid = _council(b)
        _governance(b)
        _certificates(b, sk, app_id, measurement, revoked_ppid)
    return _print_table(b.rows, hardfork)

if __name__ == "__main__":
    sys.exit(main())
