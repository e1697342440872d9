"""Work started by Slack's requests (lazy listeners) that a shutdown must let finish.

Bolt runs lazy listeners as free-standing tasks; without this, SIGTERM could close the database
pools under an approval that is halfway through signalling its targets. Tasks are recorded when
Bolt creates them (not when they first run), so one acknowledged a moment before the shutdown
is waited for too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from logging import Logger
from typing import Any

from slack_bolt.lazy_listener.async_internals import to_runnable_function
from slack_bolt.lazy_listener.asyncio_runner import AsyncioLazyListenerRunner
from slack_bolt.request.async_request import AsyncBoltRequest


class InFlight:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def add(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within_seconds: float) -> int:
        """Wait for what is running to finish; returns how many did not in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_seconds
        while self._tasks:  # again and again: a task may have started one more (a click's publish)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return len(self._tasks)


class TrackedLazyListenerRunner(AsyncioLazyListenerRunner):
    def __init__(self, logger: Logger, inflight: InFlight) -> None:
        super().__init__(logger=logger)
        self._inflight = inflight

    def start(self, function: Callable[..., Awaitable[None]], request: AsyncBoltRequest) -> None:
        runnable = to_runnable_function(internal_func=function, logger=self.logger, request=request)
        self._inflight.add(asyncio.ensure_future(runnable))
