"""The bot's own state database (PGCONN_STATE_URL): pool, health, schema migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot.db.connect import connect_kwargs
from bot.db.sql import session as session_sql
from bot.db.sql import state as state_sql
from bot.errors import first_line
from bot.model.errors import StateSchemaError, StateUnavailableError
from bot.redact import redact

log = logging.getLogger(__name__)

BUSY_POOL_SECONDS = 0.5
HEALTH_CACHE_SECONDS = 1.0


async def bot_role_members(conn: AsyncConnection[DictRow]) -> list[str]:
    cur = await conn.execute(state_sql.BOT_ROLE_MEMBERS)
    row = await cur.fetchone()
    return list(row["members"] or []) if row else []


async def _check_ownership(conn: AsyncConnection[DictRow]) -> None:
    cur = await conn.execute(state_sql.STATE_SCHEMA_OWNERSHIP)
    row = await cur.fetchone()
    if row is None:
        return  # not there yet: the bot creates it, and owns it
    if not row["owned"]:
        raise StateSchemaError(
            f"schema pgconn is owned by role {row['owner']!r}, not by the bot's role {row['bot_role']!r}; "
            "whoever owns it could rewrite or drop the audit trail, so the bot will not use it. "
            f"If its contents are trustworthy: ALTER SCHEMA pgconn OWNER TO {row['bot_role']} "
            "(and its tables); otherwise drop it"
        )
    if row["foreign_objects"]:
        names = ", ".join(row["foreign_objects"][:5])
        raise StateSchemaError(
            f"schema pgconn holds objects another role owns ({names}); the bot will not use it "
            f"until every object in it is owned by {row['bot_role']!r}"
        )
    if row["foreign_grants"]:
        names = ", ".join(row["foreign_grants"][:5])
        raise StateSchemaError(
            f"schema pgconn or objects in it grant privileges to {names}; whoever may change its tables could "
            "change a request before it is executed, so the bot will not use it until those grants are revoked"
        )


async def _create(conn: AsyncConnection[DictRow], statement: str) -> None:
    """``CREATE … IF NOT EXISTS`` that tolerates another replica creating the same at that moment."""
    errors = psycopg.errors
    with contextlib.suppress(errors.UniqueViolation, errors.DuplicateObject, errors.DuplicateSchema):
        await conn.execute(statement)


@dataclass(frozen=True)
class StatePresence:
    """What the state database holds now, read without creating anything."""

    database: str
    where: str  # host:port (or the socket directory) as the connection went
    exists: bool  # schema pgconn is there
    version: int | None  # the migrations applied, None when there is no schema (or no version table)
    latest: int  # what this version of the bot migrates to
    may_create: bool  # the bot's role may create the schema in this database

    @property
    def current(self) -> bool:
        return self.version == self.latest


@dataclass(frozen=True)
class StateContents:
    requests: int
    audit_entries: int
    alerts: int
    live_replicas: int


class StateStore:
    """The bot's own state database: its pool, schema migrations and health. ``connection`` and
    ``transaction`` raise StateUnavailableError when it does not answer."""

    def __init__(self, dsn: str, *, timeout: float = 2.0, max_size: int = 4) -> None:
        self._timeout = timeout
        self._dsn = dsn
        self._aside: AsyncConnection[Any] | None = None  # for /healthz while the pool is busy
        self._health_lock = asyncio.Lock()
        self._health: tuple[float, bool] | None = None  # (when, answer)
        self.logins: set[str] = set()  # the login role(s) of the bot's state connections
        self.ready = False  # migrated: the bot's own tables are there
        self.pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            open=False,
            name="pgconn-state",
            # How long a command waits for a state connection: a dead state database must be
            # answered within Slack's window, not after psycopg's default 30 s.
            timeout=timeout,
            # Not psycopg_pool's hour: on a full server a recycled connection would not come back.
            max_lifetime=7 * 86400.0,
            # Not psycopg_pool's five minutes of ever longer pauses between attempts: a state
            # database that comes back is used within seconds (the next use starts a new round).
            reconnect_timeout=10.0,
            kwargs=connect_kwargs(
                dsn, connect_timeout=3, extra_options=state_sql.STATE_SESSION_OPTIONS, row_factory=dict_row
            ),
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
        )

    async def _configure(self, conn: AsyncConnection[DictRow]) -> None:
        cur = await conn.execute(session_sql.LOGIN)
        row = await cur.fetchone()
        if row is not None:
            self.logins.add(str(row["login"]))

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def presence(self) -> StatePresence:
        """What is there: the database, whether schema pgconn exists and at which version.
        Creates nothing; raises StateUnavailableError when the database does not answer."""
        async with self.connection() as conn:
            cur = await conn.execute(state_sql.STATE_PRESENCE)
            row = await cur.fetchone()
            assert row is not None
            version = None
            if row["versioned"]:
                cur = await conn.execute(state_sql.STATE_VERSION)
                version_row = await cur.fetchone()
                version = version_row["version"] if version_row else None
            info = conn.info
            where = f"{info.host}:{info.port}" if info.host and not info.host.startswith("/") else "local socket"
        return StatePresence(
            database=row["database"],
            where=where,
            exists=bool(row["schema_exists"]),
            version=version,
            latest=state_sql.STATE_MIGRATIONS[-1][0],
            may_create=bool(row["may_create"]),
        )

    async def ownership_problem(self) -> str | None:
        """Why the bot would refuse schema pgconn as it is (someone else owns it or may change
        it), read only; None when it is the bot's own, or not there."""
        async with self.connection() as conn:
            try:
                await _check_ownership(conn)
            except StateSchemaError as exc:
                return str(exc)
        return None

    async def contents(self) -> StateContents:
        """How much a ``drop-state`` would remove (the schema must be the bot's, at the latest version)."""
        async with self.connection() as conn:
            await _check_ownership(conn)
            cur = await conn.execute(state_sql.STATE_CONTENTS)
            row = await cur.fetchone()
        assert row is not None
        return StateContents(row["requests"], row["audit_entries"], row["alerts"], row["live_replicas"])

    async def drop(self) -> None:
        """Remove schema pgconn and everything in it (the audit trail too: it refuses DELETE, not
        DROP). Only a schema the bot's own role owns; ``drop-state`` asks first."""
        async with self.transaction() as conn:
            await _check_ownership(conn)
            await conn.execute(state_sql.DROP_STATE)
        self.ready = False

    async def unreachable_reason(self, seconds: float = 3.0) -> str | None:
        """libpq's own reason the state database refuses a connection now (a pool's timeout says
        only that it waited), passwords removed; None when a connection succeeds."""
        try:
            async with asyncio.timeout(seconds + 1):
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, **connect_kwargs(self._dsn, connect_timeout=seconds)
                )
        except TimeoutError:
            return f"no answer within {seconds:.0f} s"
        except Exception as exc:
            return redact(first_line(exc)) or type(exc).__name__
        await conn.close()
        return None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        """A state connection. A database that does not answer (no connection in time, a connection
        lost, a statement or lock timeout) raises StateUnavailableError, the core's own error."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise StateUnavailableError(redact(first_line(exc)) or type(exc).__name__) from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        """A state connection in a transaction that commits when the block ends (see ``connection``)."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        await self._drop_aside()
        await self.pool.close(timeout=1)

    async def migrate(self, wait_seconds: float = 10.0) -> list[int]:
        """Bring the schema up to date; returns the versions applied now. Safe with many replicas."""
        applied_now: list[int] = []
        async with self.pool.connection(timeout=wait_seconds) as conn:
            await _check_ownership(conn)  # a schema someone else made is refused before anything is created
            for statement in (state_sql.STATE_SCHEMA, state_sql.STATE_VERSION_TABLE):
                await _create(conn, statement)
            await _check_ownership(conn)  # whoever created it a moment ago: it must be the bot's own
            async with conn.transaction():
                await conn.execute(state_sql.MIGRATION_LOCK)
                cur = await conn.execute(state_sql.STATE_APPLIED_VERSIONS)
                done = {row["version"] for row in await cur.fetchall()}
                for version, statement in state_sql.STATE_MIGRATIONS:
                    if version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(statement)
                        await conn.execute(state_sql.STATE_RECORD_VERSION, {"version": version})
                    applied_now.append(version)
        if applied_now:
            log.info("state schema migrated to version %s", applied_now[-1])
        self.ready = True
        return applied_now

    async def healthy(self) -> bool:
        """Whether the state database answers. A pool that is merely busy is not a database that
        is down: then the question is asked on the one connection kept aside for it. One answer
        at a time, reused for a second, so health checks cannot open connections of their own."""
        async with self._health_lock:
            loop = asyncio.get_running_loop()
            if self._health is not None and loop.time() - self._health[0] < HEALTH_CACHE_SECONDS:
                return self._health[1]
            answer = await self._ask_health()
            self._health = (loop.time(), answer)
            return answer

    async def _ask_health(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    async with self.pool.connection(timeout=BUSY_POOL_SECONDS) as conn:
                        await conn.execute(session_sql.PING)
                except PoolTimeout:
                    await self._ping_aside()
            return True
        except Exception as exc:
            log.warning("state database not answering: %s", redact(first_line(exc)))
            await self._drop_aside()
            return False

    async def _ping_aside(self) -> None:
        if self._aside is None or self._aside.closed or self._aside.broken:
            self._aside = await AsyncConnection.connect(
                self._dsn, **connect_kwargs(self._dsn, connect_timeout=3, extra_options=state_sql.STATE_SESSION_OPTIONS)
            )
        await self._aside.execute(session_sql.PING)

    async def _drop_aside(self) -> None:
        if self._aside is not None:
            with contextlib.suppress(Exception):
                await self._aside.close()
            self._aside = None
