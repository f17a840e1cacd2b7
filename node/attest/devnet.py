"""Devnet roots: a laptop-sized stand-in for Intel's and AMD's PKI, producing real-format evidence.

:class:`DevnetRoots` holds

- an Intel-style PKI: root CA, PCK Platform CA and TCB signing key (ECDSA P-256), the root CA CRL and
  PCK CRL, and signed TDX collateral (TCB info v3 with ``tdxModuleIdentities``, TD_QE identity) per FMSPC,
  in dcap-qvl's JSON form;
- an AMD-style PKI: ARK, ASK and ASVK (RSA-4096, RSA-PSS/SHA-384/salt 48) that sign per-chip VCEKs (and
  VLEKs) carrying the TCB and hwID extensions.

:class:`DevnetTee` makes TDX v4 quotes and SEV-SNP v3 reports with chosen measurements and report_data,
signed with keys generated once per TEE (about a millisecond per piece of evidence; no certificate is
made per quote). The evidence goes through exactly the production verifiers: dcap-qvl with the devnet
root CA for TDX, and :mod:`derot.attest.sev_snp` with the devnet ARK pinned for SNP.

Every devnet certificate carries ``O=derot devnet``; production trust configurations refuse them
(:class:`derot.attest.errors.RootNotTrusted`). Devnet VCEKs use serial number 1: ``cryptography``
cannot issue AMD's serial 0.

On disk (``DevnetRoots.generate(dir)`` / ``DevnetRoots.load(dir)``), so separate node processes share one
devnet: ``devnet.json`` plus PEM keys and certificates, CRLs (DER), and ``collateral/tdx-<fmspc>.json``.
The private keys there are devnet keys; anyone holding the directory can make devnet evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import char, univ

from derot.attest import intel_quote as iq
from derot.attest import sev_snp
from derot.attest.collateral import Collateral
from derot.attest.devnet_x509 import (
    AMD_PSS,
    amd_int_ext,
    cert_pem,
    der_seq,
    devnet_name,
    iso_time,
    key_pem,
    make_cert,
    make_crl,
    now_ts,
    p256_point,
    sgx_extension,
    sign_p256_raw,
)
from derot.constants import Platform

FORMAT_VERSION = 1
DEFAULT_FMSPC = bytes.fromhex("00806f050000")
#: Platform TCB of devnet "machines" (the PCK's CPUSVN/PCESVN and the TD's TEE_TCB_SVN).
DEFAULT_CPU_SVN = bytes([3, 3, 2, 2, 4, 1, 0, 5] + [0] * 8)
DEFAULT_PCE_SVN = 13
DEFAULT_TEE_TCB_SVN = bytes([6, 1, 3] + [0] * 13)  # TDX module 1.x, SVN 6; TDX late microcode 3
DEFAULT_SNP_TCB = sev_snp.TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
#: TD attributes: SEPT_VE_DISABLE set, not debug.
TD_ATTRIBUTES = (1 << 28).to_bytes(8, "little")
TD_XFAM = bytes.fromhex("e702060000000000")
QE_MRSIGNER = hashlib.sha256(b"derot devnet TD quoting enclave signer").digest()
QE_ISVSVN = 4


# --------------------------------------------------------------------------- roots


@dataclass
class _Pki:
    keys: dict = field(default_factory=dict)
    certs: dict = field(default_factory=dict)
    blobs: dict = field(default_factory=dict)


class DevnetRoots:
    """Devnet Intel-style and AMD-style PKIs. Make with :meth:`generate`, share with :meth:`load`."""

    def __init__(self, pki: _Pki, created: int, not_after: int, directory: Path | None):
        self._pki = pki
        self.created = created
        self.not_after = not_after
        self.directory = directory
        self._collateral: dict[bytes, Collateral] = {}
        self._lock = threading.Lock()

    # ---- construction

    @classmethod
    def generate(cls, directory: str | os.PathLike | None = None, *, now: int | None = None, years: int = 10) -> "DevnetRoots":
        """New devnet PKIs valid from ``now`` - 1 day for ``years``; saved to ``directory`` when given."""
        created = (now if now is not None else now_ts()) - 86400
        na = created + years * 365 * 86400
        pki = _Pki()
        k, c = pki.keys, pki.certs
        k["intel_root"] = ec.generate_private_key(ec.SECP256R1())
        c["intel_root"] = make_cert(devnet_name("derot devnet SGX Root CA"), devnet_name("derot devnet SGX Root CA"),
                                k["intel_root"].public_key(), k["intel_root"], created, na, ca=True, serial=1)
        k["intel_pck_ca"] = ec.generate_private_key(ec.SECP256R1())
        c["intel_pck_ca"] = make_cert(devnet_name("derot devnet SGX PCK Platform CA"), c["intel_root"].subject,
                                  k["intel_pck_ca"].public_key(), k["intel_root"], created, na, ca=True, serial=2,
                                  issuer_pub=k["intel_root"].public_key())
        k["intel_tcb_signing"] = ec.generate_private_key(ec.SECP256R1())
        c["intel_tcb_signing"] = make_cert(devnet_name("derot devnet SGX TCB Signing"), c["intel_root"].subject,
                                       k["intel_tcb_signing"].public_key(), k["intel_root"], created, na, ca=False,
                                       serial=3, issuer_pub=k["intel_root"].public_key())
        pki.blobs["intel_root_crl"] = make_crl(c["intel_root"], k["intel_root"], created, na)
        pki.blobs["intel_pck_crl"] = make_crl(c["intel_pck_ca"], k["intel_pck_ca"], created, na)

        pss = {"rsa_padding": AMD_PSS}
        k["amd_ark"] = rsa.generate_private_key(65537, 4096)
        c["amd_ark"] = make_cert(devnet_name("ARK-Milan"), devnet_name("ARK-Milan"), k["amd_ark"].public_key(), k["amd_ark"],
                             created, na, ca=True, serial=1, sign_kwargs=pss)
        for name, cn, serial in (("amd_ask", "SEV-Milan", 2), ("amd_asvk", "SEV-VLEK-Milan", 3)):
            k[name] = rsa.generate_private_key(65537, 4096)
            c[name] = make_cert(devnet_name(cn), c["amd_ark"].subject, k[name].public_key(), k["amd_ark"], created, na,
                            ca=True, serial=serial, sign_kwargs=pss, issuer_pub=k["amd_ark"].public_key())
        k["nvidia_ca"] = ec.generate_private_key(ec.SECP384R1())
        c["nvidia_ca"] = make_cert(devnet_name("derot devnet NVIDIA Device Identity CA"), devnet_name("derot devnet NVIDIA Device Identity CA"),
                               k["nvidia_ca"].public_key(), k["nvidia_ca"], created, na, ca=True, serial=1,
                               sign_kwargs={"algorithm": hashes.SHA384()})
        roots = cls(pki, created, na, Path(directory) if directory is not None else None)
        if directory is not None:
            roots.save(directory)
        return roots

    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, key in self._pki.keys.items():
            path = d / f"{name}.key.pem"
            path.write_bytes(key_pem(key))
            path.chmod(0o600)
        for name, cert in self._pki.certs.items():
            (d / f"{name}.pem").write_bytes(cert_pem(cert))
        for name, blob in self._pki.blobs.items():
            (d / f"{name}.der").write_bytes(blob)
        meta = {"format": FORMAT_VERSION, "created": self.created, "not_after": self.not_after,
                "keys": sorted(self._pki.keys), "certs": sorted(self._pki.certs), "blobs": sorted(self._pki.blobs)}
        (d / "devnet.json").write_text(json.dumps(meta, indent=1))
        self.directory = d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "DevnetRoots":
        d = Path(directory)
        meta = json.loads((d / "devnet.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{d}: unsupported devnet format {meta.get('format')}")
        pki = _Pki()
        for name in meta["keys"]:
            pki.keys[name] = serialization.load_pem_private_key((d / f"{name}.key.pem").read_bytes(), None)
        for name in meta["certs"]:
            pki.certs[name] = x509.load_pem_x509_certificate((d / f"{name}.pem").read_bytes())
        for name in meta["blobs"]:
            pki.blobs[name] = (d / f"{name}.der").read_bytes()
        return cls(pki, meta["created"], meta["not_after"], d)

    # ---- public material (what verifiers pin)

    @property
    def intel_root_der(self) -> bytes:
        return self._pki.certs["intel_root"].public_bytes(serialization.Encoding.DER)

    def amd_root_pems(self) -> dict[str, tuple[bytes, bytes, bytes]]:
        c = self._pki.certs
        return {"Milan": (cert_pem(c["amd_ark"]), cert_pem(c["amd_ask"]), cert_pem(c["amd_asvk"]))}

    def amd_roots(self):
        return sev_snp.AmdRoots.from_pem_files(self.amd_root_pems(), "devnet")

    def nvidia_roots(self):
        from derot.attest.nvidia_gpu import NvidiaRoots

        return NvidiaRoots([self._pki.certs["nvidia_ca"]], "devnet")

    # ---- Intel collateral

    def tdx_collateral(self, fmspc: bytes = DEFAULT_FMSPC) -> Collateral:
        """Signed TDX collateral for ``fmspc`` (made once, then read from memory or the directory)."""
        hit = self._collateral.get(fmspc)
        if hit is not None:
            return hit
        path = self.directory / "collateral" / f"tdx-{fmspc.hex()}.json" if self.directory else None
        if path is not None and path.exists():
            collateral = Collateral.from_json(path.read_text())
        else:
            collateral = Collateral.from_json(self._make_tdx_collateral(fmspc))
            if path is not None:
                path.parent.mkdir(exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(collateral.json_text)
                os.replace(tmp, path)
        with self._lock:
            self._collateral[fmspc] = collateral
        return collateral

    def _make_tdx_collateral(self, fmspc: bytes) -> str:
        k, c, b = self._pki.keys, self._pki.certs, self._pki.blobs
        issue, nxt = iso_time(self.created), iso_time(self.not_after)
        comps = lambda svns: [{"svn": s} for s in svns]  # noqa: E731
        zero48 = "00" * 48
        tcb_info = {
            "id": "TDX", "version": 3, "issueDate": issue, "nextUpdate": nxt, "fmspc": fmspc.hex().upper(),
            "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 17,
            "tdxModule": {"mrsigner": zero48, "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF"},
            "tdxModuleIdentities": [
                {"id": "TDX_03", "mrsigner": zero48, "attributes": "0000000000000000",
                 "attributesMask": "FFFFFFFFFFFFFFFF",
                 "tcbLevels": [{"tcb": {"isvsvn": 3}, "tcbDate": issue, "tcbStatus": "UpToDate"}]},
                {"id": "TDX_01", "mrsigner": zero48, "attributes": "0000000000000000",
                 "attributesMask": "FFFFFFFFFFFFFFFF",
                 "tcbLevels": [{"tcb": {"isvsvn": 4}, "tcbDate": issue, "tcbStatus": "UpToDate"},
                               {"tcb": {"isvsvn": 2}, "tcbDate": "2023-08-09T00:00:00Z", "tcbStatus": "OutOfDate",
                                "advisoryIDs": ["DEROT-DEVNET-SA-00002"]}]},
            ],
            "tcbLevels": [
                {"tcb": {"sgxtcbcomponents": comps(DEFAULT_CPU_SVN), "pcesvn": DEFAULT_PCE_SVN,
                         "tdxtcbcomponents": comps([5, 0, 3] + [0] * 13)},
                 "tcbDate": issue, "tcbStatus": "UpToDate"},
                {"tcb": {"sgxtcbcomponents": comps([2, 2, 2, 2, 3, 1, 0, 5] + [0] * 8), "pcesvn": 11,
                         "tdxtcbcomponents": comps([5, 0, 2] + [0] * 13)},
                 "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "OutOfDate",
                 "advisoryIDs": ["DEROT-DEVNET-SA-00001"]},
            ],
        }
        qe_identity = {
            "id": "TD_QE", "version": 2, "issueDate": issue, "nextUpdate": nxt, "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000", "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": QE_MRSIGNER.hex().upper(), "isvprodid": 2,
            "tcbLevels": [{"tcb": {"isvsvn": QE_ISVSVN}, "tcbDate": issue, "tcbStatus": "UpToDate"}],
        }
        tcb_text = json.dumps(tcb_info, separators=(",", ":"))
        qe_text = json.dumps(qe_identity, separators=(",", ":"))
        signer_chain = (cert_pem(c["intel_tcb_signing"]) + cert_pem(c["intel_root"])).decode()
        return json.dumps({
            "pck_crl_issuer_chain": (cert_pem(c["intel_pck_ca"]) + cert_pem(c["intel_root"])).decode(),
            "root_ca_crl": b["intel_root_crl"].hex(),
            "pck_crl": b["intel_pck_crl"].hex(),
            "tcb_info_issuer_chain": signer_chain,
            "tcb_info": tcb_text,
            "tcb_info_signature": sign_p256_raw(k["intel_tcb_signing"], tcb_text.encode()).hex(),
            "qe_identity_issuer_chain": signer_chain,
            "qe_identity": qe_text,
            "qe_identity_signature": sign_p256_raw(k["intel_tcb_signing"], qe_text.encode()).hex(),
        })

    # ---- issuing per-machine certificates (once per DevnetTee)

    def issue_pck(self, fmspc: bytes, ppid: bytes, cpu_svn: bytes, pce_svn: int):
        """A PCK key and its chain (leaf, PCK CA, root; PEM) for one devnet machine."""
        k, c = self._pki.keys, self._pki.certs
        key = ec.generate_private_key(ec.SECP256R1())
        cert = make_cert(devnet_name("derot devnet SGX PCK Certificate"), c["intel_pck_ca"].subject, key.public_key(),
                     k["intel_pck_ca"], self.created, self.not_after, ca=False,
                     serial=int.from_bytes(hashlib.sha256(ppid).digest()[:8], "big") | 1,
                     extra=[sgx_extension(fmspc, ppid, cpu_svn, pce_svn)],
                     issuer_pub=k["intel_pck_ca"].public_key())
        return key, cert_pem(cert) + cert_pem(c["intel_pck_ca"]) + cert_pem(c["intel_root"])

    def issue_vek(self, chip_id: bytes, tcb: sev_snp.TcbVersion, *, vlek: bool = False,
                  not_after: int | None = None, key: ec.EllipticCurvePrivateKey | None = None):
        """A VCEK (or VLEK) key and DER certificate for one devnet chip at one TCB."""
        k, c = self._pki.keys, self._pki.certs
        issuer = "amd_asvk" if vlek else "amd_ask"
        key = key or ec.generate_private_key(ec.SECP384R1())
        base = "1.3.6.1.4.1.3704.1"
        extra = [
            amd_int_ext(f"{base}.1", 0),
            x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.2"), der_encoder.encode(char.IA5String("Milan-B0"))),
            amd_int_ext(f"{base}.3.1", tcb.bootloader),
            amd_int_ext(f"{base}.3.2", tcb.tee),
            amd_int_ext(f"{base}.3.3", tcb.snp),
            amd_int_ext(f"{base}.3.8", tcb.microcode),
        ]
        if vlek:
            extra.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.5"), b"derot-devnet-csp"))
        else:
            extra.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{base}.4"), chip_id))
        cert = make_cert(devnet_name("SEV-VLEK" if vlek else "SEV-VCEK"), c[issuer].subject, key.public_key(), k[issuer],
                     self.created, not_after if not_after is not None else self.not_after, ca=False, serial=1,
                     extra=extra, sign_kwargs={"rsa_padding": AMD_PSS}, issuer_pub=k[issuer].public_key())
        return key, cert.public_bytes(serialization.Encoding.DER)

    def issue_gpu(self, fwid: bytes):
        """An NVIDIA-style GPU attestation key and chain (leaf, devnet CA; PEM) with ``fwid``."""
        k, c = self._pki.keys, self._pki.certs
        key = ec.generate_private_key(ec.SECP384R1())
        fwid_ext = der_encoder.encode(der_seq(
            univ.Integer(1), der_seq(univ.ObjectIdentifier("2.16.840.1.101.3.4.2.2"), univ.OctetString(fwid))))
        cert = make_cert(devnet_name("derot devnet GH100 GSP FMC LF"), c["nvidia_ca"].subject, key.public_key(), k["nvidia_ca"],
                     self.created, self.not_after, ca=False, serial=int.from_bytes(os.urandom(8), "big") | 1,
                     extra=[x509.UnrecognizedExtension(x509.ObjectIdentifier("2.23.133.5.4.1"), fwid_ext)],
                     sign_kwargs={"algorithm": hashes.SHA384()}, issuer_pub=k["nvidia_ca"].public_key())
        return key, cert_pem(cert) + cert_pem(c["nvidia_ca"])


# --------------------------------------------------------------------------- TEEs


def _td_report(registers: dict[str, bytes], report_data: bytes, tee_tcb_svn: bytes, debug: bool) -> bytes:
    attrs = int.from_bytes(TD_ATTRIBUTES, "little") | (iq.TD_ATTR_DEBUG if debug else 0)
    return b"".join([
        tee_tcb_svn,
        registers.get("MRSEAM", hashlib.sha384(b"derot devnet TDX module").digest()),
        bytes(48),  # MRSIGNERSEAM: Intel's module, all zero
        bytes(8),  # SEAMATTRIBUTES
        attrs.to_bytes(8, "little"),
        TD_XFAM,
        registers.get("MRTD", bytes(48)),
        registers.get("MRCONFIGID", bytes(48)),
        registers.get("MROWNER", bytes(48)),
        registers.get("MROWNERCONFIG", bytes(48)),
        registers.get("RTMR0", bytes(48)),
        registers.get("RTMR1", bytes(48)),
        registers.get("RTMR2", bytes(48)),
        registers.get("RTMR3", bytes(48)),
        report_data,
    ])


def _qe_report(cpu_svn: bytes, report_data: bytes) -> bytes:
    attributes = bytes.fromhex("11000000000000000700000000000000")
    return b"".join([
        cpu_svn, bytes(4), bytes(12), bytes(16), attributes,
        hashlib.sha256(b"derot devnet TD QE").digest(), bytes(32), QE_MRSIGNER, bytes(32), bytes(64),
        struct.pack("<HHH", 2, QE_ISVSVN, 0), bytes(42), bytes(16), report_data,
    ])


class DevnetTee:
    """One devnet TEE (a TDX TD or an SNP guest) with fixed measurements; :meth:`quote` makes evidence.

    ``measurements`` are the platform's identity registers (claims.IDENTITY_REGISTERS names; missing
    ones are zero). TDX: ``fmspc`` picks the machine family (what governance revokes), ``tee_tcb_svn``,
    ``cpu_svn`` and ``pce_svn`` its TCB. SNP: ``chip_id`` (64 bytes) and ``tcb``; ``vlek`` signs with a
    VLEK instead of a VCEK.
    """

    def __init__(
        self,
        roots: DevnetRoots,
        platform: Platform,
        measurements: dict[str, bytes] | None = None,
        *,
        fmspc: bytes = DEFAULT_FMSPC,
        chip_id: bytes | None = None,
        debug: bool = False,
        tee_tcb_svn: bytes = DEFAULT_TEE_TCB_SVN,
        cpu_svn: bytes = DEFAULT_CPU_SVN,
        pce_svn: int = DEFAULT_PCE_SVN,
        tcb: sev_snp.TcbVersion = DEFAULT_SNP_TCB,
        vlek: bool = False,
        vek_not_after: int | None = None,
    ):
        self.roots = roots
        self.platform = Platform(platform)
        self.measurements = dict(measurements or {})
        self.debug = debug
        if self.platform == Platform.TDX:
            self.fmspc = fmspc
            self._tee_tcb_svn = tee_tcb_svn
            ppid = hashlib.sha256(b"ppid" + os.urandom(16)).digest()[:16]
            pck_key, chain = roots.issue_pck(fmspc, ppid, cpu_svn, pce_svn)
            self._att_key = ec.generate_private_key(ec.SECP256R1())
            att_pub = p256_point(self._att_key)
            auth = hashlib.sha256(b"qe auth" + ppid).digest()
            qe_report = _qe_report(cpu_svn, hashlib.sha256(att_pub + auth).digest() + bytes(32))
            qe_cert_data = (
                qe_report + sign_p256_raw(pck_key, qe_report)
                + struct.pack("<H", len(auth)) + auth
                + struct.pack("<HI", iq.CERT_TYPE_PCK_CHAIN, len(chain)) + chain
            )
            self._tail = att_pub + struct.pack("<HI", iq.CERT_TYPE_QE_REPORT, len(qe_cert_data)) + qe_cert_data
            self._header = struct.pack("<HHIHH", 4, iq.ATT_KEY_ECDSA_P256, iq.TEE_TDX, 0, 0) + iq.INTEL_QE_VENDOR_ID + bytes(20)
            self.collateral = roots.tdx_collateral(fmspc)
        elif self.platform == Platform.SEV_SNP:
            self.chip_id = chip_id if chip_id is not None else os.urandom(64)
            if len(self.chip_id) != 64:
                raise ValueError("chip_id must be 64 bytes")
            self.tcb = tcb
            self.vlek = vlek
            self._vek_key, self.vek_der = roots.issue_vek(self.chip_id, tcb, vlek=vlek, not_after=vek_not_after)
        else:
            raise ValueError(f"devnet makes TDX and SEV-SNP evidence, not {self.platform.name}")

    def quote(self, report_data: bytes):
        """Evidence binding ``report_data`` (64 bytes): a TDX v4 quote or an SNP v3 report."""
        from derot.attest.evidence import Evidence

        if len(report_data) != 64:
            raise ValueError("report_data must be 64 bytes")
        if self.platform == Platform.TDX:
            return Evidence(platform=Platform.TDX, quote=self.tdx_quote(report_data),
                            collateral=self.collateral.json_text.encode())
        return Evidence(platform=Platform.SEV_SNP, quote=self.snp_report(report_data), vek=self.vek_der)

    def tdx_quote(self, report_data: bytes) -> bytes:
        signed = self._header + _td_report(self.measurements, report_data, self._tee_tcb_svn, self.debug)
        sig_data = sign_p256_raw(self._att_key, signed) + self._tail
        return signed + struct.pack("<I", len(sig_data)) + sig_data

    def snp_report(self, report_data: bytes) -> bytes:
        tcb = self.tcb.to_u64()
        policy = 0x30000 | (1 << sev_snp.POLICY_BITS["debug"] if self.debug else 0)
        body = bytearray(sev_snp.REPORT_SIZE)
        struct.pack_into("<IIQ", body, 0x00, 3, 0, policy)
        struct.pack_into("<IIQQI", body, 0x30, 0, sev_snp.SIG_ALGO_ECDSA_P384_SHA384, tcb, 0x3,
                         (sev_snp.SIGNING_KEY_VLEK if self.vlek else 0) << 2)
        body[0x50:0x90] = report_data
        body[0x90:0xC0] = self.measurements.get("MEASUREMENT", bytes(48))
        body[0xC0:0xE0] = self.measurements.get("HOST_DATA", bytes(32))
        body[0x140:0x160] = os.urandom(32)
        struct.pack_into("<Q", body, 0x180, tcb)
        body[0x188:0x18B] = bytes([0x19, 0x01, 0x01])  # Milan CPUID family/model/stepping
        body[0x1A0:0x1E0] = self.chip_id
        struct.pack_into("<Q4s4sQ", body, 0x1E0, tcb, bytes([5, 55, 1, 0]), bytes([5, 55, 1, 0]), tcb)
        r, s = decode_dss_signature(self._vek_key.sign(bytes(body[: sev_snp.SIGNED_SIZE]), ec.ECDSA(hashes.SHA384())))
        body[0x2A0:0x2E8] = r.to_bytes(72, "little")
        body[0x2E8:0x330] = s.to_bytes(72, "little")
        return bytes(body)


class DevnetGpu:
    """A devnet NVIDIA-style GPU: SPDM 1.1 GET_MEASUREMENTS exchanges signed by a devnet attestation key."""

    def __init__(self, roots: DevnetRoots, measurements: list[bytes] | None = None, *, fwid: bytes | None = None,
                 driver_version: str = "550.90.07", project: str = "G520"):
        """``project`` is the board id the report's signed opaque data names ("G520": an HGX H100 SXM5 board,
        so the GPU is recognised as an H100; derot.attest.gpu_model)."""
        self.measurements = list(measurements or [hashlib.sha384(b"devnet gpu %d" % i).digest() for i in range(8)])
        self.fwid = fwid or hashlib.sha384(b"derot devnet GPU firmware").digest()
        self._key, self.cert_chain = roots.issue_gpu(self.fwid)
        self._opaque = b"".join(
            struct.pack("<HH", t, len(v)) + v
            for t, v in ((3, driver_version.encode() + b"\0"), (6, bytes([1, 0, 0x9F, 0x96, 1, 0, 0, 0])),
                         (17, project.encode() + b"\0"), (20, self.fwid))
        )

    @property
    def measurement_digest(self) -> bytes:
        """The measurement digest this GPU's claims carry (every block, by index): what an app owner allows."""
        from derot.attest.claims import measurement_digest

        return measurement_digest(Platform.NVIDIA_GPU,
                                  {f"MEASUREMENT[{i + 1}]": m for i, m in enumerate(self.measurements)})

    def report(self, nonce: bytes) -> bytes:
        """request || response for SPDM nonce ``nonce`` (32 bytes)."""
        request = bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + b"\0"
        record = b"".join(
            struct.pack("<BBH", i + 1, 1, 3 + len(m)) + struct.pack("<BH", 1, len(m)) + m
            for i, m in enumerate(self.measurements)
        )
        response = (bytes([0x11, 0x60, 0, 0, len(self.measurements)]) + len(record).to_bytes(3, "little") + record
                    + os.urandom(32) + struct.pack("<H", len(self._opaque)) + self._opaque)
        r, s = decode_dss_signature(self._key.sign(request + response, ec.ECDSA(hashes.SHA384())))
        return request + response + r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def evidence_for(self, report_data: bytes):
        """GpuEvidence paired with CPU evidence carrying ``report_data``."""
        from derot.attest.binding import gpu_nonce
        from derot.attest.evidence import GpuEvidence

        return GpuEvidence(self.report(gpu_nonce(report_data)), self.cert_chain)


# --------------------------------------------------------------------------- devnet measurements

#: Sizes of the identity registers a devnet TEE reports (missing ones are zero-filled).
REGISTER_SIZES: dict[Platform, dict[str, int]] = {
    Platform.TDX: {"MRTD": 48, "RTMR0": 48, "RTMR1": 48, "RTMR2": 48, "RTMR3": 48, "MRCONFIGID": 48},
    Platform.SEV_SNP: {"MEASUREMENT": 48, "HOST_DATA": 32},
}


def image_registers(platform: Platform, image: str) -> dict[str, bytes]:
    """The launch measurement a devnet TEE reports for a named image ("derot-node", "my-app v1"…):
    MRTD (TDX) or MEASUREMENT (SNP) = SHA-384 of a label; other registers zero."""
    value = hashlib.sha384(b"derot devnet image\x00" + image.encode()).digest()
    return {"MRTD": value} if Platform(platform) == Platform.TDX else {"MEASUREMENT": value}


def devnet_measurement_digest(platform: Platform, registers: dict[str, bytes]) -> bytes:
    """The canonical measurement digest (``claims.measurement_digest``) devnet evidence with these
    registers will carry: what an app owner or governance allow-lists."""
    from derot.attest.claims import measurement_digest

    sizes = REGISTER_SIZES[Platform(platform)]
    full = {name: registers.get(name, bytes(size)) for name, size in sizes.items()}
    return measurement_digest(Platform(platform), full)


NODE_IMAGE = "derot-node"
#: devnet nodes' TDX machines are a different family (FMSPC) than the apps' DEFAULT_FMSPC, so revoking
#: the apps' TDX FMSPC in a demo does not also revoke the committee's own hardware
NODE_FMSPC = bytes.fromhex("30806f040000")


def node_measurements(platform: Platform) -> dict[str, bytes]:
    """The registers of the devnet node image (what governance allows for committee membership)."""
    return image_registers(platform, NODE_IMAGE)
