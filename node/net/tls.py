"""Node TLS identities, pinned by the registry (the contract is the PKI).

Each node has one self-signed P-256 certificate, used as server certificate on both its ports and
as client certificate towards peers. The registry records ``tlsKeyHash = SHA-256(SubjectPublicKeyInfo
DER)``; nothing else about the certificate is trusted.

- A client fetches a peer's certificate with an unauthenticated handshake, checks the key hash against
  the registry (:func:`fetch_pinned_certificate`), then opens a gRPC channel that trusts exactly that
  certificate.
- The peer port requires a client certificate whose key hash is a registered member's; gRPC checks it
  against the pinned certificates, and the Peer handlers re-check the hash from the auth context.

Invariant: certificates carry the DNS name :data:`TLS_SERVER_NAME`, which channels use as
``ssl_target_name_override``; the host part of an endpoint is only a network address.
"""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from derot.errors import DerotError

TLS_SERVER_NAME = "derot-node"


class PinMismatch(DerotError):
    """A peer presented a TLS key other than the one registered for it."""

    reason = "tls_pin_mismatch"


@dataclass(frozen=True, repr=False)
class TlsIdentity:
    """A node's TLS certificate (PEM) and private key (PEM). ``repr`` never shows the key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def key_hash(self) -> bytes:
        return spki_hash(self.cert_pem)

    def __repr__(self) -> str:
        return f"TlsIdentity(key_hash={self.key_hash.hex()})"


def generate_identity(common_name: str = "derot node", valid_days: int = 3650) -> TlsIdentity:
    """A fresh P-256 key and a self-signed certificate for it (CA-capable so it can be a trust anchor).

    The subject name ends with the key hash: trust stores look issuers up by name, so every node's
    self-signed certificate must have a name of its own.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    unique = f"{common_name} {hashlib.sha256(spki).hexdigest()[:16]}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TlsIdentity(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def spki_hash(cert_pem: bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (DER): the value pinned on-chain."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def _unverified_client_context() -> ssl.SSLContext:
    """A TLS client context that accepts any certificate and loads no CA store: the fetched certificate is
    checked by its pinned key hash, never by a CA. (``ssl.create_default_context()`` parses the system CA
    bundle on every call, about 30 ms of CPU; a 64-member committee fetches thousands of certificates.)"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


#: shared by every fetch (an ``SSLContext`` may wrap sockets from several threads at once)
_FETCH_CONTEXT = _unverified_client_context()


def fetch_certificate(host: str, port: int, timeout: float = 3.0) -> bytes:
    """The PEM certificate a TLS server presents (no verification: the caller pins it)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with _FETCH_CONTEXT.wrap_socket(sock, server_hostname=TLS_SERVER_NAME) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ConnectionError(f"{host}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


def fetch_pinned_certificate(host: str, port: int, expected_hash: bytes, timeout: float = 3.0) -> bytes:
    """Fetch a server's certificate and check its key hash; raises :class:`PinMismatch` otherwise."""
    pem = fetch_certificate(host, port, timeout)
    got = spki_hash(pem)
    if got != expected_hash:
        raise PinMismatch(f"{host}:{port} presented TLS key {got.hex()[:16]}…, registry pins {expected_hash.hex()[:16]}…")
    return pem


def channel_options() -> list[tuple[str, object]]:
    """gRPC channel options for talking to a derot node over TLS."""
    return [
        ("grpc.ssl_target_name_override", TLS_SERVER_NAME),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ("grpc.keepalive_time_ms", 30_000),
        # a node that restarts (or a peer that does not trust us yet) must be retried within seconds,
        # not after grpc's default exponential backoff of up to two minutes
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        # grpc reads this as the minimum connect timeout (doc/connection-backoff.md MIN_CONNECT_TIMEOUT): the time
        # one attempt may take to connect and finish its TLS handshake. At 100 ms it cut off every handshake
        # over a link with an RTT of 100 ms or more (bench/wan.py); a refused connection still retries after
        # the 200 ms initial backoff
        ("grpc.min_reconnect_backoff_ms", 4_000),
        # each channel its own subchannels: a dropped channel must not hand its backoff state to the next
        ("grpc.use_local_subchannel_pool", 1),
    ]
