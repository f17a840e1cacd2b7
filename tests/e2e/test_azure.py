"""End to end on a real devnet (anvil + node processes + gRPC): an Azure CVM app (vTPM evidence) with two
devnet H100s gets the same key as on bare TDX once governance enables the Azure and GPU platforms; each node
verifies the vTPM quote and every GPU report; revoking a GPU's FWID refuses the request by name."""

from __future__ import annotations


import pytest

from derot.app.client import RequestFailed
from derot.app.owner import AppOwner
from derot.app.sdk import App, TrustAnchor
from derot.app.tee.devnet_azure import DevnetAzureDevice
from derot.attest.devnet_azure import measurement_digest_for
from derot.chain.actions import AllowPlatform, Revoke, SetTcbFloor
from derot.chain.types import RevocationKind
from derot.constants import KeyType, Platform, TcbStatus
from derot.devnet.network import APP_OWNER

pytestmark = pytest.mark.slow
IMAGE = "e2e-app v1"


@pytest.fixture(scope="module")
def small(devnet_starter):
    net = devnet_starter("azure3", nodes=3, threshold=2)
    yield net
    net.down()


def test_azure_gpu_cvm_gets_the_same_key(small, harness_for):
    net = small
    harness = harness_for(net)
    tdx_key = harness.app(Platform.TDX).get_key()
    device = DevnetAzureDevice(harness.roots, Platform.AZURE_SNP, IMAGE, gpus=2)
    net.enact([AllowPlatform(int(Platform.AZURE_SNP)), SetTcbFloor(int(Platform.AZURE_SNP), int(TcbStatus.UP_TO_DATE)),
               AllowPlatform(int(Platform.NVIDIA_GPU)), SetTcbFloor(int(Platform.NVIDIA_GPU), int(TcbStatus.UP_TO_DATE))],
              "enable Azure SEV-SNP CVMs and NVIDIA GPUs")
    from derot.attest.trust import TrustConfig
    from derot.attest.verify import verify_evidence

    claims = verify_evidence(device.evidence(bytes(64)), TrustConfig.devnet(harness.roots))
    owner = AppOwner.connect(net.rpc_url, net.registry, net.accounts[APP_OWNER])
    owner.allow(harness.app_id, Platform.AZURE_SNP, measurement_digest_for(Platform.AZURE_SNP, IMAGE))
    for gpu in claims.gpus:
        owner.allow(harness.app_id, Platform.NVIDIA_GPU, gpu.measurement_digest)
    net.wait_confirmed()
    anchor = TrustAnchor.from_chain(net.rpc_url, net.registry)
    app = App(harness.client(), device, anchor, harness.app_id)
    key = app.get_key()
    assert key.ethereum_address == tdx_key.ethereum_address
    cert = app.get_certificate(key.keys.public_key(KeyType.SECP256K1), KeyType.SECP256K1)
    assert cert.certificate.platform == Platform.AZURE_SNP
    # governance revokes one GPU's FWID: the pair is refused with the reason
    net.enact([Revoke(RevocationKind.GPU_FWID, claims.gpus[1].hardware_ids.gpu_fwid)], "revoke a compromised GPU")
    net.wait_confirmed()
    with pytest.raises(RequestFailed) as info:
        app.get_key()
    assert info.value.reason == "gpu_fwid_revoked"
