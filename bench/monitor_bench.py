"""Monitor cost with many sessions: statements per target per cycle, and cycle time.

    python -m bench.monitor_bench            # its own throwaway PostgreSQL; 1,000 backends, 200 roles
    python -m bench.monitor_bench --dsn postgresql://postgres@127.0.0.1/postgres

Goal: exactly 1 statement per target per cycle whatever the number of roles, and a cycle under
50 ms at 1,000 client backends. Also part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from bench.cluster import crowd, private_cluster
from bot.core.monitor import Monitor, MonitorThresholds
from bot.core.ports import NoAnnouncer
from bot.db.alerts import AlertStore
from bot.db.monitoring import ServerWatch
from bot.db.state import StateStore
from bot.db.targets import Conn, TargetPools

T = TypeVar("T")


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

    async def run(
        self,
        name: str,
        work: Callable[[Conn], Coroutine[Any, Any, T]],
        *,
        budget: float | None = None,
        retry: bool = True,
    ) -> T:
        async def counted(conn: Conn) -> T:
            return await work(CountingConn(conn, self.statements))  # type: ignore[arg-type]

        return await super().run(name, counted, budget=budget, retry=retry)


@dataclass(frozen=True)
class MonitorResult:
    backends: int
    roles: int
    statements_per_cycle: list[int]
    median_ms: float
    worst_ms: float
    alerts: int


async def measure_monitor(dsn: str, *, cycles: int = 10) -> tuple[list[int], list[float], int]:
    """Cycles of a real Monitor against ``dsn`` as it is now; state in a throwaway database."""
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
        servers=ServerWatch(pools),
        store=AlertStore(state),
        announcer=NoAnnouncer(),
        thresholds=MonitorThresholds(idle_in_tx_seconds=0, long_query_seconds=0),
        interval=60,
        channel=None,
    )
    try:
        times: list[float] = []
        statements: list[int] = []
        for _ in range(cycles):
            before = pools.statements[0]
            started = time.perf_counter()
            assert await monitor.run_cycle(), "another monitor holds the leader lock"
            times.append((time.perf_counter() - started) * 1000)
            statements.append(pools.statements[0] - before)
        alerts = len(await AlertStore(state).open_alerts(limit=100_000))
        return statements, times, alerts
    finally:
        await monitor.stop()
        await pools.close()
        await state.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(state_db)))


async def monitor_scenario(dsn: str, *, roles: int, backends: int, cycles: int, prefix: str) -> MonitorResult:
    async with crowd(dsn, roles=roles, backends=backends, prefix=prefix):
        statements, times, alerts = await measure_monitor(dsn, cycles=cycles)
    return MonitorResult(backends, roles, statements, statistics.median(times), max(times), alerts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing server (needs max_connections > BACKENDS + 20)")
    parser.add_argument("--roles", type=int, default=200)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()

    async def run(dsn: str) -> None:
        result = await monitor_scenario(
            dsn, roles=args.roles, backends=args.backends, cycles=args.cycles, prefix="pgbench_role_"
        )
        print(f"{result.backends} client backends over {result.roles} roles")
        print(f"statements sent to the target per cycle: {result.statements_per_cycle}")
        print(f"cycle time: median {result.median_ms:.0f} ms, worst {result.worst_ms:.0f} ms ({result.alerts} alerts)")

    if args.dsn:
        asyncio.run(run(args.dsn))
    else:
        with private_cluster(args.backends + 60) as dsn:
            asyncio.run(run(dsn))


if __name__ == "__main__":
    main()
