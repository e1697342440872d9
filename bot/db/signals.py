"""Finding what a kill/cancel would hit, and signalling exactly those sessions, on a monitored
server: the core's ``Signaller`` port. What the statements found comes back as facts
(``SignalAttempt``); what they mean (the outcome) is the core's decision."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql as pgsql

from bot.db.catalog import find_role
from bot.db.sql import targets as sql
from bot.db.targets import Conn, TargetPools
from bot.errors import first_line
from bot.model.activity import RoleInfo, RoleNotFound
from bot.model.drains import DrainCheck
from bot.model.errors import TargetUnavailableError, UnknownTargetError
from bot.model.requests import (
    Candidate,
    KillScope,
    Protection,
    RequestTarget,
    SignalAction,
    SignalAttempt,
    SignalVerdict,
)
from bot.model.text import clean, clean_name, clean_name_optional

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
# statement_timeout on target connections is the command budget; a waiting terminate must end
# well inside it, so the wait per statement is capped below that.
STATEMENT_MARGIN_SECONDS = 0.3
ERROR_LIMIT = 400
_VERDICTS = {
    "gone": SignalVerdict.GONE,
    "replaced": SignalVerdict.REPLACED,
    "protected": SignalVerdict.PROTECTED,
    "changed": SignalVerdict.CHANGED,
}


class Signaller:
    """Kill/cancel on the target pools. Finding candidates raises UnknownTargetError and
    TargetUnavailableError; signalling never raises: every target gets an attempt."""

    def __init__(self, targets: TargetPools) -> None:
        self._targets = targets

    @property
    def timeout(self) -> float:
        return self._targets.timeout

    async def candidates_by_pid(self, target: str, pids: Sequence[int], protection: Protection) -> dict[int, Candidate]:
        async def work(conn: Conn) -> dict[int, Candidate]:
            return {c.pid: c for c in await _candidates(conn, protection=protection, pids=pids)}

        return await self._targets.run(target, work)

    async def candidates_of_database(self, target: str, database: str, protection: Protection) -> list[Candidate]:
        """Every client session on ``database`` (protected ones too: they are reported, spared)."""

        async def work(conn: Conn) -> list[Candidate]:
            return await _candidates(conn, protection=protection, database=database)

        return await self._targets.run(target, work)

    async def drain_check(self, target: str, database: str) -> DrainCheck:
        async def work(conn: Conn) -> DrainCheck:
            cur = await conn.execute(sql.DRAIN_CHECK, {"database": database})
            row = await cur.fetchone()
            assert row is not None
            drainable: tuple[str, ...] = ()
            if row["installed"]:
                cur = await conn.execute(sql.DRAINABLE)
                listed = await cur.fetchone()
                drainable = tuple(str(d) for d in (listed["databases"] if listed else None) or [])
            return DrainCheck(
                exists=bool(row["exists"]),
                template=bool(row["template"]),
                allows_connections=bool(row["allows_connections"]),
                own=bool(row["own"]),
                installed=bool(row["installed"]),
                drainable=drainable,
                superuser=bool(row["superuser"]),
                suggestions=tuple(clean_name(s) for s in row["suggestions"] or []),
            )

        return await self._targets.run(target, work)

    async def set_allow_connections(self, target: str, database: str, allow: bool) -> str | None:
        """``ALLOW_CONNECTIONS`` of ``database`` (through pgconn_drain's function, or directly for
        a superuser bot); None when done, else the server's reason."""

        async def work(conn: Conn) -> str | None:
            try:
                cur = await conn.execute(sql.DRAIN_SETUP)
                setup = await cur.fetchone()
                if setup is not None and setup["may_execute"]:
                    await conn.execute(sql.SET_ALLOW_CONNECTIONS, {"database": database, "allow": allow})
                else:
                    statement = pgsql.SQL(sql.ALTER_ALLOW_CONNECTIONS).format(
                        database=pgsql.Identifier(database), allow=pgsql.SQL("true" if allow else "false")
                    )
                    await conn.execute(statement)
            except psycopg.Error as exc:
                if conn.closed or conn.broken:
                    raise
                return server_error(exc)
            return None

        try:
            return await self._targets.run(target, work, retry=False)
        except (TargetUnavailableError, UnknownTargetError) as exc:
            return exc.reason if isinstance(exc, TargetUnavailableError) else "the target is no longer configured"

    async def candidates_of_role(
        self, target: str, role: str, idle_for: timedelta | None, protection: Protection
    ) -> tuple[RoleInfo, list[Candidate]] | RoleNotFound:
        """The role's sessions (``idle_for``: only those idle at least that long)."""

        async def work(conn: Conn) -> tuple[RoleInfo, list[Candidate]] | RoleNotFound:
            match = await find_role(conn, role)
            if match.info is None or match.oid is None:
                return RoleNotFound(role, match.suggestions)
            if match.info.superuser:
                return match.info, []
            found = await _candidates(conn, protection=protection, role_oid=match.oid, idle_for=idle_for)
            return match.info, found

        return await self._targets.run(target, work)

    async def still_on_query(self, target: str, targets: Sequence[RequestTarget]) -> set[int]:
        """The targets still running the query they ran when requested (the ladder's wait)."""

        async def work(conn: Conn) -> set[int]:
            return await _on_same_query(conn, targets)

        return await self._targets.run(target, work)

    async def signal_backends(
        self,
        target: str,
        *,
        action: SignalAction,
        scope: KillScope,
        targets: Sequence[RequestTarget],
        protection: Protection,
        wait_seconds: float,
        same_query: bool = False,
    ) -> list[SignalAttempt]:
        """Signal each target only if it is still the session that was approved; an attempt for
        each, in order. ``same_query``: a terminate only while it runs the very query it ran when
        requested (the ladder's second step; a cancel always checks that). Terminations are
        waited for (``wait_seconds`` in all): with ``pg_terminate_backend(pid, timeout)`` on 14+,
        then a poll of what is left (which is all of the waiting on 13). Signals are never sent
        twice: no retry on another connection."""
        progress: dict[int, SignalAttempt] = {}
        in_flight: list[int] = []

        async def work(conn: Conn) -> list[SignalAttempt]:
            return await _signal(
                conn,
                action,
                scope,
                targets,
                protection,
                wait_seconds,
                self._targets.timeout,
                progress,
                in_flight,
                same_query=same_query or action == SignalAction.CANCEL,
            )

        budget = self._targets.timeout * 2 + wait_seconds + 0.2 * len(targets)
        try:
            return await self._targets.run(target, work, budget=budget, retry=False)
        except (TargetUnavailableError, UnknownTargetError) as exc:
            why = exc.reason if isinstance(exc, TargetUnavailableError) else "the target is no longer configured"
        except Exception as exc:
            reference = uuid.uuid4().hex[:8]
            log.exception("signalling on %s failed (ref %s)", target, reference)
            why = f"{first_line(exc)} (ref {reference})"
        return [
            progress.get(t.pid)
            or SignalAttempt(
                t.pid, SignalVerdict.LOST if t.pid in in_flight[-1:] else SignalVerdict.NOT_REACHED, error=why
            )
            for t in targets
        ]


def _client(row: dict[str, Any]) -> str:
    if row["client_addr"]:
        return clean_name_optional(str(row["client_addr"])) or "—"
    return "local socket" if row["client_port"] == -1 else "—"


def _protection_params(protection: Protection) -> dict[str, list[str]]:
    return {"protected": list(protection.protected_roles), "bot_roles": list(protection.bot_roles)}


async def _candidates(
    conn: Conn,
    *,
    protection: Protection,
    pids: Sequence[int] | None = None,
    role_oid: int | None = None,
    idle_for: timedelta | None = None,
    database: str | None = None,
) -> list[Candidate]:
    cur = await conn.execute(
        sql.SIGNAL_CANDIDATES,
        {
            "bot_app": sql.BOT_APPLICATION_NAME,
            "pids": list(pids) if pids is not None else None,
            "role_oid": role_oid,
            "idle_for": idle_for,
            "database": database,
            **_protection_params(protection),
        },
    )
    return [
        Candidate(
            pid=row["pid"],
            role_oid=int(row["role_oid"]) if row["role_oid"] is not None else None,
            role=clean_name_optional(row["role"]),
            database=clean_name_optional(row["database"]),
            application=clean_name_optional(row["application_name"]),
            client=_client(row),
            state=clean_name_optional(row["state"]),
            backend_type=clean_name_optional(row["backend_type"]),
            backend_start=row["backend_start"],
            xact_start=row["xact_start"],
            query_start=row["query_start"],
            state_change=row["state_change"],
            observed_at=row["observed_at"],
            client_backend=bool(row["client_backend"]),
            superuser=bool(row["superuser"]),
            own=bool(row["own"]),
            superuser_via=clean_name_optional(row["superuser_via"]),
            protected_via=clean_name_optional(row["protected_via"]),
            bot_login=bool(row["bot_login"]),
            role_limit=row["role_limit"],
            role_used=int(row["role_used"]),
            blocks=tuple(row["blocks"] or ()),
        )
        for row in await cur.fetchall()
    ]


def server_error(exc: psycopg.Error) -> str:
    """PostgreSQL's message with its DETAIL: from 16 on, "permission denied to terminate process"
    says what is missing (pg_signal_backend) only in the DETAIL."""
    primary = exc.diag.message_primary or first_line(exc)
    detail = exc.diag.message_detail
    return clean(f"{primary}: {detail}" if detail else primary, ERROR_LIMIT)


async def _signal(
    conn: Conn,
    action: SignalAction,
    scope: KillScope,
    targets: Sequence[RequestTarget],
    protection: Protection,
    wait_seconds: float,
    statement_seconds: float,
    done: dict[int, SignalAttempt],
    in_flight: list[int],
    *,
    same_query: bool,
) -> list[SignalAttempt]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    version = conn.info.server_version
    statement = sql.signal_statement(action, version)
    waiting: list[RequestTarget] = []
    for target in targets:
        in_flight.append(target.pid)
        wait_ms = int(max(0.001, min(deadline - loop.time(), statement_seconds - STATEMENT_MARGIN_SECONDS)) * 1000)
        try:
            cur = await conn.execute(
                statement,
                {
                    "pid": target.pid,
                    "backend_start": target.backend_start,
                    "role_oid": target.role_oid,
                    **_protection_params(protection),
                    "bot_app": sql.BOT_APPLICATION_NAME,
                    "wait_ms": wait_ms,
                    "idle_since": target.state_change if scope == KillScope.IDLE else None,
                    "query_start": target.query_start if same_query else None,
                },
            )
            row = await cur.fetchone()
        except psycopg.errors.QueryCanceled:
            done[target.pid] = SignalAttempt(target.pid, SignalVerdict.TIMED_OUT)
            waiting.append(target)
            continue
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                raise
            done[target.pid] = SignalAttempt(target.pid, SignalVerdict.ERROR, error=server_error(exc))
            continue
        assert row is not None
        if (verdict := _VERDICTS.get(row["verdict"])) is not None:
            done[target.pid] = SignalAttempt(target.pid, verdict)
            continue
        signalled = SignalVerdict.SIGNALLED if row["signalled"] else SignalVerdict.NOT_SIGNALLED
        # A terminate that waited (14+) and returned true has ended; any other terminate is
        # polled below. (false: not ended within its wait, or the server did not signal it.)
        ended = action == SignalAction.TERMINATE and bool(row["signalled"]) and version >= sql.TERMINATE_TIMEOUT_SINCE
        done[target.pid] = SignalAttempt(target.pid, signalled, ended=ended)
        if action == SignalAction.TERMINATE and not ended:
            waiting.append(target)
    in_flight.clear()
    if waiting:
        still = await _wait_until_gone(conn, waiting, deadline)
        for target in waiting:
            if target.pid not in still:
                attempt = done[target.pid]
                done[target.pid] = SignalAttempt(attempt.pid, attempt.verdict, ended=True, error=attempt.error)
    return [done[t.pid] for t in targets]


async def _on_same_query(conn: Conn, targets: Sequence[RequestTarget]) -> set[int]:
    params = {
        "pids": [t.pid for t in targets],
        "starts": [t.backend_start for t in targets],
        "query_starts": [t.query_start for t in targets],
    }
    cur = await conn.execute(sql.STILL_ON_QUERY, params)
    return {row["pid"] for row in await cur.fetchall()}


async def _wait_until_gone(conn: Conn, targets: Sequence[RequestTarget], deadline: float) -> set[int]:
    loop = asyncio.get_running_loop()
    params = {"pids": [t.pid for t in targets], "starts": [t.backend_start for t in targets]}
    while True:
        cur = await conn.execute(sql.STILL_RUNNING, params)
        still = {row["pid"] for row in await cur.fetchall()}
        if not still or loop.time() >= deadline:
            return still
        await asyncio.sleep(POLL_SECONDS)
