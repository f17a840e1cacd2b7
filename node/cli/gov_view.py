"""How ``derot gov`` shows governance: proposal ids and their short forms, vote amounts, voting windows in
blocks and time, Governor reverts in words, and a proposal as plain values (the JSON of show/list)."""

from __future__ import annotations

import datetime
import re


def hex_id(pid: int) -> str:
    return f"{pid:064x}"


def short_ids(ids) -> dict[int, str]:
    """The shortest unique hex prefix (at least 8 digits) of each id, as ``#prefix``."""
    ids = list(dict.fromkeys(ids))
    out = {}
    for pid in ids:
        full = hex_id(pid)
        size = 8
        while any(other != pid and hex_id(other).startswith(full[:size]) for other in ids):
            size += 2
        out[pid] = "#" + full[:size]
    return out


_STATE_ERROR = re.compile(r"GovernorUnexpectedProposalState\((?:proposalId=)?\d+, (?:current=)?(\d+), "
                          r"(?:expectedStates=)?(0x[0-9a-fA-F]+)\)")


def humanize_revert(text: str) -> str:
    """Governor custom errors in words: ``proposal is Defeated (needs Succeeded)``, not the raw tuple."""
    from derot.chain.governance import ProposalState

    def state_words(match) -> str:
        current = ProposalState(int(match.group(1))).name.capitalize()
        mask = int(match.group(2), 16)
        wanted = [s.name.capitalize() for s in ProposalState if mask >> int(s) & 1]
        return f"proposal is {current}" + (f" (needs {' or '.join(wanted)})" if wanted else "")

    text = _STATE_ERROR.sub(state_words, text)
    for raw, words in (("GovernorAlreadyCastVote", "this account already voted on the proposal"),
                       ("GovernorInsufficientProposerVotes", "the proposer has too few votes to propose"),
                       ("GovernorNonexistentProposal", "no such proposal"),
                       ("TimelockUnexpectedOperationState", "the timelock operation is not ready (delay not passed?)")):
        text = re.sub(raw + r"\([^)]*\)", words, text)
    return text


def iso(ts: int | float) -> str:
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def votes_text(amount: int, unit: int = 10**18) -> str:
    """``1,000,000`` (whole tokens) or ``12.5`` (fractions kept, up to 4 decimals)."""
    whole, frac = divmod(int(amount), unit)
    if not frac:
        return f"{whole:,}"
    return f"{amount / unit:,.4f}".rstrip("0").rstrip(".")


def block_time(w3, number: int) -> tuple[int, bool]:
    """(Unix time of block ``number``, estimated?): a past block's own timestamp, else an estimate from the
    last 100 blocks' rate."""
    latest = w3.eth.get_block("latest")
    if number <= latest["number"]:
        return int(w3.eth.get_block(number)["timestamp"]), False
    back = max(0, latest["number"] - 100)
    earlier = w3.eth.get_block(back)
    span = latest["number"] - back
    rate = (latest["timestamp"] - earlier["timestamp"]) / span if span else 12.0
    return int(latest["timestamp"] + (number - latest["number"]) * max(rate, 0.001)), True


def window(w3, start: int, end: int) -> dict:
    """A voting window in blocks and time."""
    (t0, e0), (t1, e1) = block_time(w3, start), block_time(w3, end)
    return {"start_block": start, "end_block": end, "opens": iso(t0), "closes": iso(t1), "estimated": e0 or e1}


def window_text(w: dict) -> str:
    est = " (estimated)" if w["estimated"] else ""
    return f"blocks {w['start_block']}..{w['end_block']}, {w['opens']} .. {w['closes']}{est}"


def proposal_view(gov, p, short: str) -> dict:
    """A proposal as plain values (the JSON of show/list)."""
    from derot.chain.actions import Action

    return {
        "id": str(p.id), "short_id": short, "state": p.state.name.lower(), "proposer": p.proposer,
        "title": p.description.splitlines()[0] if p.description else "",
        "voting": window(gov.w3, p.vote_start, p.vote_end),
        "votes": {"for": votes_text(p.votes_for), "against": votes_text(p.votes_against),
                  "abstain": votes_text(p.votes_abstain), "quorum": votes_text(p.quorum)},
        "eta": iso(p.eta) if p.eta else None,
        "actions": [{"summary": a.summary() if isinstance(a, Action) else str(a),
                     "council_may_act_at_once": bool(isinstance(a, Action) and a.council_allowed)}
                    for a in p.actions],
    }


def exclusions_view(registry, state, epochs) -> tuple[list[dict], list[str]]:
    """What each member reported it excluded from ``epochs`` (EpochExclusions logs) and why, as (JSON, lines).
    Dealer indices name the epoch's members for a DKG and the previous epoch's members for a reshare."""
    data, lines = [], []
    for epoch in epochs:
        dealers = state.epochs.get(epoch.previous) if epoch.previous else epoch
        names = dealers.members if dealers is not None else ()
        for report in registry.epoch_exclusions(epoch):
            shown = {i: names[i - 1] if 0 < i <= len(names) else f"index {i}" for i in report.excluded}
            data.append({"epoch": epoch.id, **report.to_json_dict(),
                         "operators": {str(i): op for i, op in sorted(shown.items())}})
            lines.append(f"  epoch {epoch.id} exclusions reported by {report.reporter}: " + "; ".join(
                f"member {i} ({shown[i]}) {reason.name.lower()}" for i, reason in sorted(report.excluded.items())))
    return data, lines


def snp_policy_view(snap) -> tuple[dict, list[str]]:
    """Governance's SEV-SNP policy as (JSON, lines)."""
    required = ", ".join(f"{n}={int(v)}" for n, v in sorted(snap.snp_guest_policy.items())) or "nothing"
    data = {"max_vmpl": snap.snp_max_vmpl, "guest_policy": dict(snap.snp_guest_policy),
            "min_tcb": {p: dict(c) for p, c in snap.snp_min_tcb.items()}}
    lines = [f"  SEV-SNP: VMPL at most {snap.snp_max_vmpl}; guest policy requires {required}"]
    for product, components in sorted(snap.snp_min_tcb.items()):
        lines.append(f"  SEV-SNP minimum TCB {product}: " + ", ".join(f"{n}={v}" for n, v in components.items()))
    return data, lines
