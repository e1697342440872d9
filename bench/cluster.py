"""A PostgreSQL for benchmarks: a throwaway cluster of its own, and a crowd of sessions on it."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from tests.matrix.servers import free_port, throwaway_cluster

__all__ = ["Crowd", "crowd", "free_port", "private_cluster", "raise_file_limit"]


@contextlib.contextmanager
def private_cluster(max_connections: int, *, major: int = 15, **settings: str) -> Iterator[str]:
    """A throwaway cluster on a free port (tests/matrix/servers.py), so the machine's own server
    is never touched; ``major`` picks the PostgreSQL version."""
    with throwaway_cluster(major, max_connections=max_connections, settings=settings) as cluster:
        yield cluster.dsn


@dataclass
class Crowd:
    roles: list[str]
    connections: list[psycopg.AsyncConnection[Any]] = field(default_factory=list)


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, needed)), hard))


@contextlib.asynccontextmanager
async def crowd(
    dsn: str, *, roles: int, backends: int, prefix: str, full_every: int = 10, busy: bool = True
) -> AsyncIterator[Crowd]:
    """``backends`` client sessions over ``roles`` roles; every ``full_every``-th role at its limit.

    With ``busy``, one session in 50 sits idle in a transaction and one runs a long query.
    Everything is dropped afterwards.
    """
    raise_file_limit(backends + 300)
    admin = psycopg.connect(dsn, autocommit=True)
    names = [f"{prefix}{i:04d}" for i in range(roles)]
    per_role = max(1, backends // roles)
    for i, name in enumerate(names):
        limit = per_role if i % full_every == 0 else per_role * 2
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}").format(sql.Identifier(name), limit))
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    result = Crowd(names)
    sleepers: list[asyncio.Task[None]] = []
    try:
        for i in range(backends):
            conn = await psycopg.AsyncConnection.connect(
                **{**params, "user": names[i % roles], "application_name": f"bench-{i % 7}"}, autocommit=True
            )
            result.connections.append(conn)
            if busy and i % 50 == 1:
                await conn.execute("BEGIN")
            elif busy and i % 50 == 2:
                sleepers.append(asyncio.create_task(_sleep_quietly(conn)))
        yield result
    finally:
        for task in sleepers:
            task.cancel()
        for conn in result.connections:
            with contextlib.suppress(Exception):
                await conn.close()
        for name in names:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


async def _sleep_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(BaseException):
        await conn.execute("SELECT pg_sleep(3600)")
