"""X.509 and DER building blocks of the devnet PKI (:mod:`derot.attest.devnet`): certificates, CRLs, Intel's SGX
PCK extension, AMD's integer extensions, raw P-256 signatures. Every name carries ``O=derot devnet``."""

from __future__ import annotations

import datetime
import hashlib
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ

DEVNET_ORG = "derot devnet"
SGX_EXT = "1.2.840.113741.1.13.1"
AMD_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def now_ts() -> int:
    return int(time.time())


def utc_datetime(ts: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def iso_time(ts: int) -> str:
    return utc_datetime(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def devnet_name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEVNET_ORG)])


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_cert(subject, issuer_name, pub, signer, nb, na, *, ca, serial, extra=(), sign_kwargs=None, issuer_pub=None):
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(pub)
        .serial_number(serial)
        .not_valid_before(utc_datetime(nb))
        .not_valid_after(utc_datetime(na))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub or pub), critical=False)
    )
    for ext in extra:
        b = b.add_extension(ext, critical=False)
    kwargs = dict(sign_kwargs or {})
    algorithm = kwargs.pop("algorithm", hashes.SHA384() if isinstance(signer, rsa.RSAPrivateKey) else hashes.SHA256())
    return b.sign(signer, algorithm, **kwargs)


def make_crl(issuer_cert, issuer_key, nb, na) -> bytes:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(utc_datetime(nb))
        .next_update(utc_datetime(na))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def sign_p256_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def p256_point(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


def der_seq(*items):
    s = univ.Sequence()
    for i, item in enumerate(items):
        s.setComponentByPosition(i, item)
    return s


def sgx_extension(fmspc: bytes, ppid: bytes, cpu_svn: bytes, pce_svn: int) -> x509.UnrecognizedExtension:
    """Intel's SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1), platform CA flavour."""
    o = lambda suffix: univ.ObjectIdentifier(f"{SGX_EXT}.{suffix}")  # noqa: E731
    tcb = univ.Sequence()
    for i in range(16):
        tcb.setComponentByPosition(i, der_seq(o(f"2.{i + 1}"), univ.Integer(cpu_svn[i])))
    tcb.setComponentByPosition(16, der_seq(o("2.17"), univ.Integer(pce_svn)))
    tcb.setComponentByPosition(17, der_seq(o("2.18"), univ.OctetString(cpu_svn)))
    config = der_seq(
        der_seq(o("7.1"), univ.Boolean(False)),
        der_seq(o("7.2"), univ.Boolean(False)),
        der_seq(o("7.3"), univ.Boolean(False)),
    )
    value = der_seq(
        der_seq(o(1), univ.OctetString(ppid)),
        der_seq(o(2), tcb),
        der_seq(o(3), univ.OctetString(b"\0\0")),
        der_seq(o(4), univ.OctetString(fmspc)),
        der_seq(o(5), univ.Enumerated(1)),
        der_seq(o(6), univ.OctetString(hashlib.sha256(b"instance" + ppid).digest()[:16])),
        der_seq(o(7), config),
    )
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXT), der_encoder.encode(value))


def amd_int_ext(oid: str, value: int) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), der_encoder.encode(univ.Integer(value)))
