"""The monitor's one-statement snapshot of a target (see ``sql.MONITOR_SNAPSHOT``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.core.text import clean, clean_name
from bot.db import sql
from bot.db.targets import Conn


@dataclass(frozen=True)
class Snapshot:
    target: str
    server_version: str
    max_connections: int
    superuser_reserved: int
    reserved: int
    observed_at: datetime
    client_backends: int
    full_roles: list[dict[str, Any]]  # role, limit, used, sessions[…]
    idle_in_transaction: list[dict[str, Any]]
    long_queries: list[dict[str, Any]]

    @property
    def usable_slots(self) -> int:
        return max(1, self.max_connections - self.superuser_reserved - self.reserved)

    @property
    def fill(self) -> float:
        return self.client_backends / self.usable_slots


async def take_snapshot(conn: Conn, target: str, *, idle_in_tx_seconds: float, long_query_seconds: float) -> Snapshot:
    cur = await conn.execute(
        sql.MONITOR_SNAPSHOT,
        {"bot_app": sql.BOT_APPLICATION_NAME, "idle_in_tx": idle_in_tx_seconds, "long_query": long_query_seconds},
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
        full_roles=[_cleaned(r) for r in row["full_roles"] or []],
        idle_in_transaction=[_cleaned(s) for s in row["idle_in_transaction"] or []],
        long_queries=[_cleaned(q) for q in row["long_queries"] or []],
    )


def _cleaned(value: Any, key: str = "") -> Any:
    """The snapshot's JSON with every string cleaned where it enters (names, query text)."""
    if isinstance(value, dict):
        return {k: _cleaned(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v, key) for v in value]
    if isinstance(value, str):
        return clean(value, sql.QUERY_PREVIEW_CHARS) if key == "query" else clean_name(value)
    return value
