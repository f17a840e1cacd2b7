"""The finish of a run: QUAL, the group and share keys, this member's shares, the transcript hash.

:func:`compute` is a pure function of the held messages (and this member's own decrypted boxes for its
own shares). Members holding the same messages get the same QUAL, keys and transcript hash.

A dealer is excluded (with the reason recorded) when, in the messages held:
- it has no bundle (*silent*), or two different signed bundles (*equivocation*);
- a complaint against its bundle is proven: the DLEQ proof holds and the box, opened with the disclosed
  key, holds no share matching its commitments (:mod:`.proofs` for why this frames no honest dealer);
- its bundle is listed as held by at most ``f_r`` responses (``f_r = n − t`` of the receiving committee):
  no honest member held it when it responded, so nobody could have complained in time (*late*). An
  honest dealer's bundle is on time, so every honest responder lists it (at least ``t > f_r``);
- its bundle has an empty box for a recipient j while at least ``f + 1`` single-bundle dealers sealed a
  box to j (``f = n_dealers − t_dealers``): then at least one honest dealer held j's key, and the relay
  delivers what one honest member holds to all, so the dealer withheld j's share. Fewer than ``f + 1``
  means j's key may never have reached the honest dealers in time, and nobody is blamed.

``QUAL`` is the rest; the run fails unless ``|QUAL| ≥ t`` (``t_old`` in a reshare, whose first ``t_old``
qualified dealers by index are used) and at least ``t`` recipients were sealed a box by every used dealer
(the *holders*). A member whose box from a used dealer is missing or bad ends with no shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from py_arkworks_bls12381 import G2Point

from derot.crypto.bls import G1, R, PointDecodeError
from derot.crypto.dkg import proofs
from derot.crypto.dkg.config import SECRETS, DkgConfig, KeyShares, PublicKeys
from derot.crypto.dkg.errors import DkgFailed, FailReason
from derot.crypto.dkg.messages import SCALAR_SIZE, Complaint, DealBody, Message, ResponseBody
from derot.crypto.dkg.result import DkgResult, transcript_hash
from derot.crypto.hazmat import batch
from derot.crypto.hazmat.poly import lagrange_coefficients


@dataclass(frozen=True)
class HeldDeal:
    """A held deal bundle: decoded commitments and deal key, and this member's share from it (if any)."""

    message: Message
    body: DealBody
    commitments: tuple[tuple[G2Point, ...], tuple[G2Point, ...]]
    deal_key: G1
    # this member's decrypted shares and the commitments evaluated at its index; None if no box opened
    my_shares: tuple[int, int] | None = field(repr=False)
    my_evaluations: tuple[G2Point, G2Point] | None = field(repr=False)
    my_secret: G1 | None = field(repr=False)  # S = e·D, kept to complain with

    def share_valid(self) -> bool:
        return self.my_shares is not None and all(
            batch.share_matches(e, s) for e, s in zip(self.my_evaluations, self.my_shares)
        )


@dataclass(frozen=True)
class Evidence:
    """What :func:`compute` reads: the run, this member's seat, the held bundles and responses."""

    config: DkgConfig
    recipient_index: int | None
    deals: Mapping[int, Mapping[bytes, HeldDeal]]
    responses: Mapping[int, Mapping[bytes, ResponseBody]]
    aad: Callable[[int, int], bytes]
    #: verdicts of complaints already checked (pure: the same inputs always give the same verdict)
    verdicts: dict = field(default_factory=dict)


def compute(ev: Evidence) -> DkgResult | DkgFailed:
    cfg = ev.config
    candidates = {i: next(iter(held.values())) for i, held in sorted(ev.deals.items()) if len(held) == 1}
    excluded: dict[int, str] = {}
    for i in cfg.dealers.indices:
        held = ev.deals.get(i, {})
        if not held:
            excluded[i] = "silent: no deal bundle"
        elif len(held) > 1:
            excluded[i] = "equivocation: signed two different deal bundles"
    excluded.update(_late_bundles(ev, candidates))
    excluded.update(_proven_complaints(ev, candidates))
    excluded.update(_withheld_boxes(cfg, candidates, excluded))
    excluded = dict(sorted(excluded.items()))
    qualified = tuple(i for i in candidates if i not in excluded)
    needed = cfg.qualified_needed
    if len(qualified) < needed:
        reasons = "; ".join(f"{i}: {why}" for i, why in excluded.items())
        return DkgFailed(FailReason.TOO_FEW_QUALIFIED, f"{len(qualified)} qualified dealers, need {needed} ({reasons})")
    used = qualified if cfg.previous is None else qualified[:needed]
    positions = range(cfg.recipients.n)
    holders = tuple(j for k, j in zip(positions, cfg.recipients.indices)
                    if all(not candidates[i].body.boxes[k].empty for i in used))
    if len(holders) < cfg.committee.threshold:
        return DkgFailed(FailReason.TOO_FEW_HOLDERS,
                         f"only members {list(holders)} were sealed a box by every used dealer")
    weights = None if cfg.previous is None else lagrange_coefficients(used, 0)
    keys = []
    for s, name in enumerate(SECRETS):
        rows = [candidates[i].commitments[s] for i in used]
        combined = [
            batch.point_sum([row[k] for row in rows]) if weights is None
            else batch.linear_combination([row[k] for row in rows], [weights[i] for i in used])
            for k in range(cfg.committee.threshold)
        ]
        group_key = batch.to_g2(combined[0])
        if cfg.previous is not None and group_key != cfg.previous.keys(s).group_key:
            return DkgFailed(FailReason.GROUP_KEY_MISMATCH, f"recombined {name} key differs from the old group key")
        if group_key.is_identity():
            return DkgFailed(FailReason.DEGENERATE_KEY, f"the {name} group key is the identity")
        share_keys = {m: batch.to_g2(batch.evaluate(combined, m)) for m in cfg.recipients.indices}
        keys.append(PublicKeys(group_key, share_keys))
    qualified_hashes = [(i, candidates[i].message.body_hash) for i in qualified]
    return DkgResult(
        network=cfg.network,
        epoch=cfg.epoch,
        session_id=cfg.session_id,
        committee=cfg.committee,
        index=ev.recipient_index,
        qualified=qualified,
        used=used,
        excluded=excluded,
        sig=keys[0],
        kd=keys[1],
        shares=_my_shares(ev, candidates, used, weights, holders),
        transcript_hash=transcript_hash(cfg.session_id, qualified_hashes, used),
        holders=holders,
        bundle_hashes=tuple(qualified_hashes),
    )


def _late_bundles(ev: Evidence, candidates: Mapping[int, HeldDeal]) -> dict[int, str]:
    faults = ev.config.recipients.n - ev.config.recipients.threshold
    listed: dict = {}
    for j, responses in ev.responses.items():
        for digest in {d for r in responses.values() for d in r.held}:
            listed[digest] = listed.get(digest, 0) + 1
    found = {}
    for i, deal in candidates.items():
        count = listed.get(deal.message.digest, 0)
        if count <= faults:
            found[i] = f"late: only {count} responses list its bundle, need {faults + 1}"
    return found


def _proven_complaints(ev: Evidence, candidates: Mapping[int, HeldDeal]) -> dict[int, str]:
    found: dict[int, str] = {}
    for j, responses in sorted(ev.responses.items()):
        for response in responses.values():
            for complaint in response.complaints:
                deal = candidates.get(complaint.dealer)
                if deal is None or complaint.dealer in found or complaint.bundle_hash != deal.message.body_hash:
                    continue
                key = (complaint, j)
                if key not in ev.verdicts:
                    ev.verdicts[key] = _complaint_proven(ev, deal, j, complaint)
                if ev.verdicts[key]:
                    found[complaint.dealer] = f"proven complaint by member {j}: its box holds no valid share"
    return found


def _complaint_proven(ev: Evidence, deal: HeldDeal, j: int, complaint: Complaint) -> bool:
    """True iff the complaint proves that ``deal``'s box for ``j`` holds no share matching its commitments."""
    cfg = ev.config
    box = deal.body.boxes[cfg.recipients.indices.index(j)]
    if box.empty:
        return False
    i = complaint.dealer
    try:
        epoch_key = proofs.decode_point(box.recipient_key)
        shared = proofs.decode_point(complaint.shared_secret)
    except PointDecodeError:
        return False
    if not proofs.verify_dleq(complaint.proof, epoch_key, deal.deal_key, shared, cfg.session_id, i, j):
        return False
    try:
        plaintext = proofs.open_share(shared, box.ciphertext, ev.aad(i, j), session_id=cfg.session_id, dealer=i,
                                      recipient=j, deal_key=deal.deal_key, epoch_key=epoch_key)
    except proofs.ShareBoxError:
        return True
    shares = (int.from_bytes(plaintext[:SCALAR_SIZE], "big"), int.from_bytes(plaintext[SCALAR_SIZE:], "big"))
    if max(shares) >= R:
        return True
    return not all(batch.share_matches(batch.evaluate(deal.commitments[s], j), shares[s]) for s in range(2))


def _withheld_boxes(cfg: DkgConfig, candidates: Mapping[int, HeldDeal], excluded: Mapping[int, str]) -> dict[int, str]:
    faults = cfg.dealers.n - cfg.dealers.threshold
    sealed_by = [sum(not d.body.boxes[k].empty for d in candidates.values()) for k in range(cfg.recipients.n)]
    found: dict[int, str] = {}
    for i, deal in candidates.items():
        if i in excluded:
            continue
        for k, j in enumerate(cfg.recipients.indices):
            if deal.body.boxes[k].empty and sealed_by[k] >= faults + 1:
                found[i] = f"withheld member {j}'s box, which {sealed_by[k]} dealers sealed to its key"
                break
    return found


def _my_shares(ev: Evidence, candidates, used, weights, holders) -> KeyShares | None:
    j = ev.recipient_index
    if j is None or j not in holders:
        return None
    deals = [candidates[i] for i in used]
    if any(d.my_shares is None for d in deals):
        return None
    evaluations = [e for d in deals for e in d.my_evaluations]
    values = [s for d in deals for s in d.my_shares]
    if not batch.shares_match(evaluations, values) and not all(d.share_valid() for d in deals):
        return None
    mine = []
    for s in range(2):
        total = 0
        for i, deal in zip(used, deals):
            total += deal.my_shares[s] if weights is None else weights[i] * deal.my_shares[s]
        mine.append(total % R)
    return KeyShares(mine[0], mine[1])
