"""Finding what a kill/cancel would hit, and signalling exactly those sessions, on a monitored server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

from bot.core.results import RequestTarget, TargetOutcome
from bot.core.text import clean, clean_name_optional
from bot.db import sql
from bot.db.targets import Conn
from bot.errors import first_line

POLL_SECONDS = 0.05
# statement_timeout on target connections is the command budget; a waiting terminate must end
# well inside it, so the wait per statement is capped below that.
STATEMENT_MARGIN_SECONDS = 0.3
ERROR_LIMIT = 400


@dataclass(frozen=True)
class Protection:
    """Who is never signalled besides superusers: these roles and their members, and the bot's logins."""

    protected_roles: Sequence[str] = ()
    bot_roles: Sequence[str] = ()

    def params(self) -> dict[str, list[str]]:
        return {"protected": list(self.protected_roles), "bot_roles": list(self.bot_roles)}


@dataclass(frozen=True)
class Candidate:
    """A backend as found now, with what decides whether it may be signalled."""

    pid: int
    role_oid: int | None
    role: str | None
    database: str | None
    application: str | None
    client: str | None
    state: str | None
    backend_type: str | None
    backend_start: Any
    xact_start: Any
    query_start: Any
    state_change: Any
    observed_at: Any
    client_backend: bool
    superuser: bool
    own: bool
    superuser_via: str | None  # a superuser role its login role is a member of
    protected_via: str | None  # a protected role (PGCONN_PROTECTED_ROLES) it is a member of
    bot_login: bool  # one of the bot's own login roles (any replica, any of its pools)
    role_limit: int | None
    role_used: int
    blocks: tuple[int, ...]

    def as_target(self) -> RequestTarget:
        assert self.backend_start is not None and self.role_oid is not None and self.role is not None
        return RequestTarget(
            pid=self.pid,
            backend_start=self.backend_start,
            role_oid=self.role_oid,
            role=self.role,
            database=self.database,
            application=self.application,
            client=self.client,
            state=self.state,
            state_change=self.state_change,
            xact_start=self.xact_start,
            observed_at=self.observed_at,
            blocks=self.blocks,
            query_start=self.query_start,
        )


def _client(row: dict[str, Any]) -> str:
    if row["client_addr"]:
        return clean_name_optional(str(row["client_addr"])) or "—"
    return "local socket" if row["client_port"] == -1 else "—"


async def candidates(
    conn: Conn,
    *,
    protection: Protection,
    pids: Sequence[int] | None = None,
    role_oid: int | None = None,
    idle_for: timedelta | None = None,
) -> list[Candidate]:
    cur = await conn.execute(
        sql.SIGNAL_CANDIDATES,
        {
            "bot_app": sql.BOT_APPLICATION_NAME,
            "pids": list(pids) if pids is not None else None,
            "role_oid": role_oid,
            "idle_for": idle_for,
            **protection.params(),
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


@dataclass(frozen=True)
class SignalOutcome:
    pid: int
    outcome: str
    detail: str | None = None


@dataclass
class Progress:
    """What has been done so far, so a failure halfway reports the truth for each target."""

    done: dict[int, SignalOutcome] = field(default_factory=dict)
    in_flight: int | None = None

    def outcomes_after(self, targets: Sequence[RequestTarget], failure: str) -> list[SignalOutcome]:
        result = []
        for target in targets:
            if target.pid in self.done:
                result.append(self.done[target.pid])
            elif target.pid == self.in_flight:
                result.append(
                    SignalOutcome(target.pid, TargetOutcome.FAILED, f"{failure} while signalling it; it may have been")
                )
            else:
                result.append(SignalOutcome(target.pid, TargetOutcome.FAILED, f"not signalled: {failure}"))
        return result


async def execute(
    conn: Conn,
    *,
    action: str,
    scope: str,
    targets: Sequence[RequestTarget],
    protection: Protection,
    wait_seconds: float,
    statement_seconds: float,
    progress: Progress | None = None,
) -> list[SignalOutcome]:
    """Signal each target only if it is still the session that was approved; report each one.

    Terminations are waited for: with ``pg_terminate_backend(pid, timeout)`` on 14+, then a poll
    of what is left (which is all of the waiting on 13).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    version = conn.info.server_version
    statement = sql.signal_statement(action, version)
    progress = progress if progress is not None else Progress()
    outcomes = progress.done
    waiting: list[RequestTarget] = []
    for target in targets:
        progress.in_flight = target.pid
        wait_ms = int(max(0.001, min(deadline - loop.time(), statement_seconds - STATEMENT_MARGIN_SECONDS)) * 1000)
        try:
            cur = await conn.execute(
                statement,
                {
                    "pid": target.pid,
                    "backend_start": target.backend_start,
                    "role_oid": target.role_oid,
                    **protection.params(),
                    "bot_app": sql.BOT_APPLICATION_NAME,
                    "wait_ms": wait_ms,
                    "idle_since": target.state_change if scope == "idle" else None,
                    "query_start": target.query_start if action == "cancel" else None,
                },
            )
            row = await cur.fetchone()
        except psycopg.errors.QueryCanceled:
            outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.STILL_RUNNING, "timed out waiting")
            waiting.append(target)
            continue
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                raise
            outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.FAILED, server_error(exc))
            continue
        assert row is not None
        verdict = row["verdict"]
        if verdict == "gone":
            outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.GONE)
        elif verdict == "replaced":
            outcomes[target.pid] = SignalOutcome(
                target.pid, TargetOutcome.REPLACED, "the pid now belongs to a different session"
            )
        elif verdict == "protected":
            outcomes[target.pid] = SignalOutcome(
                target.pid,
                TargetOutcome.PROTECTED,
                "superuser (or a member of one), protected role (or a member of one), or the bot's own",
            )
        elif verdict == "changed":
            detail = "the query it was running has ended" if action == "cancel" else "it has been active since"
            outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.CHANGED, detail)
        elif not row["signalled"]:
            # false: a terminate that did not finish within its wait, or a signal the server refused.
            if action == "terminate":
                outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.STILL_RUNNING)
                waiting.append(target)
            else:
                outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.FAILED, "the server did not signal it")
        elif action == "cancel":
            outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.CANCELLED)
        elif version >= sql.TERMINATE_TIMEOUT_SINCE:
            outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.TERMINATED)
        else:
            outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.STILL_RUNNING)
            waiting.append(target)
    progress.in_flight = None
    if waiting:
        still = await _wait_until_gone(conn, waiting, deadline)
        for target in waiting:
            if target.pid not in still:
                outcomes[target.pid] = SignalOutcome(target.pid, TargetOutcome.TERMINATED)
    return [outcomes[t.pid] for t in targets]


async def _wait_until_gone(conn: Conn, targets: Sequence[RequestTarget], deadline: float) -> set[int]:
    loop = asyncio.get_running_loop()
    params = {"pids": [t.pid for t in targets], "starts": [t.backend_start for t in targets]}
    while True:
        cur = await conn.execute(sql.STILL_RUNNING, params)
        still = {row["pid"] for row in await cur.fetchall()}
        if not still or loop.time() >= deadline:
            return still
        await asyncio.sleep(POLL_SECONDS)
