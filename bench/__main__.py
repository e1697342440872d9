"""The benchmark: ``python -m bench`` (full, on a throwaway cluster of its own) or ``--smoke``.

Everything runs on this machine over loopback: the bot as a real ``pgconn-bot serve`` process, a
fake Slack recording its answers, the framework floor (``bench/floor_app.py``), ``psql``, and a raw
query on a warm connection. Results are printed as a table with each goal and whether it is met.

    python -m bench                      # the full run (a few minutes)
    python -m bench --smoke --dsn …      # a few iterations of everything: the test suite runs this
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
from psycopg import sql

from bench import emergency
from bench.cluster import crowd, free_port, private_cluster
from bench.harness import (
    APPROVALS,
    APPROVER,
    REQUESTER,
    SECRET,
    TOKEN,
    Driver,
    Process,
    Table,
    kill_and_approve,
    ms,
    pct,
    rss_mib,
    timed,
)
from bench.monitor_bench import HISTORY_DAYS, mib, monitor_scenario
from tests.support.fake_slack import FakeSlack


@dataclass(frozen=True)
class Plan:
    samples: int
    crowd_roles: int
    crowd_backends: int
    bursts: tuple[int, ...]
    approvals: int
    monitor: tuple[tuple[int, int], ...]  # (roles, backends)
    prefix: str


FULL = Plan(200, 200, 1000, (40, 200), 30, ((20, 100), (100, 500), (200, 1000)), "pgbench_")
SMOKE = Plan(5, 5, 30, (5, 10), 2, ((5, 30),), "pgct_bench_")


LIST_QUERY = """
SELECT pid, datname, application_name, client_addr, state, backend_start, state_change
  FROM pg_stat_activity WHERE usename = '{role}' ORDER BY backend_start
"""


@contextlib.asynccontextmanager
async def state_database(dsn: str, prefix: str) -> AsyncIterator[str]:
    name = f"{prefix}state_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def run(dsn: str, plan: Plan) -> Table:
    table = Table()
    slack = await FakeSlack().start()
    try:
        async with state_database(dsn, plan.prefix) as state_dsn:
            await _run(dsn, state_dsn, plan, slack, table)
    finally:
        await slack.stop()
    return table


async def _run(dsn: str, state_dsn: str, plan: Plan, slack: FakeSlack, table: Table) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCONN_", "SLACK_"))}
    bot_env = {
        **base_env,
        "PORT": str(free_port()),
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "PGCONN_DATABASE_URL": dsn,
        "PGCONN_STATE_URL": state_dsn,
        "PGCONN_MONITOR_INTERVAL": "0",
        "PGCONN_REQUESTERS": REQUESTER,
        "PGCONN_APPROVERS": APPROVER,
        "PGCONN_APPROVAL_CHANNEL": APPROVALS,
        "PGCONN_LOG_LEVEL": "WARNING",
        "PGCONN_POOL_MAX_SIZE": "8",
    }
    floor_port = free_port()
    bot = Process([sys.executable, "-m", "bot", "serve"], bot_env, int(bot_env["PORT"]))
    floor = Process(
        [sys.executable, "-m", "bench.floor_app", str(floor_port), dsn, SECRET, slack.api_url], base_env, floor_port
    )
    async with (
        bot,
        floor,
        crowd(dsn, roles=1, backends=5, prefix=plan.prefix + "list_", busy=False) as listed,
        aiohttp.ClientSession() as session,
    ):
        assert bot.proc is not None
        driver = Driver(session, slack)
        role = listed.roles[0]
        table.add("bot RSS, idle", f"{rss_mib(bot.proc.pid):.0f} MiB", "< 100 MiB", rss_mib(bot.proc.pid) < 100)

        # --- list <role>: the bot, the floor, psql, the raw query ------------------------------
        for warmup in (bot.url, floor.url):
            await driver.command(warmup, f"list {role}")
        bot_times = await timed(plan.samples, lambda: driver.command(bot.url, f"list {role}"))
        floor_times = await timed(plan.samples, lambda: driver.command(floor.url, f"list {role}"))
        psql = shutil.which("psql")
        psql_times: list[float] = []
        if psql:
            query = LIST_QUERY.format(role=role)
            psql_times = await timed(
                max(3, plan.samples // 4),
                lambda: asyncio.to_thread(subprocess.run, [psql, dsn, "-Atc", query], capture_output=True, check=True),
            )
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as warm:
            raw_times = await timed(plan.samples, lambda: warm.execute(LIST_QUERY.format(role=role)))
        bot_p50 = statistics.median(bot_times)
        for label, times in (
            ("list: bot, signed request → answer", bot_times),
            ("list: framework floor (bench/floor_app.py)", floor_times),
            ("list: psql -c per question", psql_times),
            ("list: raw query, warm connection", raw_times),
        ):
            if times:
                table.add(f"{label} p50/p95/p99", " / ".join(ms(pct(times, q)) for q in (0.5, 0.95, 0.99)))
        if psql_times:
            ratio = bot_p50 / statistics.median(psql_times)
            table.add("list: bot p50 ÷ psql p50", f"{ratio:.2f}", "≤ 0.25", ratio <= 0.25)
        ratio = bot_p50 / statistics.median(floor_times)
        table.add("list: bot p50 ÷ floor p50", f"{ratio:.2f}", "≤ 2", ratio <= 2)

        # --- bursts --------------------------------------------------------------------------
        for burst in plan.bursts:
            results = await asyncio.gather(*(driver.command(bot.url, f"list {role}") for _ in range(burst)))
            slowest_ack = max(r[0] for r in results) * 1000
            slowest = max(r[1] for r in results) * 1000
            table.add(
                f"{burst} commands at once: slowest ack / slowest answer",
                f"{ms(slowest_ack)} / {ms(slowest)}",
                "ack < 1 s, all answered",
                slowest_ack < 1000 and len(results) == burst,
            )

        # --- approve → backend gone -------------------------------------------------------------
        gone_times = await _approvals(driver, bot.url, dsn, plan)
        if gone_times:
            p50 = statistics.median(gone_times)
            table.add("approve click → backend gone, p50", ms(p50), "< 250 ms", p50 < 250)

        # --- status and limits with a crowd ----------------------------------------------------
        async with crowd(dsn, roles=plan.crowd_roles, backends=plan.crowd_backends, prefix=plan.prefix + "crowd_"):
            for text in ("status", "limits"):
                times, within = [], True
                for _ in range(max(3, plan.samples // 10)):
                    _, answered, answer = await driver.command(bot.url, text)
                    times.append(answered * 1000)
                    within &= _within_block_kit(answer)
                table.add(
                    f"{text} with {plan.crowd_backends} client backends, p50",
                    ms(statistics.median(times)),
                    "inside Block Kit limits",
                    within,
                )
        rss = rss_mib(bot.proc.pid)
        table.add("bot RSS after the load", f"{rss:.0f} MiB", "< 100 MiB", rss < 100)

    # --- the monitor -------------------------------------------------------------------------------
    for roles, backends in plan.monitor:
        result = await monitor_scenario(dsn, roles=roles, backends=backends, cycles=5, prefix=plan.prefix + "mon_")
        one = all(n == 1 for n in result.statements_per_cycle)
        goal_ms = 50 if backends >= 1000 else None
        table.add(
            f"monitor cycle with history, {backends} backends over {roles} roles: queries / median / worst",
            f"{max(result.statements_per_cycle)} / {ms(result.median_ms)} / {ms(result.worst_ms)}",
            "1 query" + (f", < {goal_ms} ms" if goal_ms else ""),
            one and (goal_ms is None or result.median_ms < goal_ms),
        )
        if (size := result.history) is not None:
            bounded = size.kept_bytes < 2.5 * size.day_bytes
            table.add(
                f"history size, {size.roles_per_row} roles a row (1 row a minute): a day / "
                f"{HISTORY_DAYS} days thinned (thinning it all at once)",
                f"{size.day_rows} rows, {mib(size.day_bytes)} / {size.kept_rows} rows, {mib(size.kept_bytes)} "
                f"({size.thin_seconds:.1f} s)",
                f"{HISTORY_DAYS} days < 2.5 × a day",
                bounded,
            )


async def _approvals(driver: Driver, url: str, dsn: str, plan: Plan) -> list[float]:
    times: list[float] = []
    async with crowd(dsn, roles=1, backends=plan.approvals, prefix=plan.prefix + "kill_", busy=False) as victims:
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            for conn in victims.connections:
                gone = await kill_and_approve(driver, url, admin, conn.info.backend_pid)
                if gone is not None:
                    times.append(gone)
        finally:
            await admin.close()
    return times


def _within_block_kit(answer: dict[str, Any]) -> bool:
    blocks = answer.get("blocks") or []
    return len(blocks) <= 50 and all(len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description="pgconn-bot benchmark")
    parser.add_argument("--dsn", help="use this server instead of a throwaway cluster of the benchmark's own")
    parser.add_argument("--smoke", action="store_true", help="a few iterations of everything (for the test suite)")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    started = time.perf_counter()
    if args.dsn:
        table = asyncio.run(run(args.dsn, plan))
    else:
        with private_cluster(plan.crowd_backends + plan.approvals + 300) as dsn:
            table = asyncio.run(run(dsn, plan))
    # The emergencies need servers they may fill, freeze and restart: always throwaway clusters.
    asyncio.run(emergency.run(table, smoke=args.smoke))
    print(f"pgconn-bot benchmark ({'smoke' if args.smoke else 'full'}), {time.perf_counter() - started:.0f} s")
    table.print()


if __name__ == "__main__":
    main()
