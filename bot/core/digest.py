"""The daily digest: at PGCONN_DIGEST_TIME (UTC) one message to PGCONN_DIGEST_CHANNEL with the last
24 hours — posted once per day across replicas, also by a replica that starts late in the day."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, time

from bot.core.ports import Announcer, DigestStore
from bot.errors import log_failure
from bot.model.digest import due_day, window

log = logging.getLogger(__name__)


class DailyDigest:
    def __init__(
        self,
        store: DigestStore,
        announcer: Announcer,
        *,
        channel: str | None,
        at: time,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._announcer = announcer
        self._channel = channel
        self._at = at
        self._clock = clock
        self._done: object = None  # the last day known posted (no query for it until tomorrow)

    async def run_once(self) -> bool:
        """Post today's digest if it is due and nobody has; True when this replica posted it."""
        if not self._channel or not self._announcer.can_post or not self._store.ready:
            return False
        day = due_day(self._clock(), self._at)
        if day is None or day == self._done:
            return False
        if await self._store.posted(day) or not await self._store.claim(day):
            self._done = day if await self._store.posted(day) else None
            return False
        since, until = window(day, self._at)
        try:
            digest = await self._store.gather(day, since, until)
            ts = await self._announcer.post_digest(self._channel, digest)
        except Exception as exc:
            log_failure(log, logging.WARNING, "the digest for %s was not posted", day, exc=exc)
            await self._store.release(day)
            return False
        await self._store.mark_posted(day, self._channel, ts or None)
        self._done = day
        log.info("digest for %s posted to %s", day, self._channel)
        return True
