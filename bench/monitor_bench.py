"""Monitor cost with many sessions: statements per target per cycle, and cycle time.

    python -m bench.monitor_bench            # its own throwaway PostgreSQL; 1,000 backends, 200 roles
    python -m bench.monitor_bench --dsn postgresql://postgres@127.0.0.1/postgres

Goal: exactly 1 statement per target per cycle whatever the number of roles, and a cycle under
50 ms at 1,000 client backends, with history on (one row per cycle in the state database). Then
history's size: a day of the rows those cycles wrote (one a minute), and 14 days of them thinned
as the housekeeper thins them (per 5 minutes after a day, per hour after a week). Also part of
``python -m bench``.
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
from bot.db.history import HistoryStore
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


HISTORY_INTERVAL = 60  # seconds between the samples of the synthetic history (the default interval)
HISTORY_DAYS = 14  # PGCONN_HISTORY_RETENTION's default


@dataclass(frozen=True)
class HistorySize:
    roles_per_row: int  # roles a row of this crowd keeps (at ≥ half their limit)
    day_rows: int
    day_bytes: int  # table, TOAST and index, a day of rows as the monitor writes them
    kept_rows: int  # HISTORY_DAYS of them, thinned
    kept_bytes: int
    thin_seconds: float  # thinning all of it at once (the housekeeper does an hour's worth at a time)


@dataclass(frozen=True)
class MonitorResult:
    backends: int
    roles: int
    statements_per_cycle: list[int]
    median_ms: float
    worst_ms: float
    alerts: int
    history: HistorySize | None = None


# A day (or ``days``) of copies of the last row the monitor wrote, one every HISTORY_INTERVAL.
_SYNTHESISE = """
INSERT INTO pgconn.history (target, at, covers, samples, client_backends, usable_slots, by_state, roles)
SELECT h.target, h.at - make_interval(secs => n * %(interval)s), h.covers, 1, h.client_backends - n %% 3,
       h.usable_slots, h.by_state, h.roles
  FROM (SELECT * FROM pgconn.history ORDER BY at DESC LIMIT 1) h, generate_series(1, %(rows)s) n
"""
_SIZE = """
SELECT count(*) AS n, pg_total_relation_size('pgconn.history') AS bytes,
       (SELECT count(*) FROM jsonb_object_keys((SELECT roles FROM pgconn.history ORDER BY at DESC LIMIT 1))) AS roles
  FROM pgconn.history
"""


def _size(state_dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(state_dsn, autocommit=True) as conn:
        conn.execute("VACUUM FULL pgconn.history")
        row = conn.execute(_SIZE).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def measure_history_size(state_dsn: str, history: HistoryStore) -> HistorySize:
    """A day, then HISTORY_DAYS, of the rows the monitor wrote last (its server and roles as they
    are now), as big as they are on disk before and after thinning."""
    per_day = 86400 // HISTORY_INTERVAL
    with psycopg.connect(state_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM pgconn.history WHERE at < (SELECT max(at) FROM pgconn.history)")
        conn.execute(_SYNTHESISE, {"interval": HISTORY_INTERVAL, "rows": per_day - 1})
    day_rows, day_bytes, roles = _size(state_dsn)
    with psycopg.connect(state_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM pgconn.history WHERE at < (SELECT max(at) FROM pgconn.history)")
        conn.execute(_SYNTHESISE, {"interval": HISTORY_INTERVAL, "rows": per_day * HISTORY_DAYS - 1})
    started = time.perf_counter()
    await history.thin(HISTORY_DAYS * 86400.0)
    thin_seconds = time.perf_counter() - started
    kept_rows, kept_bytes, _ = _size(state_dsn)
    return HistorySize(roles, day_rows, day_bytes, kept_rows, kept_bytes, thin_seconds)


async def measure_monitor(
    dsn: str, *, cycles: int = 10, history: bool = True, sizes: bool = True
) -> tuple[list[int], list[float], int, HistorySize | None]:
    """Cycles of a real Monitor against ``dsn`` as it is now (``history``: keeping it; ``sizes``:
    and measuring how big it gets); state in a throwaway database."""
    pools = CountingPools({"default": dsn}, command_timeout=10.0)
    state_db = f"pgconn_bench_state_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(state_db)))
    state_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=state_db)
    state = StateStore(state_dsn)
    await pools.open()
    await state.open()
    await state.migrate()
    kept = HistoryStore(state)
    monitor = Monitor(
        servers=ServerWatch(pools),
        store=AlertStore(state),
        announcer=NoAnnouncer(),
        thresholds=MonitorThresholds(idle_in_tx_seconds=0, long_query_seconds=0),
        interval=HISTORY_INTERVAL,
        channel=None,
        history=kept if history else None,
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
        size = await measure_history_size(state_dsn, kept) if history and sizes else None
        return statements, times, alerts, size
    finally:
        await monitor.stop()
        await pools.close()
        await state.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(state_db)))


async def monitor_scenario(dsn: str, *, roles: int, backends: int, cycles: int, prefix: str) -> MonitorResult:
    async with crowd(dsn, roles=roles, backends=backends, prefix=prefix):
        statements, times, alerts, size = await measure_monitor(dsn, cycles=cycles)
    return MonitorResult(backends, roles, statements, statistics.median(times), max(times), alerts, size)


def mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


def history_size_text(size: HistorySize) -> str:
    return (
        f"{size.roles_per_row} roles a row; a day: {size.day_rows} rows, {mib(size.day_bytes)}; "
        f"{HISTORY_DAYS} days thinned: {size.kept_rows} rows, {mib(size.kept_bytes)} "
        f"(thinned in {size.thin_seconds:.1f} s)"
    )


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
        if (size := result.history) is not None:
            print(f"history: {history_size_text(size)}")

    if args.dsn:
        asyncio.run(run(args.dsn))
    else:
        with private_cluster(args.backends + 60) as dsn:
            asyncio.run(run(dsn))


if __name__ == "__main__":
    main()
