"""The mission, end to end and narrated (``make demo`` / ``derot demo``), docs/design.md §8:

1. a devnet starts; 2. an app is registered with TDX and SNP measurements; 3. the app gets its key and
certificate on TDX; 4. the certificate is verified on-chain (gas printed); 5. governance revokes the TDX
FMSPC; 6. the TDX request is refused, with the reason; 7. the app moves to SNP and gets the same key (same
Ethereum address) and a new certificate; 8-11. the GPU chapter: an app on TDX + an H100 gets its key and a
certificate that says so, the Security Council revokes that GPU's firmware (FWID) and the request is refused,
the app moves to SEV-SNP with another GPU and gets the same key; 12. a node is removed by vote, the network
reshares with the group key unchanged, and the app's key is still the same.

Everything runs in a temporary directory and is stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

WIDTH = 78


class Narrator:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        print(f"\n{'─' * WIDTH}\n[{self.step_no}] {title}\n{'─' * WIDTH}", flush=True)

    def say(self, text: str) -> None:
        print(f"    {text}", flush=True)

    def progress(self, text: str) -> None:
        print(f"    [{time.monotonic() - self.started:5.1f}s] {text}", flush=True)


def run(args) -> int:
    from derot.devnet.network import Devnet

    keep = getattr(args, "keep", False)
    directory = Path(getattr(args, "dir", None) or tempfile.mkdtemp(prefix="derot-demo-"))
    narrator = Narrator()
    print("derot: a decentralized root of trust for TEEs — the mission, end to end")
    net = Devnet(directory, nodes=5, threshold=3, progress=narrator.progress)
    ok = False
    try:
        _mission(net, narrator)
        ok = True
    finally:
        stopped = net.down()
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
        narrator.say(f"\nstopped {len(stopped)} processes; total {time.monotonic() - narrator.started:.1f} s"
                     f"{'' if ok else ' (FAILED)'}")
    return 0 if ok else 1


IMAGE = "payments-enclave v1.4"


def _mission(net, narrator: Narrator) -> None:
    from derot.app.client import RootOfTrustClient
    from derot.app.sdk import App, TrustAnchor
    from derot.app.tee.devnet import DevnetDevice
    from derot.attest.devnet import DevnetRoots, image_registers
    from derot.constants import Platform

    narrator.step("A devnet starts: anvil, the governance contracts, devnet TEE roots, 5 nodes, a 3-of-5 DKG")
    net.up(timeout=180)
    registry = net.registry_client()
    epoch1 = registry.epoch(1)
    narrator.say(f"registry  {net.registry}")
    narrator.say(f"PK_sig    {epoch1.group_key_sig.to_bytes().hex()[:48]}…")
    narrator.say(f"PK_kd     {epoch1.group_key_kd.to_bytes().hex()[:48]}…")

    app_id = _register_app(net, narrator)
    roots = DevnetRoots.load(net.directory / "roots")
    client = RootOfTrustClient([p.public_endpoint for p in net.node_processes])
    anchor = TrustAnchor.from_chain(net.rpc_url, net.registry)
    tdx = App(client, DevnetDevice(roots, Platform.TDX, image_registers(Platform.TDX, IMAGE)), anchor, app_id)
    key, cert = _tdx_key_and_certificate(narrator, registry, tdx)
    _revoke_tdx(net, narrator, registry, tdx, cert)
    snp = App(client, DevnetDevice(roots, Platform.SEV_SNP, image_registers(Platform.SEV_SNP, IMAGE)), anchor, app_id)
    snp_cert = _redeploy_on_snp(narrator, registry, snp, key)
    _gpu_chapter(net, narrator, registry, client, anchor, app_id, roots, key)
    client4 = _reshare(net, narrator, registry, epoch1, snp, key, snp_cert)
    client.close()
    client4.close()
    print(f"\n{'═' * WIDTH}\nmission complete: one app key across TDX → SEV-SNP, GPU TEEs, revocations and a reshare\n{'═' * WIDTH}")


def _register_app(net, narrator: Narrator) -> bytes:
    """Step 2: register an app and allow its TDX and SEV-SNP measurements; returns its appId."""
    from derot.app.owner import AppOwner
    from derot.attest.devnet import devnet_measurement_digest, image_registers
    from derot.constants import Platform
    from derot.devnet.network import APP_OWNER

    narrator.step("An app is registered, allowing its measurements on Intel TDX and AMD SEV-SNP")
    owner = AppOwner.connect(net.rpc_url, net.registry, net.accounts[APP_OWNER])
    app_id = owner.register(os.urandom(32))
    narrator.say(f"appId     {app_id.hex()}  (owner {owner.account.address})")
    for platform in (Platform.TDX, Platform.SEV_SNP):
        digest = devnet_measurement_digest(platform, image_registers(platform, IMAGE))
        owner.allow(app_id, platform, digest)
        narrator.say(f"allowed   {platform.name:<8} measurement {digest.hex()[:32]}…")
    net.wait_confirmed()
    return app_id


def _tdx_key_and_certificate(narrator: Narrator, registry, tdx):
    """Steps 3-4: the app's key and certificate on TDX, and the certificate verified on-chain."""
    from derot.constants import KeyType

    narrator.step("On TDX, the app gets its identity key and a certificate")
    key = tdx.get_key()
    narrator.say(f"Ethereum address {key.ethereum_address}  ({key.seconds * 1000:.0f} ms, shares from nodes "
                 f"{list(key.contributors)})")
    narrator.say("no node saw the key: each sent an encrypted share; the app decrypted and checked it against PK_kd")
    subject = key.keys.public_key(KeyType.SECP256K1)
    cert = tdx.get_certificate(subject, KeyType.SECP256K1)
    narrator.say(f"certificate serial {cert.certificate.serial.hex()[:16]}…  platform TDX, valid "
                 f"{(cert.certificate.not_after - cert.certificate.not_before) // 3600} h  ({cert.seconds * 1000:.0f} ms)")

    narrator.step("A relying contract verifies the certificate on-chain (EIP-2537 BLS precompiles)")
    reason = registry.verify_certificate(cert.encoded, cert.signature)
    gas = registry.contract.functions.verifyCertificate(cert.encoded, cert.signature_eip2537).estimate_gas()
    narrator.say(f"verifyCertificate → {reason.name}; gas {gas:,} for the whole call")
    return key, cert


def _revoke_tdx(net, narrator: Narrator, registry, tdx, cert) -> None:
    """Steps 5-6: governance revokes the TDX FMSPC (and the certificate's evidence); the next request is refused."""
    from derot.app.client import RequestFailed
    from derot.chain.actions import Revoke
    from derot.chain.types import RevocationKind

    fmspc = tdx.device._tee.fmspc
    narrator.step(f"Governance revokes the compromised TDX platform family (FMSPC {fmspc.hex()})")
    narrator.say("proposal → vote → queue → timelock → execute (anvil skips the waiting)")
    narrator.say("the same proposal revokes the evidence behind the TDX certificate, so relying contracts refuse it")
    net.enact([Revoke(RevocationKind.FMSPC, fmspc), Revoke(RevocationKind.EVIDENCE_HASH, cert.certificate.evidence_hash)],
              "Revoke TDX FMSPC after a vendor advisory")
    net.wait_confirmed()
    narrator.say("executed and confirmed; every node now refuses evidence from that hardware")

    narrator.step("The app asks again on TDX: refused, with the reason")
    try:
        tdx.get_key()
        raise RuntimeError("the revoked TDX platform was not refused")
    except RequestFailed as exc:
        narrator.say(f"refused: {exc.reason} — {exc.refusal.detail}")
    narrator.say(f"and its TDX certificate, on-chain: {registry.verify_certificate(cert.encoded, cert.signature).name}")


def _redeploy_on_snp(narrator: Narrator, registry, snp, key):
    """Step 7: on SEV-SNP the app gets the same key (same address) and a new certificate; returns it."""
    from derot.constants import KeyType

    narrator.step("The app redeploys on AMD SEV-SNP: same key, new certificate")
    snp_key = snp.get_key()
    same = snp_key.ethereum_address == key.ethereum_address
    narrator.say(f"Ethereum address {snp_key.ethereum_address}  — {'the SAME address' if same else 'DIFFERENT (bug!)'}")
    snp_cert = snp.get_certificate(snp_key.keys.public_key(KeyType.SECP256K1), KeyType.SECP256K1)
    narrator.say(f"new certificate, platform sev-snp, on-chain: {registry.verify_certificate(snp_cert.encoded, snp_cert.signature).name}")
    if not same:
        raise RuntimeError("the key changed across vendors")
    return snp_cert


#: the GPU server's TDX platform family: not the one revoked in step 5
GPU_HOST_FMSPC = bytes.fromhex("50a06f000000")


def _gpu_chapter(net, narrator: Narrator, registry, client, anchor, app_id: bytes, roots, key) -> None:
    """Steps 8-11 (issue 14 §3): TDX + H100 → key and a certificate naming the GPU; the council revokes that GPU's
    FWID → refused by name; SEV-SNP + another GPU (other firmware) → the same key."""
    import hashlib

    from derot.app.client import RequestFailed
    from derot.app.owner import AppOwner
    from derot.app.sdk import App
    from derot.app.tee.devnet import DevnetDevice
    from derot.attest.devnet import image_registers
    from derot.chain.actions import AllowPlatform, Revoke, SetTcbFloor
    from derot.chain.types import RevocationKind
    from derot.cli.app_cmd import gpu_model_names
    from derot.constants import KeyType, Platform, TcbStatus
    from derot.devnet.network import APP_OWNER, COUNCIL

    narrator.step("GPU TEEs: governance enables NVIDIA GPUs; the app allows its GPU measurement")
    gpu = Platform.NVIDIA_GPU
    net.enact([AllowPlatform(int(gpu)), SetTcbFloor(int(gpu), int(TcbStatus.UP_TO_DATE))], "Enable NVIDIA GPU TEEs")
    tdx = App(client, DevnetDevice(roots, Platform.TDX, image_registers(Platform.TDX, IMAGE), fmspc=GPU_HOST_FMSPC,
                                   gpus=1), anchor, app_id)
    h100 = tdx.device.gpus[0]
    AppOwner.connect(net.rpc_url, net.registry, net.accounts[APP_OWNER]).allow(app_id, gpu, h100.measurement_digest)
    net.wait_confirmed()
    narrator.say(f"allowed   NVIDIA_GPU measurement {h100.measurement_digest.hex()[:32]}…")

    narrator.step("On TDX + an H100 (CPU and GPU evidence, each bound to the request), the app gets its key")
    gpu_key = tdx.get_key()
    cert = tdx.get_certificate(gpu_key.keys.public_key(KeyType.SECP256K1), KeyType.SECP256K1)
    c = cert.certificate
    narrator.say(f"Ethereum address {gpu_key.ethereum_address}  "
                 f"({'the SAME address' if gpu_key.ethereum_address == key.ethereum_address else 'DIFFERENT (bug!)'})")
    narrator.say(f"certificate: {c.gpu_count} GPU attested, models {','.join(gpu_model_names(c.gpu_models))}; "
                 f"on-chain: {registry.verify_certificate(cert.encoded, cert.signature).name}")

    narrator.step(f"The Security Council revokes that GPU's firmware at once (FWID {h100.fwid.hex()[:16]}…)")
    registry.apply(net.accounts[COUNCIL], [Revoke(RevocationKind.GPU_FWID, h100.fwid)])
    net.wait_confirmed()
    try:
        tdx.get_key()
        raise RuntimeError("the revoked GPU was not refused")
    except RequestFailed as exc:
        narrator.say(f"GPU refused: {exc.reason} — {exc.refusal.detail}")
    narrator.say(f"the GPU certificate, on-chain: {registry.verify_certificate(cert.encoded, cert.signature).name}")

    narrator.step("The app moves to AMD SEV-SNP with another GPU (other firmware): same key")
    snp = App(client, DevnetDevice(roots, Platform.SEV_SNP, image_registers(Platform.SEV_SNP, IMAGE), gpus=1,
                                   gpu_firmware=hashlib.sha384(b"derot devnet GPU firmware, patched").digest()),
              anchor, app_id)
    moved = snp.get_key()
    same = moved.ethereum_address == key.ethereum_address
    narrator.say(f"SEV-SNP + GPU: {moved.ethereum_address}  — {'the SAME address' if same else 'DIFFERENT (bug!)'}")
    if not same or gpu_key.ethereum_address != key.ethereum_address:
        raise RuntimeError("the key changed across GPU TEEs")


def _reshare(net, narrator: Narrator, registry, epoch1, snp, key, snp_cert):
    """Step 12: node 5 is removed and the committee reshares 3-of-4; the group keys and the app's key stay.

    Returns the client of the four remaining nodes (the caller closes it)."""
    from derot.app.client import RootOfTrustClient
    from derot.chain.actions import RemoveNode, StartReshare

    narrator.step("Governance removes node 5; the committee reshares 3-of-4 with the group keys unchanged")
    members = tuple(p.operator for p in net.node_processes[:4])
    net.enact([RemoveNode(net.node_processes[4].operator), StartReshare(members, 3)], "Remove node 5 and reshare")
    epoch = registry.pending_epoch() or registry.current_epoch()
    net.wait_for_epoch(epoch, timeout=120)
    epoch2 = registry.epoch(epoch)
    unchanged = epoch2.group_key_sig == epoch1.group_key_sig and epoch2.group_key_kd == epoch1.group_key_kd
    narrator.say(f"epoch {epoch}: {len(epoch2.members)} members, threshold {epoch2.threshold}; group keys "
                 f"{'unchanged' if unchanged else 'CHANGED (bug!)'}; old shares are erased once "
                 "the activation is final and t + f members hold the new ones")
    net.wait_confirmed()
    net.wait_serving(epoch, [1, 2, 3, 4])
    client4 = RootOfTrustClient([p.public_endpoint for p in net.node_processes[:4]])
    snp.client = client4
    after = snp.get_key()
    narrator.say(f"the app's key after the reshare: {after.ethereum_address} "
                 f"({'same' if after.ethereum_address == key.ethereum_address else 'DIFFERENT (bug!)'}), epoch {after.epoch}")
    narrator.say(f"its SNP certificate still verifies on-chain: "
                 f"{registry.verify_certificate(snp_cert.encoded, snp_cert.signature).name}")
    if not unchanged or after.ethereum_address != key.ethereum_address:
        raise RuntimeError("keys changed across the reshare")
    return client4
