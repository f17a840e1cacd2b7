"""The SDK's building blocks for TEE apps: get your identity key and a certificate from the committee.

Most apps use the one-call :class:`derot.app.DerotClient`; this module is what it is built from:

    anchor = TrustAnchor.from_chain(rpc_url, registry)          # group keys, from the registry
    app = App(RootOfTrustClient(endpoints), device, anchor, app_id)
    key = app.get_key()                                          # AppKeys: Ethereum address, Ed25519, ...
    cert = app.get_certificate(key.keys.public_key(KeyType.SECP256K1), KeyType.SECP256K1)

Without an explicit ``key_version`` both calls use the app's current keyVersion: read from the chain
when the anchor came from it, otherwise learned from the node's ``key_version_mismatch`` refusal.

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
from derot.net.status import KEY_VERSION_MISMATCH


class AppError(DerotError):
    """The committee's answer does not verify (wrong key, wrong certificate): never use it."""

    reason = "answer_not_verified"


def parse_app_id(app_id: bytes | str) -> bytes:
    """An appId as 32 bytes: raw bytes, or the hex text the CLI prints (``0x`` optional)."""
    if isinstance(app_id, str):
        text = app_id.strip()
        try:
            app_id = bytes.fromhex(text[2:] if text.lower().startswith("0x") else text)
        except ValueError:
            raise ValueError(f"app_id must be 32 bytes of hex, got {text[:80]!r}") from None
    if not isinstance(app_id, (bytes, bytearray)) or len(app_id) != 32:
        raise ValueError("app_id must be 32 bytes (64 hex digits)")
    return bytes(app_id)


@dataclass(frozen=True)
class TrustAnchor:
    """What an app trusts: the registry and its current group keys (read from the chain).

    ``rpc_url`` is the Ethereum RPC the keys were read from ("" when they came from elsewhere); the app's
    current keyVersion is read through it."""

    chain_id: int
    registry: str
    epoch: int
    group_key_sig: G2
    group_key_kd: G2
    rpc_url: str = ""

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
        return cls(reg.w3.eth.chain_id, reg.address, epoch, record.group_key_sig, record.group_key_kd, rpc_url)

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
    """A certificate the committee issued, already checked against the group key: the decoded
    ``certificate``, its ABI ``encoded`` bytes (what relying parties and the contract take) and the BLS
    ``signature`` (``signature_eip2537`` is the 128-byte form ``verifyCertificate`` takes)."""

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
    """One app (``app_id``: 32 bytes or hex) running in the TEE behind ``device``; thread-safe."""

    def __init__(self, client: RootOfTrustClient, device, anchor: TrustAnchor, app_id: bytes | str):
        self.client = client
        self.device = device
        self.anchor = anchor
        self.app_id = parse_app_id(app_id)
        self._known_key_version: int | None = None  # the current keyVersion as last learned

    def current_key_version(self, *, refresh: bool = False) -> int:
        """The app's current keyVersion: read from the chain once (anchors from the chain) and again after
        the nodes refuse a version; for anchors without a chain, the version the nodes last named (1 at
        first). An app the registry does not know gets 1: the nodes then refuse it with their reason."""
        known = self._known_key_version
        if known is not None and not refresh:
            return known
        if not self.anchor.rpc_url:
            return known or 1
        from web3 import Web3

        from derot.chain.registry import Registry

        registry = Registry(Web3(Web3.HTTPProvider(self.anchor.rpc_url, request_kwargs={"timeout": 15})),
                            self.anchor.registry)
        record = registry.app(self.app_id)
        self._known_key_version = record.key_version if record is not None else 1
        return self._known_key_version

    def _with_key_version(self, key_version: int | None, call):
        """``call(version)`` with the given version, or the current one. When the nodes refuse the version
        (a rotation since it was learned), once more with the current one: re-read from the chain, which a
        gateway cannot forge (so it cannot push the app back to a rotated-out key); only an anchor without a
        chain takes the version the nodes name."""
        from derot.app.client import RequestFailed

        if key_version is not None:
            return call(key_version)
        version = self.current_key_version()
        try:
            return call(version)
        except RequestFailed as exc:
            if exc.reason != KEY_VERSION_MISMATCH:
                raise
            if self.anchor.rpc_url:
                fresh = self.current_key_version(refresh=True)
            else:
                named = exc.refusal.metadata.get("current_key_version", "")
                if not named.isdigit():
                    raise
                fresh = self._known_key_version = int(named)
            if fresh == version:
                raise  # the nodes have not caught up with the chain yet: the caller retries later
            return call(fresh)

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

    def get_key(self, *, key_version: int | None = None, context: bytes = b"") -> DerivedKey:
        """Ask the committee for this app's key (default: the current keyVersion); decrypt and verify it
        against the group key."""
        return self._with_key_version(key_version, lambda version: self._get_key(version, context))

    def _get_key(self, key_version: int, context: bytes) -> DerivedKey:
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

    def get_certificate(self, subject_key: bytes, key_type: KeyType, *, key_version: int | None = None,
                        lifetime: int = 0) -> IssuedCertificate:
        """Ask the committee to certify ``subject_key`` (default: under the current keyVersion); verify
        the signature against the group key. ``lifetime`` 0 is the nodes' default (24 h)."""
        return self._with_key_version(
            key_version, lambda version: self._get_certificate(subject_key, key_type, version, lifetime))

    def _get_certificate(self, subject_key: bytes, key_type: KeyType, key_version: int,
                         lifetime: int) -> IssuedCertificate:
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
