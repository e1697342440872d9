"""The bot's connections to each monitored target: a lifeline, plus a pool for concurrency.

A command has a time budget (PGCONN_COMMAND_TIMEOUT) that keeps the answer inside Slack's
3-second window. Work runs on the target's lifeline when it is free (no connection to make, and
it works even when the server is full), else on a pooled connection, else on whichever frees up
first within the budget. When the lifeline cannot get in, the answer says why at once — "full"
(with the numbers the bot last saw) or libpq's reason — and nobody opens a probe connection:
the lifeline's own reconnecting is the one probe per target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot import metrics
from bot.db.connect import connect_kwargs
from bot.db.lifeline import Lifeline, LifelineDown, _Pace, full_kind
from bot.db.sql import targets as sql
from bot.errors import first_line
from bot.model.errors import TargetBusyError, TargetUnavailableError, UnknownTargetError
from bot.model.servers import Fill
from bot.redact import redact as redact_text
from bot.redact import secrets_in_dsn

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = AsyncConnection[DictRow]

QUICK_CHECKOUT_SECONDS = 0.25
SALVAGE_SECONDS = 5.0  # how long a timed-out query on the lifeline may take to be cancelled before it is replaced
POOL_MAX_LIFETIME_SECONDS = 7 * 86400.0  # not the default hour: a full server would not give them back


KNOWN_IDENTITIES = 4  # per target: how many of its server's past identities still group it


class _DeadConnection(Exception):
    """The connection the work ran on broke under it (the bot may try once more)."""

    def __init__(self, error: TargetUnavailableError) -> None:
        super().__init__(error.reason)
        self.error = error


def redact_dsn(text: str, dsns: list[str]) -> str:
    """Never echo connection strings (they may hold passwords) back to users."""
    for dsn in dsns:
        if dsn:
            text = text.replace(dsn, "<connection string>")
    return redact_text(text, [secret for dsn in dsns for secret in secrets_in_dsn(dsn)])


def server_address(dsn: str) -> str:
    """host:port as configured: which targets share a server before the bot could ask it."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return dsn
    return f"{params.get('hostaddr') or params.get('host') or 'local'}:{params.get('port') or 5432}"


@dataclass
class _Target:
    name: str
    dsn: str
    pool: AsyncConnectionPool[Conn]
    lifeline: Lifeline
    fill: Fill | None = None


class TargetPools:
    """The monitored servers' connections: per target one lifeline (kept for ever, retried fast
    while the server is full) and a small pool. ``run`` is the only way work gets a connection; it
    raises UnknownTargetError, TargetUnavailableError (refused or silent: with libpq's reason and
    whether the server is full) and TargetBusyError (every connection busy within the budget)."""

    def __init__(self, dsns: dict[str, str], *, command_timeout: float, max_size: int = 4) -> None:
        self._dsns = dict(dsns)
        self._timeout = command_timeout
        self.logins: set[str] = set()  # the login roles of the bot's target connections (learnt as they connect)
        self._background: set[asyncio.Future[Any]] = set()
        paces: dict[str, _Pace] = {}
        # The identities each target's server has had (newest last; a restart gives a new one).
        self._servers: dict[str, list[str]] = {}
        self._targets: dict[str, _Target] = {}
        for name, dsn in self._dsns.items():
            pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                dsn,
                min_size=0,  # the lifeline is the connection always there; the pool grows on demand
                max_size=max_size,
                open=False,
                name=f"pgconn-{name}",
                kwargs=self._connect_kwargs(dsn),
                configure=self._configure,
                check=AsyncConnectionPool.check_connection,
                max_lifetime=POOL_MAX_LIFETIME_SECONDS,
                reconnect_timeout=60,
            )
            lifeline = Lifeline(
                name,
                self._connector(name, dsn),
                describe=self._reason,
                pace=paces.setdefault(server_address(dsn), _Pace()),
            )
            self._targets[name] = _Target(name, dsn, pool, lifeline)

    def _connect_kwargs(self, dsn: str) -> dict[str, Any]:
        return connect_kwargs(dsn, connect_timeout=max(2, int(self._timeout) + 1), row_factory=dict_row)

    def _connector(self, name: str, dsn: str) -> Callable[[], Coroutine[Any, Any, Conn]]:
        async def connect() -> Conn:
            conn = await AsyncConnection.connect(dsn, **self._connect_kwargs(dsn))
            try:
                await self._configure(conn)
                identity = await _server_of(conn)
                known = self._servers.setdefault(name, [])
                if identity and identity not in known:
                    known[:] = [*known, identity][-KNOWN_IDENTITIES:]
            except BaseException:
                await conn.close()
                raise
            return conn

        return connect

    def server_keys(self, name: str) -> tuple[str, ...]:
        """What says which server a target is on: the address it is configured with, and the
        identities its server had since the bot first got in (the last few: a restart changes it,
        and targets still known by the old one are the same server). Targets sharing any of these
        are on one server."""
        address = f"address:{server_address(self._target(name).dsn)}"
        return (address, *(f"identity:{known}" for known in self._servers.get(name, ())))

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
        return list(self._targets)

    def address(self, name: str) -> tuple[str | None, str | None, str | None]:
        """(host, port, dbname) as configured for the target: where its roles log in. Never
        the user or the password."""
        try:
            parts = conninfo_to_dict(self._dsns[name])
        except Exception:
            return None, None, None
        return (
            _str_or_none(parts.get("host") or parts.get("hostaddr")),
            _str_or_none(parts.get("port")),
            _str_or_none(parts.get("dbname")),
        )

    @property
    def timeout(self) -> float:
        return self._timeout

    def lifeline(self, name: str) -> Lifeline:
        return self._target(name).lifeline

    def remember_fill(self, name: str, fill: Fill) -> None:
        self._target(name).fill = fill

    async def open(self) -> None:
        # wait=False: a target that is down at start must not stop the others (or the bot).
        for target in self._targets.values():
            await target.pool.open(wait=False)
            target.lifeline.start()

    async def close(self) -> None:
        await asyncio.gather(
            *(target.pool.close(timeout=1) for target in self._targets.values()),
            *(target.lifeline.stop() for target in self._targets.values()),
            return_exceptions=True,
        )

    def _target(self, name: str) -> _Target:
        try:
            return self._targets[name]
        except KeyError:
            raise UnknownTargetError(name, self.names) from None

    async def run(
        self,
        name: str,
        work: Callable[[Conn], Coroutine[Any, Any, T]],
        *,
        budget: float | None = None,
        retry: bool = True,
    ) -> T:
        """Run ``work`` on a connection of target ``name`` within the command budget.

        ``budget`` widens the overall time for work of several statements (executing a request);
        each statement still has the command budget as its statement_timeout. ``retry``: work
        that only reads is run once more on a fresh connection if the one it got turned out to be
        dead (a lifeline whose backend was terminated looks alive until it is used); work that
        signals sessions never is.
        """
        self._target(name)  # an unknown name fails here, before it could become a metrics label
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (budget or self._timeout)
        try:
            try:
                return await self._run(name, work, deadline, budget)
            except _DeadConnection as dead:
                if not retry or deadline - loop.time() < QUICK_CHECKOUT_SECONDS:
                    raise dead.error from None
                log.info("target %s: a connection of the bot's was dead (%s); trying again", name, dead.error.reason)
                try:
                    return await self._run(name, work, deadline, budget)  # within the same budget
                except _DeadConnection as again:
                    raise again.error from None
        finally:
            metrics.TARGET_QUERY_SECONDS.labels(target=name).observe(time.perf_counter() - started)

    async def _run(
        self, name: str, work: Callable[[Conn], Coroutine[Any, Any, T]], deadline: float, budget: float | None
    ) -> T:
        target = self._target(name)
        loop = asyncio.get_running_loop()
        conn, on_lifeline = await self._checkout(target, min(deadline, loop.time() + self._timeout))
        task = asyncio.create_task(work(conn))
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()) + 0.2)
        except asyncio.CancelledError:  # stopping: the connection is given back (or replaced) all the same
            task.cancel()
            self._later(self._after_timeout(target, conn, on_lifeline, task))
            raise
        if not done:
            # Answer now; cancelling a query on a silent server can itself take seconds, so that
            # (and getting the connection back, or replacing it) happens in the background.
            task.cancel()
            self._later(self._after_timeout(target, conn, on_lifeline, task))
            raise TargetUnavailableError(name, f"no answer within {budget or self._timeout:g}s", fill=target.fill)
        healthy = not conn.broken
        try:
            return task.result()
        except psycopg.errors.QueryCanceled:
            raise TargetUnavailableError(name, f"the query took longer than {self._timeout:g}s") from None
        except psycopg.OperationalError as exc:
            healthy = False
            error = TargetUnavailableError(name, self._reason(exc))
            raise (_DeadConnection(error) if conn.broken else error) from None
        finally:
            if on_lifeline:
                target.lifeline.release(healthy=healthy)
            else:
                await target.pool.putconn(conn)

    async def _after_timeout(self, target: _Target, conn: Conn, on_lifeline: bool, task: asyncio.Task[Any]) -> None:
        """A query that overran: keep the connection if its cancellation goes through (on a full
        server the lifeline may not come back), else replace it."""
        with contextlib.suppress(BaseException):
            await asyncio.wait({task}, timeout=SALVAGE_SECONDS)
        healthy = task.done() and not conn.broken and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if on_lifeline:
            target.lifeline.release(healthy=healthy)
            return
        if not healthy:
            with contextlib.suppress(Exception):
                await conn.close()  # a closed connection is discarded and replaced
        with contextlib.suppress(Exception):
            await target.pool.putconn(conn)

    def _later(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._background.add(task := asyncio.ensure_future(coroutine))
        task.add_done_callback(self._background.discard)

    async def _checkout(self, target: _Target, deadline: float) -> tuple[Conn, bool]:
        """A connection, and whether it is the lifeline (which the caller must release); never
        waiting past ``deadline``."""
        loop = asyncio.get_running_loop()
        lifeline, pool = target.lifeline, target.pool
        if lifeline.connected and not lifeline.busy:
            with contextlib.suppress(TimeoutError, LifelineDown):
                async with asyncio.timeout_at(min(deadline, loop.time() + QUICK_CHECKOUT_SECONDS)):
                    return await lifeline.acquire(), True
        if not lifeline.connected:
            await lifeline.wait_settled(deadline - loop.time())
        if not lifeline.connected:
            # The server does not let the bot in (or does not answer); a pooled connection that is
            # still open is the only other way in.
            with contextlib.suppress(PoolTimeout, psycopg.OperationalError):
                return await pool.getconn(timeout=max(0.05, min(QUICK_CHECKOUT_SECONDS, deadline - loop.time()))), False
            raise self._refused(target)
        pooled = asyncio.create_task(pool.getconn(timeout=max(0.05, deadline - loop.time())))
        waiting = asyncio.create_task(lifeline.acquire())
        chosen: bool | None = None  # True: the lifeline; False: the pooled one
        try:
            async with asyncio.timeout_at(deadline):
                pending: set[asyncio.Task[Conn]] = {pooled, waiting}
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if not task.cancelled() and task.exception() is None:
                            chosen = task is waiting
                            return task.result(), chosen
            raise self._refused(target) if not lifeline.connected else self._busy(target)
        except TimeoutError:
            raise self._busy(target) from None
        finally:
            # What was not chosen goes back, now or whenever it arrives.
            if chosen is not True:
                _hand_back(waiting, lambda _: lifeline.release(healthy=True))
            if chosen is not False:
                _hand_back(pooled, lambda conn: self._later(pool.putconn(conn)))

    def _refused(self, target: _Target) -> TargetUnavailableError:
        reason = target.lifeline.error or f"no answer within {self._timeout:g}s"
        return TargetUnavailableError(target.name, reason, full=full_kind(reason), fill=target.fill)

    def _busy(self, target: _Target) -> TargetBusyError:
        count = target.pool.max_size + 1
        return TargetBusyError(target.name, f"all {count} of the bot's connections are busy", fill=target.fill)

    def _reason(self, exc: BaseException) -> str:
        return redact_dsn(first_line(exc), list(self._dsns.values()))


async def _server_of(conn: Conn) -> str:
    for statement in (sql.SERVER_IDENTITY, sql.SERVER_ADDRESS):
        try:
            cur = await conn.execute(statement)
            row = await cur.fetchone()
            if row is not None and row["server"]:
                return str(row["server"])
        except psycopg.errors.InsufficientPrivilege:
            continue
    return ""


def _hand_back(task: asyncio.Task[Conn], give_back: Callable[[Conn], None]) -> None:
    def settle(done: asyncio.Task[Conn]) -> None:
        if not done.cancelled() and done.exception() is None:
            give_back(done.result())

    if task.done():
        settle(task)
    else:
        task.cancel()
        task.add_done_callback(settle)


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None
