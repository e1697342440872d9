"""What the monitor asks of the monitored servers (the core's ``MonitoredServers`` port): a
one-statement snapshot of a server (see ``sql.MONITOR_SNAPSHOT``), and the state of the bot's
own connection to each target."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.db.sql import targets as sql
from bot.db.targets import Conn, TargetPools
from bot.model.alerts import RoleAtLimit, SessionOfNote, Snapshot
from bot.model.servers import Fill, Link
from bot.model.text import clean, clean_name, clean_name_optional, clean_optional


class ServerWatch:
    """The core's ``MonitoredServers`` port on the target pools."""

    def __init__(self, targets: TargetPools) -> None:
        self._targets = targets

    @property
    def names(self) -> list[str]:
        return self._targets.names

    @property
    def timeout(self) -> float:
        return self._targets.timeout

    def link(self, target: str) -> Link:
        lifeline = self._targets.lifeline(target)
        return Link(lifeline.connected, lifeline.error, lifeline.full)

    def server_keys(self, target: str) -> tuple[str, ...]:
        return self._targets.server_keys(target)

    def remember_fill(self, target: str, fill: Fill) -> None:
        self._targets.remember_fill(target, fill)

    async def snapshot(
        self,
        target: str,
        *,
        label: str,
        idle_in_tx_seconds: float,
        long_query_seconds: float,
        budget: float,
        watched: Sequence[str] = (),
    ) -> Snapshot:
        async def work(conn: Conn) -> Snapshot:
            return await take_snapshot(
                conn,
                label,
                idle_in_tx_seconds=idle_in_tx_seconds,
                long_query_seconds=long_query_seconds,
                watched=watched,
            )

        return await self._targets.run(target, work, budget=budget)


async def take_snapshot(
    conn: Conn,
    target: str,
    *,
    idle_in_tx_seconds: float,
    long_query_seconds: float,
    watched: Sequence[str] = (),
) -> Snapshot:
    """``watched``: roles whose counts history keeps whatever their fill (protected, owned)."""
    cur = await conn.execute(
        sql.MONITOR_SNAPSHOT,
        {
            "bot_app": sql.BOT_APPLICATION_NAME,
            "idle_in_tx": idle_in_tx_seconds,
            "long_query": long_query_seconds,
            "watched": list(watched),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return Snapshot(
        target=target,
        server_version=clean(row["server_version"], 60),
        max_connections=row["max_connections"],
        superuser_reserved=row["superuser_reserved"],
        reserved=row["reserved"],
        observed_at=row["observed_at"],
        client_backends=int(row["client_backends"]),
        full_roles=[
            RoleAtLimit(
                role=clean_name(r["role"]),
                limit=int(r["limit"]),
                used=int(r["used"]),
                sessions=tuple(_session(s) for s in r["sessions"] or []),
            )
            for r in row["full_roles"] or []
        ],
        idle_in_transaction=[_session(s) for s in row["idle_in_transaction"] or []],
        long_queries=[_session(q) for q in row["long_queries"] or []],
        by_state={clean_name(str(state)): int(n) for state, n in (row["by_state"] or {}).items()},
        role_use={clean_name(str(role)): (int(u[0]), int(u[1])) for role, u in (row["role_use"] or {}).items()},
    )


def _session(row: dict[str, Any]) -> SessionOfNote:
    """One session of the snapshot's JSON, every name and the query cleaned where it enters."""
    return SessionOfNote(
        pid=int(row["pid"]),
        role=clean_name_optional(row.get("role")),
        database=clean_name_optional(row.get("database")),
        application=clean_name_optional(row.get("application")),
        client=clean_name_optional(row.get("client")),
        state=clean_name_optional(row.get("state")),
        backend_start=_time(row.get("backend_start")),
        xact_start=_time(row.get("xact_start")),
        query_start=_time(row.get("query_start")),
        state_change=_time(row.get("state_change")),
        query=clean_optional(row.get("query"), sql.QUERY_PREVIEW_CHARS),
        query_length=row.get("query_length"),
    )


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
