"""An epoch run's state moves only along the orchestrator's table (PREPARING → RUNNING → FINISHED, FAILED from
either live state); every other move is refused and leaves the state unchanged."""

from __future__ import annotations

import itertools

import pytest

from derot.service.orchestrator import EpochRun, EpochState

LEGAL = {(EpochState.PREPARING, EpochState.RUNNING), (EpochState.PREPARING, EpochState.FAILED),
         (EpochState.RUNNING, EpochState.FINISHED), (EpochState.RUNNING, EpochState.FAILED)}


def run_in(state: EpochState) -> EpochRun:
    """A run brought to ``state`` through legal moves only."""
    run = EpochRun(epoch=7)
    path = {EpochState.PREPARING: [], EpochState.RUNNING: [EpochState.RUNNING],
            EpochState.FINISHED: [EpochState.RUNNING, EpochState.FINISHED], EpochState.FAILED: [EpochState.FAILED]}
    for step in path[state]:
        run.advance(step)
    assert run.state is state
    return run


@pytest.mark.parametrize("start, to", list(itertools.product(EpochState, EpochState)))
def test_every_move_is_checked_against_the_table(start, to):
    run = run_in(start)
    if (start, to) in LEGAL:
        run.advance(to)
        assert run.state is to
    else:
        with pytest.raises(RuntimeError, match=f"epoch 7: no move from {start.value} to {to.value}"):
            run.advance(to)
        assert run.state is start


def test_a_new_run_is_preparing():
    assert EpochRun(epoch=1).state is EpochState.PREPARING
