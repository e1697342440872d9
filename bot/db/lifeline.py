"""One connection per monitored target that the bot never gives up: its lifeline.

When a server is in trouble — every connection slot taken, a deploy opening hundreds of
sessions — a pool that recycles its connections (or asks for a new one) is locked out. The
lifeline is a connection of its own, outside the pool: never recycled, checked while idle, and
reconnected at once when lost. While the server refuses it because it is full, it retries fast
(paced across the lifelines of one server), so the bot takes a freed slot as soon as one exists,
and keeps it. Its state is also the one shared answer to "can the bot get in at all?": no
command ever opens a probe connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from bot.db.sql import session as sql
from bot.model.servers import Fullness

log = logging.getLogger(__name__)

Conn = AsyncConnection[DictRow]

FULL_RETRY_SECONDS = 0.25  # per server: a freed slot is taken within about this long
DOWN_RETRY_SECONDS = (0.5, 5.0)  # first and longest wait between attempts on a server that is down
IDLE_CHECK_SECONDS = 10.0  # an idle lifeline is pinged this often, so a lost one is noticed early
PING_SECONDS = 3.0

# libpq reports a refused connection only as text (no SQLSTATE): what says "no slot for you".
_FULL = (
    ("remaining connection slots are reserved", Fullness.SERVER),
    ("too many clients already", Fullness.SERVER),
    ("too many connections for role", Fullness.ROLE),
    ("too many connections for database", Fullness.DATABASE),
)


def full_kind(reason: str | None) -> Fullness | None:
    """What refused the bot for lack of a slot, when the refusal says so; else None."""
    if reason:
        lowered = reason.lower()
        for text, kind in _FULL:
            if text in lowered:
                return kind
    return None


@dataclass
class _Pace:
    """Lifelines of one server waiting for a slot: together they retry about 4 times a second, and
    when one of them gets in, the others try again at once (a slot freed, or the server is back)."""

    waiting: int = 0
    freed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, delay: float) -> None:
        freed = self.freed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):  # not wait_for: on 3.11 it can swallow a cancel
                await freed.wait()

    def got_in(self) -> None:
        self.freed.set()
        self.freed = asyncio.Event()


class LifelineDown(Exception):
    """The lifeline is not connected (``reason``: why it last failed to)."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason or "not connected")
        self.reason = reason


class Lifeline:
    """One connection to a target that the bot keeps for ever: reconnected at once when lost,
    retried about four times a second (per server) while the server is full, so the bot takes a
    freed slot first. Work borrows it with ``acquire``/``release``."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[Conn]],
        *,
        describe: Callable[[BaseException], str],
        pace: _Pace,
    ) -> None:
        self.name = name
        self._connect = connect
        self._describe = describe
        self._pace = pace
        self._conn: Conn | None = None
        self._use = asyncio.Lock()  # one piece of work at a time
        self._lost = asyncio.Event()
        self._settled = asyncio.Event()  # connected, or the last attempt failed; clear while (re)connecting
        self.error: str | None = None  # why the last attempt failed; None while connected
        self._task: asyncio.Task[None] | None = None

    # --- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and not conn.broken

    @property
    def busy(self) -> bool:
        return self._use.locked()

    @property
    def full(self) -> Fullness | None:
        return None if self.connected else full_kind(self.error)

    # --- running -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name=f"pgconn-lifeline-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=1)
            self._task = None
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _keep(self) -> None:
        wait = DOWN_RETRY_SECONDS[0]
        while True:
            if not self.connected:
                self._settled.clear()
                await self._drop()
                try:
                    self._conn = await self._connect()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    reason = self._describe(exc)
                    if reason != self.error:
                        log.warning("target %s refuses the bot: %s", self.name, reason)
                    self.error = reason
                    self._settled.set()
                    if full_kind(reason):  # a slot may free any moment: keep asking, paced per server
                        self._pace.waiting += 1
                        try:
                            delay = FULL_RETRY_SECONDS * max(1, self._pace.waiting)
                            await self._pace.wait(delay * random.uniform(0.8, 1.2))
                        finally:
                            self._pace.waiting -= 1
                        wait = DOWN_RETRY_SECONDS[0]
                    else:
                        await asyncio.sleep(wait * random.uniform(0.8, 1.2))
                        wait = min(DOWN_RETRY_SECONDS[1], wait * 2)
                    continue
                if self.error is not None:
                    log.warning("target %s lets the bot in again", self.name)
                    self._pace.got_in()
                self.error = None
                wait = DOWN_RETRY_SECONDS[0]
                self._settled.set()
            self._lost.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_CHECK_SECONDS):  # not wait_for: see ``wait``
                    await self._lost.wait()
            if not self._lost.is_set() and not self._use.locked():
                await self._check_idle()

    async def _check_idle(self) -> None:
        async with self._use:
            conn = self._conn
            if conn is None:
                return
            try:
                async with asyncio.timeout(PING_SECONDS):
                    await conn.execute(sql.PING)
            except Exception as exc:
                # Slow is not lost: on a full, overloaded server this may be the one slot the bot has.
                if conn.broken or conn.closed:
                    log.warning("target %s: the bot's lifeline connection was lost: %s", self.name, self._describe(exc))
                    self._settled.clear()
                    await self._drop()

    # --- using -------------------------------------------------------------------------------

    async def wait_settled(self, within: float) -> None:
        """Until it is connected or an attempt to connect has failed (or ``within`` seconds pass)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, within)):
                await self._settled.wait()

    async def acquire(self) -> Conn:
        """Wait until the lifeline is free (callers bound the wait with a timeout); the caller must
        ``release`` it. Raises LifelineDown if, once free, it is not connected."""
        await self._use.acquire()
        if self.connected and self._conn is not None:
            return self._conn
        self._use.release()
        raise LifelineDown(self.error)

    def release(self, *, healthy: bool) -> None:
        """Give it back; ``healthy=False`` when the work left it unusable (it is replaced at once)."""
        if not healthy:
            conn, self._conn = self._conn, None
            if conn is not None:
                self._close_later(conn)
            self._settled.clear()
            self._lost.set()
        self._use.release()

    def _close_later(self, conn: Conn) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                await conn.close()

        task = asyncio.ensure_future(close())
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Future[Any]] = set()
