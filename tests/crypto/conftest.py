"""Shared DKG test tools: what a coalition learns from a run (used by the findings and adversarial tests)."""

from __future__ import annotations

import pytest

from derot.crypto.bls import G1, R, PointDecodeError
from derot.crypto.dkg import MessageKind, proofs
from derot.crypto.dkg.messages import SCALAR_SIZE, DealBody, ResponseBody, share_aad


def _open(config, dealer, recipient, body, shared):
    box = body.boxes[config.recipients.indices.index(recipient)]
    if box.empty:
        return None
    try:
        epoch_key = G1.from_bytes(box.recipient_key)
        deal_key = G1.from_bytes(body.deal_key)
        plain = proofs.open_share(shared, box.ciphertext,
                                  share_aad(config.network, config.epoch, config.session_id, dealer, recipient),
                                  session_id=config.session_id, dealer=dealer, recipient=recipient,
                                  deal_key=deal_key, epoch_key=epoch_key)
    except (proofs.ShareBoxError, PointDecodeError, ValueError):
        return None
    values = (int.from_bytes(plain[:SCALAR_SIZE], "big"), int.from_bytes(plain[SCALAR_SIZE:], "big"))
    return values if max(values) < R else None


def coalition_view(config, sent, epoch_secrets):
    """Every share point ``f_i(j)`` a coalition can open: boxes sealed to the coalition's epoch keys, and
    every box a complaint's disclosed key opens. Returns ``{(dealer, bundle_hash): {recipient: (sig, kd)}}``."""
    t, n = config.committee.threshold, config.recipients.n
    bundles = {}
    for m in sent:
        if m.kind is MessageKind.DEAL:
            try:
                bundles[(m.sender, m.body_hash)] = DealBody.decode(m.body, threshold=t, recipients=n)
            except Exception:
                continue
    points: dict = {key: {} for key in bundles}
    for (dealer, h), body in bundles.items():
        try:
            deal_key = G1.from_bytes(body.deal_key)
        except (PointDecodeError, ValueError):
            continue
        for member, secret in epoch_secrets.items():
            if secret is None or member not in config.recipients.indices:
                continue
            opened = _open(config, dealer, member, body, deal_key * secret)
            if opened is not None:
                points[(dealer, h)][member] = opened
    dealers = frozenset(config.dealers.indices)
    for m in sent:
        if m.kind is not MessageKind.RESPONSE:
            continue
        try:
            response = ResponseBody.decode(m.body, dealers=dealers)
        except Exception:
            continue
        for c in response.complaints:
            body = bundles.get((c.dealer, c.bundle_hash))
            try:
                shared = G1.from_bytes(c.shared_secret)
            except (PointDecodeError, ValueError):
                continue
            opened = None if body is None else _open(config, c.dealer, m.sender, body, shared)
            if opened is not None:
                points[(c.dealer, c.bundle_hash)][m.sender] = opened
    return points


def coalition_breaks(result, config, points, corrupted, known_shares, old_known=()):
    """What the coalition can compute, given the honest ``result``, the share points it opened, the
    members it controls (whose polynomials it knows) and the final shares it holds (``known_shares``:
    member indices). ``old_known``: the old share indices it holds in a reshare. Empty set = safe.

    The secret is ``x = Σ_used λ_i f_i(0)``; with fewer than t points of an honest dealer's polynomial
    its ``f_i(0)`` stays hidden, so the coalition has x only if it can interpolate every used polynomial,
    or holds t final shares, or (reshare) t old shares."""
    t = config.committee.threshold
    used = {i: h for i, h in result.bundle_hashes if i in result.used}
    broken = set()
    computable = set(known_shares)
    for k in config.recipients.indices:
        if all(k in points.get((i, h), {}) for i, h in used.items()):
            computable.add(k)
    if len(computable) >= t:
        broken.add("t final shares")
    interpolable = {i for i, h in used.items() if i in corrupted or len(points.get((i, h), {})) >= t}
    if interpolable >= set(used):
        broken.add("every used polynomial")
    if config.previous is not None:
        old = set(old_known) | interpolable
        if len(old) >= config.previous.committee.threshold:
            broken.add("t old shares")
    return broken


@pytest.fixture
def coalition():
    return coalition_view, coalition_breaks
