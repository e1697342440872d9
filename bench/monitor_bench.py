"""Monitor cost with many sessions: statements per target per cycle, and cycle time.

    python bench/monitor_bench.py                      # starts its own throwaway PostgreSQL
    python bench/monitor_bench.py --dsn postgresql://postgres@127.0.0.1/postgres   # an existing one

By default it creates a private cluster (initdb in a temporary directory, max_connections raised
to fit), so the machine's own server is never touched. It then creates ROLES roles, opens BACKENDS
client connections spread over them (some roles filled to their CONNECTION LIMIT, some sessions
idle in transaction, some running long queries), and runs monitor cycles, counting every
statement sent to the monitored target.

Goal: exactly 1 statement per target per cycle, whatever the number of roles; the cycle time is
reported (median and worst). Not part of the test suite; CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from bot.core.approvals import NoAnnouncer
from bot.core.monitor import Monitor, MonitorThresholds
from bot.db.alerts import AlertStore
from bot.db.state import StateStore
from bot.db.targets import Conn, TargetPools

T = TypeVar("T")
PREFIX = "pgbench_role_"


class CountingConn:
    """Passes everything through to the connection, counting statements."""

    def __init__(self, conn: Conn, counter: list[int]) -> None:
        self._conn = conn
        self._counter = counter

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._counter[0] += 1
        return await self._conn.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class CountingPools(TargetPools):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements = [0]

    async def run(self, name: str, work: Callable[[Conn], Coroutine[Any, Any, T]], *, budget: float | None = None) -> T:
        async def counted(conn: Conn) -> T:
            return await work(CountingConn(conn, self.statements))  # type: ignore[arg-type]

        return await super().run(name, counted, budget=budget)


def _free_port() -> int:
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
    """A throwaway cluster on a free port; initdb refuses root, so run it as 'postgres' then."""
    bindir = _bindir()
    workdir = Path(tempfile.mkdtemp(prefix="pgconn-bench-"))
    data = workdir / "data"
    port = _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-c max_connections={max_connections} -c listen_addresses=127.0.0.1 -c port={port} -k {workdir}"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def population(dsn: str, roles: int, backends: int) -> AsyncIterator[None]:
    admin = psycopg.connect(dsn, autocommit=True)
    names = [f"{PREFIX}{i:04d}" for i in range(roles)]
    per_role = max(1, backends // roles)
    for i, name in enumerate(names):
        limit = per_role if i % 10 == 0 else per_role * 2  # every tenth role is full
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}").format(sql.Identifier(name), limit))
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    conns: list[psycopg.AsyncConnection[Any]] = []
    try:
        for i in range(backends):
            role = names[i % roles]
            conn = await psycopg.AsyncConnection.connect(
                **{**params, "user": role, "application_name": f"bench-{i % 7}"}, autocommit=True
            )
            conns.append(conn)
            if i % 50 == 1:
                await conn.execute("BEGIN")  # idle in transaction
            elif i % 50 == 2:
                asyncio.get_running_loop().create_task(_sleep_quietly(conn))  # a long query
        await asyncio.sleep(1.5)  # the idle transactions and long queries age past the thresholds
        yield
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.cancel_safe(timeout=1)
            with contextlib.suppress(Exception):
                await conn.close()
        for name in names:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


async def _sleep_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.execute("SELECT pg_sleep(3600)")


async def bench(dsn: str, roles: int, backends: int, cycles: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, backends + 200)), hard))
    started = time.perf_counter()
    async with population(dsn, roles, backends):
        print(f"{backends} client backends over {roles} roles ready in {time.perf_counter() - started:.1f}s")
        pools = CountingPools({"default": dsn}, command_timeout=10.0)
        state_db = f"pgconn_bench_state_{os.getpid()}"
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(state_db)))
        state_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=state_db)
        state = StateStore(state_dsn)
        await pools.open()
        await state.open()
        await state.migrate()
        monitor = Monitor(
            targets=pools,
            store=AlertStore(state),
            state_dsn=state_dsn,
            announcer=NoAnnouncer(),
            thresholds=MonitorThresholds(idle_in_tx_seconds=1, long_query_seconds=1),
            interval=60,
            channel=None,
        )
        try:
            times = []
            per_cycle = []
            for _ in range(cycles):
                before = pools.statements[0]
                t0 = time.perf_counter()
                assert await monitor.run_cycle(), "another monitor holds the leader lock"
                times.append(time.perf_counter() - t0)
                per_cycle.append(pools.statements[0] - before)
            alerts = await AlertStore(state).open_alerts(limit=10_000)
            kinds: dict[str, int] = {}
            for alert in alerts:
                kinds[alert.kind] = kinds.get(alert.kind, 0) + 1
            print(f"statements sent to the target per cycle: {per_cycle}")
            print(
                f"cycle time over {cycles} cycles: median {statistics.median(times) * 1000:.0f} ms, "
                f"worst {max(times) * 1000:.0f} ms (first cycle opens {len(alerts)} alerts)"
            )
            print("open alerts by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
            assert all(n == 1 for n in per_cycle), "more than one statement per target per cycle"
        finally:
            await monitor.stop()
            await pools.close()
            await state.close()
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(state_db)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing server (needs max_connections > BACKENDS + 20)")
    parser.add_argument("--roles", type=int, default=200)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(bench(args.dsn, args.roles, args.backends, args.cycles))
        return
    with private_cluster(args.backends + 50) as dsn:
        asyncio.run(bench(dsn, args.roles, args.backends, args.cycles))


if __name__ == "__main__":
    main()
