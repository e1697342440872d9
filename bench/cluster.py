"""A PostgreSQL for benchmarks: a throwaway cluster of its own, and a crowd of sessions on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not versions:
        sys.exit("no PostgreSQL server binaries found (initdb); pass --dsn to use an existing server")
    return versions[-1]


@contextlib.contextmanager
def private_cluster(max_connections: int) -> Iterator[str]:
    """A throwaway cluster on a free port, so the machine's own server is never touched.

    initdb refuses to run as root, so as root it runs as the 'postgres' user.
    """
    bindir = _bindir()
    workdir = Path(tempfile.mkdtemp(prefix="pgconn-bench-"))
    data = workdir / "data"
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-c max_connections={max_connections} -c listen_addresses=127.0.0.1 -c port={port} -k {workdir}"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(workdir, ignore_errors=True)


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
