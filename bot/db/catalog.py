"""Typed reads of a monitored server: run the statements in ``sql`` and build result objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.core.results import Connection, DatabaseLimit, RoleFill, RoleInfo
from bot.core.text import clean, clean_name, clean_name_optional, clean_optional
from bot.db import sql
from bot.db.targets import Conn

_PARAMS = {"bot_app": sql.BOT_APPLICATION_NAME}


@dataclass(frozen=True)
class RoleMatch:
    oid: int | None
    info: RoleInfo | None
    suggestions: list[str]


@dataclass(frozen=True)
class Settings:
    server_version: str
    max_connections: int
    superuser_reserved: int
    reserved: int
    observed_at: datetime


def _connection(row: dict[str, Any]) -> Connection:
    # Names and query text are chosen by whoever connects: cleaned here, once (see core.text).
    return Connection(
        pid=row["pid"],
        role=clean_name_optional(row["role"]),
        database=clean_name_optional(row["database"]),
        application=clean_name_optional(row["application_name"]),
        client_addr=clean_name_optional(row["client_addr"]),
        client_port=row["client_port"],
        state=clean_name_optional(row["state"]),
        backend_start=row["backend_start"],
        xact_start=row["xact_start"],
        query_start=row["query_start"],
        state_change=row["state_change"],
        wait_event=clean_name_optional(row["wait_event"]),
        query=clean_optional(row["query"], sql.QUERY_PREVIEW_CHARS),
        query_length=row["query_length"],
        observed_at=row["observed_at"],
    )


async def find_role(conn: Conn, role: str) -> RoleMatch:
    cur = await conn.execute(sql.ROLE_LOOKUP, {"role": role})
    rows = await cur.fetchall()
    if rows and rows[0]["exact"]:
        row = rows[0]
        info = RoleInfo(
            name=clean_name(row["name"]),
            connection_limit=row["rolconnlimit"],
            superuser=row["rolsuper"],
            can_login=row["rolcanlogin"],
        )
        return RoleMatch(oid=row["oid"], info=info, suggestions=[])
    return RoleMatch(oid=None, info=None, suggestions=[clean_name(row["name"]) for row in rows])


async def role_connections(conn: Conn, role_oid: int) -> list[Connection]:
    cur = await conn.execute(sql.ROLE_CONNECTIONS, {**_PARAMS, "role_oid": role_oid})
    return [_connection(row) for row in await cur.fetchall()]


async def role_idle_connections(conn: Conn, role_oid: int, min_idle: timedelta | None) -> list[Connection]:
    params = {**_PARAMS, "role_oid": role_oid, "min_idle": min_idle or timedelta(0)}
    cur = await conn.execute(sql.ROLE_IDLE_CONNECTIONS, params)
    return [_connection(row) for row in await cur.fetchall()]


async def role_usage(conn: Conn, role_oid: int) -> tuple[int, list[DatabaseLimit]]:
    cur = await conn.execute(sql.ROLE_USAGE, {"role_oid": role_oid})
    row = await cur.fetchone()
    used = int(row["used"]) if row else 0
    cur = await conn.execute(sql.DATABASE_LIMITS_FOR_ROLE, {"role_oid": role_oid})
    limits = [
        DatabaseLimit(database=clean_name(r["database"]), used=int(r["used"]), limit=r["limit"])
        for r in await cur.fetchall()
    ]
    return used, limits


async def roles_near_limit(conn: Conn, threshold: float) -> list[RoleFill]:
    cur = await conn.execute(sql.ROLES_NEAR_LIMIT, {"percent": round(threshold * 100)})
    return [RoleFill(role=clean_name(r["role"]), used=int(r["used"]), limit=r["limit"]) for r in await cur.fetchall()]


async def server_settings(conn: Conn) -> Settings:
    cur = await conn.execute(sql.SERVER_SETTINGS)
    row = await cur.fetchone()
    assert row is not None
    return Settings(
        server_version=clean(row["server_version"], 60),
        max_connections=row["max_connections"],
        superuser_reserved=row["superuser_reserved"],
        reserved=row["reserved"],
        observed_at=row["observed_at"],
    )


async def client_backends(conn: Conn) -> list[tuple[Connection, bool]]:
    """Every client backend, each with whether it is the bot's own."""
    cur = await conn.execute(sql.ALL_CLIENT_BACKENDS, _PARAMS)
    return [(_connection(row), bool(row["own"])) for row in await cur.fetchall()]
