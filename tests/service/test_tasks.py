"""TaskSet: no background task dies silently, and cancelling is not a failure."""

from __future__ import annotations

import asyncio
import logging

from derot.service.tasks import TaskSet


def test_a_failed_task_is_logged_with_its_name_and_traceback(caplog):
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
        tasks.spawn(waits(), name="waiting-task")
        await asyncio.gather(failed, return_exceptions=True)
        await asyncio.sleep(0)
        assert len(tasks) == 1  # finished tasks leave the set
        await tasks.cancel_all()
        return len(tasks)

    with caplog.at_level(logging.ERROR, logger="derot.node"):
        assert asyncio.run(scenario()) == 0
    failures = [r for r in caplog.records if r.getMessage() == "background task failed"]
    assert [r.task for r in failures] == ["failing-task"]  # not the one that ended, nor the cancelled one
    assert failures[0].exc_info[0] is ValueError
