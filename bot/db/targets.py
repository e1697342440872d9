"""One async connection pool per monitored target, and a clear answer when a target is down.

A command has a time budget (PGCONN_COMMAND_TIMEOUT) that keeps the answer inside Slack's
3-second window. If the pool cannot hand out a connection quickly, a direct connection attempt
runs alongside the wait: a refused or failing server is then reported with libpq's own reason
at once, instead of after the whole budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot import metrics
from bot.db import sql
from bot.db.connect import connect_kwargs
from bot.errors import first_line
from bot.redact import redact as redact_text
from bot.redact import secrets_in_dsn

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = AsyncConnection[DictRow]

QUICK_CHECKOUT_SECONDS = 0.25


class UnknownTargetError(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known


class TargetUnavailableError(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"target {name} is unreachable: {reason}")
        self.name = name
        self.reason = reason


class TargetBusyError(TargetUnavailableError):
    """The server answers, but every pooled connection is in use: slow, not down."""


def redact_dsn(text: str, dsns: list[str]) -> str:
    """Never echo connection strings (they may hold passwords) back to users."""
    for dsn in dsns:
        if dsn:
            text = text.replace(dsn, "<connection string>")
    return redact_text(text, [secret for dsn in dsns for secret in secrets_in_dsn(dsn)])


class TargetPools:
    def __init__(self, dsns: dict[str, str], *, command_timeout: float, max_size: int = 4) -> None:
        self._dsns = dict(dsns)
        self._timeout = command_timeout
        self._pools: dict[str, AsyncConnectionPool[Conn]] = {
            name: AsyncConnectionPool(
                dsn,
                min_size=1,
                max_size=max_size,
                open=False,
                name=f"pgconn-{name}",
                kwargs=self._connect_kwargs(dsn),
                configure=self._configure,
                check=AsyncConnectionPool.check_connection,
                reconnect_timeout=60,
            )
            for name, dsn in self._dsns.items()
        }
        self._background: set[asyncio.Future[None]] = set()
        self.logins: set[str] = set()  # the login roles of the bot's target connections (learnt as they connect)

    def _connect_kwargs(self, dsn: str) -> dict[str, Any]:
        return connect_kwargs(dsn, connect_timeout=max(2, int(self._timeout) + 1), row_factory=dict_row)

    async def _configure(self, conn: Conn) -> None:
        statement_ms = str(int(self._timeout * 1000))
        cur = await conn.execute(
            sql.CONFIGURE_SESSION, {"statement_timeout": statement_ms, "lock_timeout": statement_ms}
        )
        row = await cur.fetchone()
        if row is not None:
            self.logins.add(str(row["login"]))

    @property
    def names(self) -> list[str]:
        return list(self._pools)

    @property
    def timeout(self) -> float:
        return self._timeout

    async def open(self) -> None:
        # wait=False: a target that is down at start must not stop the others (or the bot).
        for pool in self._pools.values():
            await pool.open(wait=False)

    async def close(self) -> None:
        await asyncio.gather(*(pool.close(timeout=1) for pool in self._pools.values()), return_exceptions=True)

    def _pool(self, name: str) -> AsyncConnectionPool[Conn]:
        try:
            return self._pools[name]
        except KeyError:
            raise UnknownTargetError(name, self.names) from None

    async def run(self, name: str, work: Callable[[Conn], Coroutine[Any, Any, T]], *, budget: float | None = None) -> T:
        """Run ``work`` on a pooled connection of target ``name`` within the command budget.

        ``budget`` widens the overall time for work of several statements (executing a request);
        each statement still has the command budget as its statement_timeout.
        """
        self._pool(name)  # an unknown name fails here, before it could become a metrics label
        started = time.perf_counter()
        try:
            return await self._run(name, work, budget)
        finally:
            metrics.TARGET_QUERY_SECONDS.labels(target=name).observe(time.perf_counter() - started)

    async def _run(self, name: str, work: Callable[[Conn], Coroutine[Any, Any, T]], budget: float | None) -> T:
        pool = self._pool(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (budget or self._timeout)
        conn = await self._checkout(name, pool, min(deadline, loop.time() + self._timeout))
        task = asyncio.create_task(work(conn))
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()) + 0.2)
        if not done:
            # Answer now; cancelling a query on a silent server can itself take seconds, so that
            # and the connection's disposal happen in the background.
            task.cancel()
            task.add_done_callback(lambda _: self._dispose_later(pool, conn))
            raise TargetUnavailableError(name, f"no answer within {budget or self._timeout:g}s")
        try:
            return task.result()
        except psycopg.errors.QueryCanceled:
            raise TargetUnavailableError(name, f"the query took longer than {self._timeout:g}s") from None
        except psycopg.OperationalError as exc:
            raise TargetUnavailableError(name, self._reason(exc)) from None
        finally:
            await pool.putconn(conn)

    def _dispose_later(self, pool: AsyncConnectionPool[Conn], conn: Conn) -> None:
        async def dispose() -> None:
            with contextlib.suppress(Exception):
                await conn.close()
            with contextlib.suppress(Exception):
                await pool.putconn(conn)  # a closed connection is discarded and replaced

        self._background.add(task := asyncio.ensure_future(dispose()))
        task.add_done_callback(self._background.discard)

    def _return_when_done(self, pool: AsyncConnectionPool[Conn], waiting: asyncio.Task[Conn]) -> None:
        """A checkout we gave up on may still succeed: hand that connection back."""

        def give_back(task: asyncio.Task[Conn]) -> None:
            if not task.cancelled() and task.exception() is None:
                self._background.add(putback := asyncio.ensure_future(pool.putconn(task.result())))
                putback.add_done_callback(self._background.discard)

        waiting.add_done_callback(give_back)

    async def _checkout(self, name: str, pool: AsyncConnectionPool[Conn], deadline: float) -> Conn:
        try:
            async with asyncio.timeout_at(deadline):
                return await self._checkout_within(name, pool, deadline)
        except TimeoutError:
            # The pool's connection check can hang on a server that went silent after connecting.
            raise TargetUnavailableError(name, f"no answer within {self._timeout:g}s") from None

    async def _checkout_within(self, name: str, pool: AsyncConnectionPool[Conn], deadline: float) -> Conn:
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(pool.getconn(timeout=QUICK_CHECKOUT_SECONDS))
        try:
            return await asyncio.shield(first)
        except PoolTimeout:
            pass
        except asyncio.CancelledError:
            self._return_when_done(pool, first)
            raise
        # Slow: either every connection is busy, or the server is not answering. Keep waiting,
        # and meanwhile ask the server directly so a dead one is reported with its reason.
        waiting = asyncio.create_task(pool.getconn(timeout=max(0.05, deadline - loop.time())))
        probe = asyncio.create_task(self._probe(name, deadline))
        try:
            done, _ = await asyncio.wait({waiting, probe}, return_when=asyncio.FIRST_COMPLETED)
            if waiting in done:
                try:
                    return waiting.result()
                except PoolTimeout:
                    raise TargetUnavailableError(name, await self._await_probe(probe)) from None
            failure = probe.result()
            if failure is None:  # the server answers: the pool is just busy, so keep waiting for it
                try:
                    return await asyncio.shield(waiting)
                except PoolTimeout:
                    raise TargetBusyError(name, f"all {pool.max_size} of the bot's connections are busy") from None
            raise TargetUnavailableError(name, failure)
        finally:
            probe.cancel()
            if not waiting.done():
                waiting.cancel()
                self._return_when_done(pool, waiting)

    @staticmethod
    async def _await_probe(probe: asyncio.Task[str | None]) -> str:
        """The probe's reason if it has one by now (it runs to the same deadline)."""
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            result = await asyncio.wait_for(asyncio.shield(probe), timeout=0.3)
            if result:
                return result
        return "no connection could be made in time"

    async def _probe(self, name: str, deadline: float) -> str | None:
        """None when the server accepts a connection, else why it did not."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                dsn = self._dsns[name]
                conn = await AsyncConnection.connect(dsn, **self._connect_kwargs(dsn))
                await conn.close()
                return None
        except TimeoutError:
            return f"no answer within {self._timeout:g}s"
        except Exception as exc:
            if loop.time() >= deadline:
                return f"no answer within {self._timeout:g}s"
            return self._reason(exc)

    def _reason(self, exc: BaseException) -> str:
        return redact_dsn(first_line(exc), list(self._dsns.values()))
