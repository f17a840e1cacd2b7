"""The SDK for TEE apps: get your identity key and a certificate from the committee.

    anchor = TrustAnchor.from_chain(rpc_url, registry)          # group keys, from the registry
    app = App(RootOfTrustClient(endpoints), device, anchor, app_id)
    key = app.get_key()                                          # AppKeys: Ethereum address, Ed25519, ...
    cert = app.get_certificate(key.keys.public_key(KeyType.SECP256K1), KeyType.SECP256K1)

Every request binds a fresh ``(timestamp, nonce)`` and, for a key, a fresh transport key into the TEE's
report_data, so evidence is never reused. The encrypted key is decrypted and verified against the group
key from the trust anchor: a node cannot hand the app a key the committee did not derive. Moving to
another TEE (TDX → SEV-SNP) changes only the ``device``; the key stays the same.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from derot.app.client import RootOfTrustClient
from derot.attest.binding import RequestBinding, network_id
from derot.certs.certificate import Certificate
from derot.constants import KeyType
from derot.crypto import kd
from derot.crypto.appkeys import AppKeys, derive_app_keys
from derot.crypto.bls import G1, G2
from derot.errors import DerotError


class AppError(DerotError):
    """The committee's answer does not verify (wrong key, wrong certificate): never use it."""

    reason = "answer_does_not_verify"


@dataclass(frozen=True)
class TrustAnchor:
    """What an app trusts: the registry and its current group keys (read from the chain)."""

    chain_id: int
    registry: str
    epoch: int
    group_key_sig: G2
    group_key_kd: G2

    @property
    def network(self) -> bytes:
        return network_id(self.chain_id, self.registry)

    @classmethod
    def from_chain(cls, rpc_url: str, registry: str, *, block="latest") -> TrustAnchor:
        """Read the current epoch's keys from ``DerotRegistry`` (needs an Ethereum RPC the app trusts)."""
        from web3 import Web3

        from derot.chain.registry import Registry

        reg = Registry(Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 15})), registry)
        epoch = reg.current_epoch(block)
        if not epoch:
            raise AppError("the registry has no active epoch yet")
        record = reg.epoch(epoch, block)
        return cls(reg.w3.eth.chain_id, reg.address, epoch, record.pk_sig, record.pk_kd)

    @classmethod
    def from_node(cls, client: RootOfTrustClient) -> TrustAnchor:
        """Trust on first use: the keys a node reports. Only for development; prefer :meth:`from_chain`."""
        info = client.network_info()
        if not info.epoch:
            raise AppError("the node reports no active epoch")
        return cls(info.chain_id, info.registry, info.epoch, G2.from_bytes(info.group_key_sig),
                   G2.from_bytes(info.group_key_kd))


@dataclass(frozen=True, repr=False)
class DerivedKey:
    """The app's keys for (appId, keyVersion, context). Holds private keys: never log it."""

    keys: AppKeys
    app_id: bytes
    key_version: int
    context: bytes
    epoch: int
    contributors: tuple[int, ...]
    seconds: float
    excluded: tuple[int, ...] = ()  # members whose shares the gateway found invalid

    @property
    def ethereum_address(self) -> str:
        return self.keys.ethereum_address

    def __repr__(self) -> str:
        return f"DerivedKey(app={self.app_id.hex()[:12]}…, v{self.key_version}, {self.ethereum_address})"


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: Certificate
    encoded: bytes
    signature: G1
    epoch: int
    contributors: tuple[int, ...]
    seconds: float
    excluded: tuple[int, ...] = ()

    @property
    def signature_eip2537(self) -> bytes:
        return self.signature.to_eip2537()


class App:
    """One app (``app_id``) running in the TEE behind ``device``."""

    def __init__(self, client: RootOfTrustClient, device, anchor: TrustAnchor, app_id: bytes):
        if len(app_id) != 32:
            raise ValueError("app_id must be 32 bytes")
        self.client = client
        self.device = device
        self.anchor = anchor
        self.app_id = bytes(app_id)

    def _request(self, *, key_version: int, context: bytes, tpk: bytes = b"", subject_key: bytes = b"",
                 key_type: int = 0):
        timestamp, nonce = int(time.time()), os.urandom(16)
        binding = RequestBinding(self.anchor.network, self.app_id, key_version, context, tpk, subject_key,
                                 timestamp, nonce)
        evidence = self.device.evidence(binding.report_data())
        return self.client.pb.AppRequest(
            evidence=evidence.encode(), app_id=self.app_id, key_version=key_version, context=context,
            transport_public_key=tpk, subject_key=subject_key, key_type=key_type, timestamp=timestamp, nonce=nonce,
        )

    def get_key(self, *, key_version: int = 1, context: bytes = b"") -> DerivedKey:
        """Ask the committee for this app's key; decrypt and verify it against the group key."""
        started = time.perf_counter()
        transport = kd.TransportKey.generate()  # one transport key for all attempts of this call
        tpk = transport.public.to_bytes()

        def make():
            request = self._request(key_version=key_version, context=context, tpk=tpk)
            return self.client.pb.DeriveKeyRequest(request=request)

        reply = self.client.call("DeriveKey", make)
        hashed = kd.kd_point(self.app_id, key_version, context)
        try:
            encrypted = kd.EncryptedKey.decode(reply.encrypted_key)
            root = kd.decrypt(encrypted, transport, self.anchor.group_key_kd, hashed)
        except (ValueError, kd.KeyVerificationError) as exc:
            raise AppError(f"the returned key does not verify against the group key: {exc}") from None
        return DerivedKey(derive_app_keys(root), self.app_id, key_version, context, reply.epoch,
                          tuple(reply.contributors), time.perf_counter() - started, tuple(reply.excluded))

    def get_certificate(self, subject_key: bytes, key_type: KeyType, *, key_version: int = 1,
                        lifetime: int = 0) -> IssuedCertificate:
        """Ask the committee to certify ``subject_key``; verify the signature against the group key."""
        from derot.constants import DST_CERT
        from derot.crypto import threshold as th

        started = time.perf_counter()

        def make():
            request = self._request(key_version=key_version, context=b"", subject_key=subject_key,
                                    key_type=int(key_type))
            return self.client.pb.IssueCertificateRequest(request=request, lifetime_seconds=lifetime)

        reply = self.client.call("IssueCertificate", make)
        try:
            cert = Certificate.decode(reply.certificate)
            signature = G1.from_bytes(reply.signature)
        except ValueError as exc:
            raise AppError(f"malformed certificate answer: {exc}") from None
        if not th.verify(self.anchor.group_key_sig, cert.digest, signature, DST_CERT):
            raise AppError("the certificate's signature does not verify against the group key")
        if cert.app_id != self.app_id or cert.subject_key != subject_key or cert.key_type != int(key_type):
            raise AppError("the certificate does not certify what was asked")
        return IssuedCertificate(cert, bytes(reply.certificate), signature, reply.epoch, tuple(reply.contributors),
                                 time.perf_counter() - started, tuple(reply.excluded))
