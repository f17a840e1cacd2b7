"""TaskSet: no background task ends silently; stopping the node is not a failure."""

from __future__ import annotations

import asyncio
import logging

from derot.service.tasks import TaskSet


def test_a_failed_or_cancelled_task_is_logged_by_name_and_stopping_is_not(caplog):
    async def scenario():
        tasks = TaskSet()

        async def fails():
            raise ValueError("boom")

        async def waits():
            await asyncio.sleep(3600)

        async def ends():
            return 1

        failed = tasks.spawn(fails(), name="failing-task")
        tasks.spawn(ends(), name="ending-task")
        cancelled = tasks.spawn(waits(), name="cancelled-task")
        tasks.spawn(waits(), name="waiting-task")
        await asyncio.sleep(0)
        cancelled.cancel()  # by someone other than cancel_all: e.g. a CancelledError raised inside it
        await asyncio.gather(failed, cancelled, return_exceptions=True)
        await asyncio.sleep(0)
        assert len(tasks) == 1  # finished tasks leave the set
        await tasks.cancel_all()
        return len(tasks)

    with caplog.at_level(logging.WARNING, logger="derot.node"):
        assert asyncio.run(scenario()) == 0
    failures = [r for r in caplog.records if r.getMessage() == "background task failed"]
    assert [r.task for r in failures] == ["failing-task"]
    assert failures[0].exc_info[0] is ValueError
    cancels = [r.task for r in caplog.records if r.getMessage() == "background task cancelled"]
    assert cancels == ["cancelled-task"]  # not the waiting one that cancel_all stopped
