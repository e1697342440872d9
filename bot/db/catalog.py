"""Typed reads of a monitored server for the commands that only look (list, limit, limits, stray,
status): the core's ``TargetCatalog`` port, on the target pools.

The bot's own backends (``own``: see ``sql._ACTIVITY``) are counted everywhere, as the server
counts them, and shown marked in ``list``; ``stray`` never proposes them."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from bot.db.sql import targets as sql
from bot.db.targets import Conn, TargetPools
from bot.model.activity import Connection, DatabaseLimit, RoleFill, RoleInfo, RoleNotFound, ServerActivity
from bot.model.ownership import LINK_PREFIX, ConnectHint, LinkSession
from bot.model.servers import Fill
from bot.model.text import clean, clean_name, clean_name_optional, clean_optional

T = TypeVar("T")
_PARAMS = {"bot_app": sql.BOT_APPLICATION_NAME}


@dataclass(frozen=True)
class RoleMatch:
    oid: int | None
    info: RoleInfo | None
    suggestions: list[str]


class TargetCatalog:
    """What the read-only commands ask of a target, each answered on one connection."""

    def __init__(self, targets: TargetPools) -> None:
        self._targets = targets

    @property
    def names(self) -> list[str]:
        return self._targets.names

    def remember_fill(self, target: str, fill: Fill) -> None:
        self._targets.remember_fill(target, fill)

    def connect_hint(self, target: str) -> ConnectHint:
        host, port, dbname = self._targets.address(target)
        return ConnectHint(host=host, port=port, dbname=dbname)

    async def link_sessions(self, target: str) -> list[LinkSession]:
        """Every client session carrying a link code, with its login role."""

        async def work(conn: Conn) -> list[LinkSession]:
            cur = await conn.execute(sql.LINK_SESSIONS, {"prefix": LINK_PREFIX + "%"})
            return [
                LinkSession(
                    str(r["application"]), int(r["role_oid"]), int(r["pid"]), clean_name_optional(r["client_addr"])
                )
                for r in await cur.fetchall()
                if r["role_oid"] is not None
            ]

        return await self._targets.run(target, work)

    async def role_sessions(self, target: str, role: str) -> tuple[RoleInfo, list[Connection]] | RoleNotFound:
        async def work(conn: Conn, oid: int, info: RoleInfo) -> tuple[RoleInfo, list[Connection]]:
            return info, await role_connections(conn, oid)

        return await self._for_role(target, role, work)

    async def role_usage(self, target: str, role: str) -> tuple[RoleInfo, int, list[DatabaseLimit]] | RoleNotFound:
        async def work(conn: Conn, oid: int, info: RoleInfo) -> tuple[RoleInfo, int, list[DatabaseLimit]]:
            used, limits = await role_usage(conn, oid)
            return info, used, limits

        return await self._for_role(target, role, work)

    async def idle_sessions(
        self, target: str, role: str, min_idle: timedelta | None
    ) -> tuple[RoleInfo, list[Connection], int] | RoleNotFound:
        """The role's idle sessions (longest idle first) and how many sessions it has in all."""

        async def work(conn: Conn, oid: int, info: RoleInfo) -> tuple[RoleInfo, list[Connection], int]:
            idle = await role_idle_connections(conn, oid, min_idle)
            total, _ = await role_usage(conn, oid)
            return info, idle, total

        return await self._for_role(target, role, work)

    async def near_limit(self, target: str, threshold: float) -> tuple[list[RoleFill], list[DatabaseLimit]]:
        async def work(conn: Conn) -> tuple[list[RoleFill], list[DatabaseLimit]]:
            params = {"percent": round(threshold * 100)}
            cur = await conn.execute(sql.ROLES_NEAR_LIMIT, params)
            roles = [
                RoleFill(role=clean_name(r["role"]), used=int(r["used"]), limit=r["limit"])
                for r in await cur.fetchall()
            ]
            cur = await conn.execute(sql.DATABASES_NEAR_LIMIT, params)
            return roles, [_database_limit(r) for r in await cur.fetchall()]

        return await self._targets.run(target, work)

    async def activity(self, target: str) -> ServerActivity:
        async def work(conn: Conn) -> ServerActivity:
            cur = await conn.execute(sql.SERVER_SETTINGS)
            row = await cur.fetchone()
            assert row is not None
            cur = await conn.execute(sql.ALL_CLIENT_BACKENDS, _PARAMS)
            backends = [_connection(b) for b in await cur.fetchall()]
            return ServerActivity(
                server_version=clean(row["server_version"], 60),
                max_connections=row["max_connections"],
                superuser_reserved=row["superuser_reserved"],
                reserved=row["reserved"],
                observed_at=row["observed_at"],
                backends=backends,
            )

        return await self._targets.run(target, work)

    async def _for_role(
        self, target: str, role: str, work: Callable[[Conn, int, RoleInfo], Coroutine[Any, Any, T]]
    ) -> T | RoleNotFound:
        """Resolve the role via pg_roles first, so an unknown role is told apart from an idle one."""

        async def resolve(conn: Conn) -> T | RoleNotFound:
            match = await find_role(conn, role)
            if match.info is None or match.oid is None:
                return RoleNotFound(role, match.suggestions)
            return await work(conn, match.oid, match.info)

        return await self._targets.run(target, resolve)


def _connection(row: dict[str, Any]) -> Connection:
    # Names and query text are chosen by whoever connects: cleaned here, once (see model.text).
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
        own=bool(row["own"]),
    )


def _database_limit(row: dict[str, Any]) -> DatabaseLimit:
    return DatabaseLimit(
        database=clean_name(row["database"]),
        used=int(row["used"]),
        limit=row["limit"],
        allows_connections=bool(row["allows_connections"]),
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
            oid=int(row["oid"]),
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
    return used, [_database_limit(r) for r in await cur.fetchall()]
