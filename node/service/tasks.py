"""The node's background tasks: one owner, so that stopping the node cancels every one of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

log = logging.getLogger("derot.node")


class TaskSet:
    """Holds a reference to every running background task (asyncio keeps only weak ones); finished tasks
    leave the set by themselves. A task that ends with an exception is logged with its name and traceback,
    and one cancelled other than by :meth:`cancel_all` with its name, so no background task ends silently."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    def spawn(self, coro: Coroutine, name: str | None = None) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self.add(task)
        return task

    def add(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            if not self._stopping:
                log.warning("background task cancelled", extra={"task": task.get_name()})
        elif (exc := task.exception()) is not None:
            log.error("background task failed", extra={"task": task.get_name()}, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
