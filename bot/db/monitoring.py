"""The monitor's one-statement snapshot of a target (see ``sql.MONITOR_SNAPSHOT``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
        server_version=row["server_version"],
        max_connections=row["max_connections"],
        superuser_reserved=row["superuser_reserved"],
        reserved=row["reserved"],
        observed_at=row["observed_at"],
        client_backends=int(row["client_backends"]),
        full_roles=list(row["full_roles"] or []),
        idle_in_transaction=list(row["idle_in_transaction"] or []),
        long_queries=list(row["long_queries"] or []),
    )
