"""Per-epoch encryption keys, share boxes, and the proofs that make a complaint self-verifying.

Everything here lives in BLS12-381 G1 (prime order r; decoding checks the subgroup and refuses the
identity), with generator ``G``.

- **Epoch key.** Recipient j draws ``e_j`` per run and announces ``E_j = e_j·G``, signed by its Ed25519
  identity key (the ANNOUNCE message). ``e_j`` is erased with the run's other secrets.
- **Deal key.** Dealer i draws ``d_i`` per run and publishes ``D_i = d_i·G`` in its bundle with a Schnorr
  proof of knowledge of ``d_i`` bound to (session, dealer) (:func:`prove_knowledge`).
- **Share box.** ``S_ij = d_i·E_j = e_j·D_i``; ``key ‖ nonce = HKDF(S_ij, context)``; AES-256-GCM with
  the share AAD (network, epoch, session, dealer, recipient). One key per (dealer, recipient) box.
- **Complaint.** If j's box from i does not open to two scalars matching i's commitments, j publishes
  ``S_ij`` and a Chaum–Pedersen proof that ``log_G(E_j) = log_{D_i}(S_ij)`` (:func:`prove_dleq`). Anyone
  re-derives the box key from ``S_ij``, opens the box, and sees the bad share for themselves.

Security argument (why a complaint never reveals an honest member's share):

1. *A complaint cannot frame an honest dealer.* The DLEQ proof is sound: a complainer that cannot
   produce a proof for a value other than ``e_j·D_i`` (except with probability ~1/r per attempt,
   Fiat–Shamir in the random-oracle model). So the disclosed ``S`` is the one key the dealer's box was
   sealed under, and the box's content is fixed by the dealer's signed bundle. An honest dealer's box
   opens to a share that matches its commitments, so the complaint is found false by every verifier.
2. *A complaint opens exactly one box.* ``S_ij`` keys only the boxes dealer i sealed to j's epoch key
   in this session (i's own). Could a cheating dealer make j disclose the key of an honest dealer h's
   box, by copying ``D_h`` into its own bundle? No: the bundle must carry a proof of knowledge of
   ``log_G(D_i)`` whose challenge hashes (session, i), which a dealer can produce only if it knows
   ``d_h``; an honest recipient checks it before complaining, and verifiers check it again.
3. *A complaint reveals nothing about the complainer's key.* ``S_ij = d_i·E_j`` is computable by the
   dealer, who knows ``d_i`` (point 2); the DLEQ proof is honest-verifier zero-knowledge. So the
   complaint gives the adversary nothing it did not have, even when the dealer is the adversary.
4. *A false complaint reveals only the complainer's own share.* If a corrupt j complains about an
   honest dealer, the opened box holds ``f_i(j)``, which j knew. No other box opens (point 2).
5. *Forward secrecy.* Boxes are sealed to ``E_j``, never to long-term identity keys; ``e_j`` and ``d_i``
   are erased after the run, so a later theft of identity keys opens nothing recorded today.

The proofs are non-interactive (Fiat–Shamir with SHA-512 reduced modulo r, domain-separated and bound
to the run's session id, dealer and recipient) and encode as ``c ‖ z``, two 32-byte scalars.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from derot.crypto.bls import G1, R, PointDecodeError, random_scalar, require_bytes, scalar_from_wide_bytes
from derot.errors import DerotError

POINT_SIZE = 48
PROOF_SIZE = 64
TAG_SIZE = 16
SCALAR_SIZE = 32

_POK_DOMAIN = b"DEROT-V1-DKG-DEAL-KEY-POK\x00"
_DLEQ_DOMAIN = b"DEROT-V1-DKG-COMPLAINT-DLEQ\x00"
_BOX_LABEL = b"DEROT-V1-DKG-SHARE-BOX-G1-HKDF-SHA256-AES256GCM\x00"


class ShareBoxError(DerotError):
    """A share box did not open (wrong key, wrong context, tampered)."""

    reason = "dkg_share_box"


def decode_point(data: bytes) -> G1:
    """A G1 point from 48 compressed bytes; raises ``PointDecodeError`` (also for the identity or non-bytes)."""
    data = require_bytes(data, "G1 point", PointDecodeError)
    if len(data) != POINT_SIZE:
        raise PointDecodeError(f"{len(data)} bytes, expected {POINT_SIZE}")
    return G1.from_bytes(data)


def _challenge(domain: bytes, *parts: bytes) -> int:
    h = hashlib.sha512(domain)
    for part in parts:
        h.update(struct.pack(">I", len(part)) + part)
    return scalar_from_wide_bytes(h.digest())


def _encode_proof(c: int, z: int) -> bytes:
    return c.to_bytes(SCALAR_SIZE, "big") + z.to_bytes(SCALAR_SIZE, "big")


def _decode_proof(proof: bytes) -> tuple[int, int] | None:
    if len(proof) != PROOF_SIZE:
        return None
    c, z = int.from_bytes(proof[:SCALAR_SIZE], "big"), int.from_bytes(proof[SCALAR_SIZE:], "big")
    return (c, z) if c < R and z < R else None


def _context(session_id: bytes, dealer: int, recipient: int = 0) -> bytes:
    return session_id + struct.pack(">II", dealer, recipient)


# --------------------------------------------------------------------------------------------------
# Schnorr proof of knowledge of the deal key


def prove_knowledge(secret: int, public: G1, session_id: bytes, dealer: int) -> bytes:
    """Proof that the dealer knows ``secret = log_G(public)``, bound to (session, dealer)."""
    k = random_scalar()
    a = G1.generator() * k
    c = _challenge(_POK_DOMAIN, _context(session_id, dealer), public.to_bytes(), a.to_bytes())
    return _encode_proof(c, (k + c * secret) % R)


def verify_knowledge(proof: bytes, public: G1, session_id: bytes, dealer: int) -> bool:
    decoded = _decode_proof(proof)
    if decoded is None:
        return False
    c, z = decoded
    a = G1.generator() * z - public * c
    return c == _challenge(_POK_DOMAIN, _context(session_id, dealer), public.to_bytes(), a.to_bytes())


# --------------------------------------------------------------------------------------------------
# Chaum–Pedersen proof that the disclosed shared secret is e_j·D_i


def prove_dleq(
    secret: int, epoch_key: G1, deal_key: G1, shared: G1, session_id: bytes, dealer: int, recipient: int
) -> bytes:
    """Proof that ``log_G(epoch_key) = log_{deal_key}(shared) = secret``."""
    k = random_scalar()
    a1, a2 = G1.generator() * k, deal_key * k
    c = _challenge(
        _DLEQ_DOMAIN, _context(session_id, dealer, recipient),
        epoch_key.to_bytes(), deal_key.to_bytes(), shared.to_bytes(), a1.to_bytes(), a2.to_bytes(),
    )
    return _encode_proof(c, (k + c * secret) % R)


def verify_dleq(
    proof: bytes, epoch_key: G1, deal_key: G1, shared: G1, session_id: bytes, dealer: int, recipient: int
) -> bool:
    decoded = _decode_proof(proof)
    if decoded is None:
        return False
    c, z = decoded
    a1 = G1.generator() * z - epoch_key * c
    a2 = deal_key * z - shared * c
    return c == _challenge(
        _DLEQ_DOMAIN, _context(session_id, dealer, recipient),
        epoch_key.to_bytes(), deal_key.to_bytes(), shared.to_bytes(), a1.to_bytes(), a2.to_bytes(),
    )


# --------------------------------------------------------------------------------------------------
# share boxes


def _key_and_nonce(shared: G1, session_id: bytes, dealer: int, recipient: int, deal_key: G1,
                   epoch_key: G1) -> tuple[bytes, bytes]:
    info = _BOX_LABEL + _context(session_id, dealer, recipient) + deal_key.to_bytes() + epoch_key.to_bytes()
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=None, info=info).derive(shared.to_bytes())
    return okm[:32], okm[32:]


def seal_share(shared: G1, plaintext: bytes, aad: bytes, *, session_id: bytes, dealer: int, recipient: int,
               deal_key: G1, epoch_key: G1) -> bytes:
    key, nonce = _key_and_nonce(shared, session_id, dealer, recipient, deal_key, epoch_key)
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def open_share(shared: G1, sealed: bytes, aad: bytes, *, session_id: bytes, dealer: int, recipient: int,
               deal_key: G1, epoch_key: G1) -> bytes:
    key, nonce = _key_and_nonce(shared, session_id, dealer, recipient, deal_key, epoch_key)
    try:
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise ShareBoxError("the share box does not open under this key") from None
