"""Gateway fan-out: ask members in parallel, keep the first ``t`` valid answers, combine.

:func:`collect` starts the first ``eager`` calls at once (the gateway itself and enough peers for ``t``
answers, in the caller's order of preference) and *hedges*: when a started call has not answered within its
own hedge delay (``hedge_after(member)``, e.g. from :class:`derot.service.latency.PeerLatency`), it starts the
next call in order, one per overdue call; and it starts every other call at once when a call fails or the
optimistic combine fails. So an honest, live committee does ``t`` members' work per request instead of ``n``,
and a dead, slow or lying member costs at most its own hedge delay. With ``eager >= len(calls)`` every
member is asked at once.

As soon as ``t`` answers have arrived it tries the optimistic combine (one verification); if that fails
it waits for the remaining answers and combines with per-share verification, so a bad share costs latency
but never the request while ``t`` good ones exist. Refusals and transport failures are collected per
member and reported if the request fails.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from derot.crypto.threshold import NotEnoughShares
from derot.net import status
from derot.net.status import Refusal

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Collected(Generic[R]):
    result: R
    used: tuple[int, ...]  # the members whose answers were combined
    failures: Mapping[int, str]  # member index -> reason code ("invalid_share" for a share that failed checks)
    seconds: float


async def collect(
    calls: Mapping[int, Callable[[], Awaitable[T]]],
    threshold: int,
    combine_first: Callable[[dict[int, T]], R | None],
    combine_all: Callable[[dict[int, T]], tuple[R, tuple[int, ...], tuple[int, ...]]],
    *,
    deadline: float,
    eager: int | None = None,
    hedge_after: float | Callable[[int], float] = 0.05,
    may_hedge: Callable[[], bool] | None = None,
    late_hedge: float | None = None,
) -> Collected[R]:
    """Fan out ``calls`` (member index -> coroutine factory) and combine.

    ``combine_first(answers)`` gets exactly ``threshold`` answers and returns a verified result or None;
    ``combine_all(answers)`` gets every answer and returns ``(result, used, bad)``, or raises
    :class:`NotEnoughShares` if it cannot combine. ``hedge_after`` is a member's hedge delay in seconds
    (one for all, or a function of the member index). ``may_hedge()`` (a hedge budget) is asked before each
    hedge; when it says no, that call is hedged only ``late_hedge`` seconds after it started (never, without
    ``late_hedge``). A failure or a bad share asks everyone else whatever the budget.
    Raises :class:`Refusal` when no result can be formed by ``deadline`` seconds.
    """
    started = time.monotonic()
    budget = hedge_after if callable(hedge_after) else (lambda _index: hedge_after)
    waiting = list(calls.items())  # calls not started yet, in order of preference
    eager = len(waiting) if eager is None else max(threshold, eager)
    tasks: dict[asyncio.Future, int] = {}
    hedge_at: dict[asyncio.Future, float] = {}  # started calls that have not caused a hedge yet -> when they do
    launched: dict[asyncio.Future, float] = {}
    answers: dict[int, T] = {}
    failures: dict[int, str] = {}
    details: dict[int, str] = {}
    tried_first = False

    def launch(count: int) -> None:
        now = time.monotonic()
        for index, factory in waiting[:count]:
            task = asyncio.ensure_future(factory())
            tasks[task] = index
            hedge_at[task] = now + budget(index)
            launched[task] = now
        del waiting[:count]

    launch(eager)
    try:
        pending = set(tasks)
        while pending or waiting:
            now = time.monotonic()
            remaining = deadline - (now - started)
            if remaining <= 0:
                break
            if waiting and (failures or tried_first or not pending):
                launch(len(waiting))  # ask everyone else now
            elif waiting:
                launch(_due_hedges(pending, hedge_at, launched, now, may_hedge, late_hedge))
            pending = {t for t in tasks if not t.done()}
            timeout = remaining
            if waiting:
                next_hedge = min((hedge_at[t] for t in pending if t in hedge_at), default=now + remaining)
                timeout = min(remaining, max(next_hedge - now, 0.001))
            done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                _record(tasks[task], task, answers, failures, details)
            if not tried_first and len(answers) >= threshold:
                tried_first = True
                first = dict(list(answers.items())[:threshold])
                result = combine_first(first)
                if result is not None:
                    return Collected(result, tuple(first), failures, time.monotonic() - started)
        if len(answers) >= threshold:
            combined = _combine_every(combine_all, answers, failures, details, started)
            if combined is not None:
                return combined
        raise _failure(threshold, len(answers), failures, details, timed_out=bool(pending))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()


def _due_hedges(pending, hedge_at: dict, launched: dict, now: float, may_hedge, late_hedge: float | None) -> int:
    """How many hedges to start now: one per overdue call, once, within the budget (``may_hedge``); an
    overdue call over budget is re-armed at ``late_hedge`` after it started (never, without one)."""
    hedges = 0
    for task in [t for t in pending if hedge_at.get(t, now + 1) <= now]:
        late = launched[task] + (math.inf if late_hedge is None else late_hedge)
        if may_hedge is None or late <= now or may_hedge():
            del hedge_at[task]
            hedges += 1
        else:
            hedge_at[task] = late  # over budget: hedge it at the late delay (or wait for it)
    return hedges


def _record(index: int, task: asyncio.Future, answers: dict, failures: dict[int, str], details: dict[int, str]) -> None:
    """File a finished call's answer, or its refusal or failure, under member ``index``. A call that ended
    cancelled, though only the fan-out's ``finally`` cancels calls, is a failed member, never a cancelled request."""
    if task.cancelled():
        failures[index], details[index] = status.UNAVAILABLE, "the call was cancelled"
        return
    try:
        answers[index] = task.result()
    except Refusal as refusal:
        failures[index], details[index] = refusal.reason, refusal.detail
    except Exception as exc:  # a peer's bug or transport failure must not fail the request
        failures[index], details[index] = status.UNAVAILABLE, f"{type(exc).__name__}: {exc}"


def _combine_every(combine_all: Callable, answers: dict, failures: dict[int, str], details: dict[int, str],
                   started: float) -> Collected | None:
    """The verifying combine over every answer; None (bad members filed as ``invalid_share``) if it cannot."""
    try:
        result, used, bad = combine_all(answers)
    except NotEnoughShares as exc:
        for index in exc.bad:
            failures[index], details[index] = "invalid_share", "share failed verification"
        return None
    for index in bad:
        failures[index] = "invalid_share"
    return Collected(result, tuple(used), failures, time.monotonic() - started)


def _failure(threshold: int, answered: int, failures: dict[int, str], details: dict[int, str], *, timed_out: bool):
    """One refusal for a failed fan-out: the members' common reason if they agree, else not_enough_shares."""
    counts = Counter(failures.values())
    if counts:
        reason, votes = counts.most_common(1)[0]
        if votes == len(failures) and reason not in (status.UNAVAILABLE, "invalid_share", status.DEADLINE_EXCEEDED):
            index = next(i for i, r in failures.items() if r == reason)
            return Refusal(reason, details[index])
    summary = ", ".join(f"{i}:{r}" for i, r in sorted(failures.items()))
    suffix = " (deadline passed)" if timed_out else ""
    return Refusal(
        status.NOT_ENOUGH_SHARES,
        f"{answered} usable answers, {threshold} needed{suffix}; failures: {summary or 'none'}",
        metadata={str(i): r for i, r in failures.items()},
    )
