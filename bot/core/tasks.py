"""Background tasks that must stop promptly, even if a database call ignores the cancellation."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[None] | None, within_seconds: float) -> None:
    if task is None:
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=within_seconds)
    if not done:
        log.warning("%s did not stop within %.0fs; leaving it", task.get_name(), within_seconds)
