"""Emergencies, measured: a full server, a burst, many targets, a frozen target, a hung leader, a long history.

Every server here is a throwaway cluster of the benchmark's own (tests/matrix/servers.py); the bot
runs as the least-privilege role ``setup-sql`` prints, as a real ``pgconn-bot serve`` process
(or, where one cycle's statements are counted, as the monitor in-process).

    python -m bench.emergency            # just these rows (also part of ``python -m bench``)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.cluster import raise_file_limit
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
    rss_mib,
)
from bench.monitor_bench import CountingPools
from bot.budget import Budget
from bot.core.monitor import Monitor, MonitorThresholds
from bot.core.ports import NoAnnouncer
from bot.db.alerts import AlertStore
from bot.db.monitoring import ServerWatch
from bot.db.sql import state as bot_sql
from bot.db.state import StateStore
from bot.setup_sql import setup_sql
from tests.matrix.servers import Cluster, free_port, throwaway_cluster
from tests.support.crowd import Crowd
from tests.support.fake_slack import FakeSlack
from tests.support.tcp_proxy import TcpProxy

BOT, FILLER, STATE_DB = "pgbench_bot", "pgbench_filler", "pgbench_state"
ALERTS = "C0BALERT"
NOT_AN_ANSWER = ("is full", "unreachable", "not answering", "went wrong", "busy")


@contextlib.contextmanager
def server(
    major: int, max_connections: int, *, targets: int = 1, replicas: int = 1, **settings: str
) -> Iterator[Cluster]:
    """A cluster with the bot's role (exactly as setup-sql makes it), a role for the crowd, and a
    database for the bot's state."""
    with throwaway_cluster(major, max_connections=max_connections, settings=settings) as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            budget = Budget(targets=targets, pool=4, state_pool=4, replicas=replicas)
            admin.execute(setup_sql(BOT, budget=budget).encode())
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(FILLER)))
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, (STATE_DB, BOT))))
        yield cluster


def as_role(cluster: Cluster, role: str, database: str | None = None) -> str:
    params = conninfo_to_dict(cluster.dsn)
    params["user"] = role
    if database:
        params["dbname"] = database
    return make_conninfo(**params)


def bot_env(slack: FakeSlack, target: str, state: str, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCONN_", "SLACK_"))}
    env.update(
        PORT=str(free_port()),
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.api_url,
        PGCONN_DATABASE_URL=target,
        PGCONN_STATE_URL=state,
        PGCONN_MONITOR_INTERVAL="0",
        PGCONN_REQUESTERS=REQUESTER,
        PGCONN_APPROVERS=APPROVER,
        PGCONN_APPROVAL_CHANNEL=APPROVALS,
        PGCONN_LOG_LEVEL="WARNING",
    )
    env.update(more)
    return env


@contextlib.asynccontextmanager
async def bot(env: dict[str, str], *, healthy: bool = True) -> AsyncIterator[Process]:
    async with Process([sys.executable, "-m", "bot", "serve"], env, int(env["PORT"]), healthy=healthy) as process:
        yield process


def real(answer: dict[str, Any]) -> bool:
    text = json.dumps(answer)
    return not any(word in text for word in NOT_AN_ANSWER)


async def run(table: Table, *, smoke: bool) -> None:
    slack = await FakeSlack().start()
    try:
        async with aiohttp.ClientSession() as session:
            driver = Driver(session, slack)
            for scenario in (
                full_while_running,
                full_restart_reserved,
                full_restart_no_reservation,
                burst_at_the_roles_limit,
                many_targets,
                frozen_target,
                hung_leader,
                long_history,
            ):
                started = time.perf_counter()
                await scenario(driver, table, smoke)
                print(f"  {scenario.__name__}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    finally:
        await slack.stop()


# --- a full server -----------------------------------------------------------------------------


async def full_while_running(driver: Driver, table: Table, smoke: bool) -> None:
    """Full, the bot started before it filled: every answer real, approve → gone fast."""
    with server(15, 30) as cluster:
        state = as_role(cluster, BOT, STATE_DB)
        async with bot(bot_env(driver.slack, as_role(cluster, BOT), state)) as process:
            await driver.command(process.url, "status")  # the lifeline is in
            crowd = Crowd(as_role(cluster, FILLER))
            try:
                crowd.fill()
                crowd.refill()  # every slot that frees is taken again at once
                answered = asked = 0
                gone: list[float] = []
                admin = await psycopg.AsyncConnection.connect(cluster.dsn, autocommit=True)
                try:
                    for _ in range(3 if smoke else 10):
                        for text in ("status", f"list {FILLER}"):
                            asked += 1
                            answered += real((await driver.command(process.url, text, user=APPROVER))[2])
                        asked += 1
                        victim = await _alive(admin, crowd)
                        took = await kill_and_approve(driver, process.url, admin, victim)
                        if took is not None:
                            answered += 1
                            gone.append(took)
                finally:
                    await admin.close()
            finally:
                crowd.close()
    table.add(
        "server full (max_connections 30, slots refilled), bot running before: status, list, kill+approve",
        f"{answered}/{asked} answered",
        "100% answered",
        answered == asked,
    )
    p50 = statistics.median(gone) if gone else float("inf")
    table.add("… approve → backend gone, p50", ms(p50), "< 250 ms", p50 < 250)


async def _alive(admin: psycopg.AsyncConnection[Any], crowd: Crowd) -> int:
    """A crowd session that is there now (the crowd refills in a thread of its own)."""
    cur = await admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE usename = %s AND pid = ANY(%s) ORDER BY backend_start DESC LIMIT 1",
        (FILLER, crowd.pids()),
    )
    row = await cur.fetchone()
    assert row is not None, "the crowd has no session left"
    return int(row[0])


async def full_restart_reserved(driver: Driver, table: Table, smoke: bool) -> None:
    """Full, the bot (re)started into it, PostgreSQL 16+ with setup-sql's grants."""
    with server(16, 30, reserved_connections="6") as cluster:
        crowd = Crowd(as_role(cluster, FILLER))
        try:
            crowd.fill()
            state = as_role(cluster, BOT, STATE_DB)
            async with bot(bot_env(driver.slack, as_role(cluster, BOT), state)) as process:
                answered = asked = 0
                admin = await psycopg.AsyncConnection.connect(cluster.dsn, autocommit=True)
                try:
                    for victim in crowd.pids()[: 2 if smoke else 5]:
                        for text in ("status", f"list {FILLER}"):
                            asked += 1
                            answered += real((await driver.command(process.url, text, user=APPROVER))[2])
                        asked += 1
                        answered += await kill_and_approve(driver, process.url, admin, victim) is not None
                finally:
                    await admin.close()
        finally:
            crowd.close()
    table.add(
        "… the bot started into the full server, PostgreSQL 16 with setup-sql's grants (reserved_connections 6)",
        f"{answered}/{asked} answered",
        "100% answered",
        answered == asked,
    )


async def full_restart_no_reservation(driver: Driver, table: Table, smoke: bool) -> None:
    """Full, PostgreSQL 15, the bot started into it (state elsewhere): says "full", then one slot frees."""
    with server(15, 30) as cluster, server(15, 20) as elsewhere:
        crowd = Crowd(as_role(cluster, FILLER))
        try:
            crowd.fill()
            env = bot_env(driver.slack, as_role(cluster, BOT), as_role(elsewhere, BOT, STATE_DB))
            async with bot(env) as process:
                _, said, answer = await driver.command(process.url, "status", user=APPROVER)
                full = "is full" in json.dumps(answer)
                crowd.free(1)
                freed = time.perf_counter()
                async with asyncio.timeout(30):
                    while not real((await driver.command(process.url, "status", user=APPROVER))[2]):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)  # asking again is the measurement itself
                working = time.perf_counter() - freed
        finally:
            crowd.close()
    table.add(
        "… PostgreSQL 15, the bot started into the full server: first answer",
        f"{'full' if full else 'NOT full'} in {ms(said * 1000)}",
        "'full' within 3 s",
        full and said < 3,
    )
    table.add("… then one slot freed: working again after", ms(working * 1000), "< 2 s", working < 2)


# --- a burst -----------------------------------------------------------------------------------


async def burst_at_the_roles_limit(driver: Driver, table: Table, smoke: bool) -> None:
    """200 commands at once, the bot's role at setup-sql's CONNECTION LIMIT."""
    burst = 20 if smoke else 200
    with server(15, 300) as cluster:
        crowd = Crowd(as_role(cluster, FILLER))
        try:
            crowd.connections.append(psycopg.connect(as_role(cluster, FILLER), autocommit=True))
            env = bot_env(driver.slack, as_role(cluster, BOT), as_role(cluster, BOT, STATE_DB))
            async with bot(env) as process:
                await driver.command(process.url, "status")
                results = await asyncio.gather(
                    *(driver.command(process.url, f"list {FILLER}", user=APPROVER) for _ in range(burst))
                )
                good = sum(real(answer) for _, _, answer in results)
                slowest_ack = max(ack for ack, _, _ in results)
                if not smoke:
                    await asyncio.sleep(30)  # the goal is about what stays open afterwards
                with psycopg.connect(cluster.dsn, autocommit=True) as admin:
                    row = admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = 'postgres'", (BOT,)
                    ).fetchone()
                backends = int(row[0]) if row else -1
        finally:
            crowd.close()
    limit = Budget(targets=1, pool=4, state_pool=4).connection_limit
    table.add(
        f"{burst} commands at once, the bot's role at setup-sql's CONNECTION LIMIT {limit}: real answers / slowest ack",
        f"{good}/{burst} / {ms(slowest_ack * 1000)}",
        "100%, ack < 1 s",
        good == burst and slowest_ack < 1,
    )
    table.add(
        f"… the bot's backends on the target {'right after' if smoke else '30 s later'}",
        str(backends),
        "≤ pool + 2 (6)",
        0 <= backends <= 6,
    )


# --- many targets, one frozen --------------------------------------------------------------------


async def many_targets(driver: Driver, table: Table, smoke: bool) -> None:
    """100 targets that are databases of one server: one snapshot per server per cycle."""
    count = 10 if smoke else 100
    raise_file_limit(4 * count + 200)
    with server(15, 12 * count + 50, targets=count) as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            for i in range(count - 1):
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"pgbench_db{i}")))
        targets = {f"db{i}": as_role(cluster, BOT, f"pgbench_db{i}") for i in range(count - 1)}
        dsns = {"default": as_role(cluster, BOT), **targets}
        statements, times = await _monitor_cycles(dsns, as_role(cluster, BOT, STATE_DB), cycles=5)
        env = bot_env(
            driver.slack, dsns["default"], as_role(cluster, BOT, STATE_DB), PGCONN_TARGETS=json.dumps(targets)
        )
        async with bot(env) as process:
            assert process.proc is not None
            await asyncio.sleep(2 if smoke else 5)  # every lifeline connected
            rss = rss_mib(process.proc.pid)
    table.add(
        f"{count} targets that are databases of one server: snapshots per cycle / cycle median",
        f"{max(statements)} / {ms(statistics.median(times))}",
        "1 per server, < 50 ms",
        max(statements) == 1 and statistics.median(times) < 50,
    )
    table.add(f"… bot RSS with {count} targets", f"{rss:.0f} MiB", "< 120 MiB", rss < 120)


async def _monitor_cycles(dsns: dict[str, str], state_dsn: str, *, cycles: int) -> tuple[list[int], list[float]]:
    pools = CountingPools(dsns, command_timeout=5.0)
    state = StateStore(state_dsn)
    await pools.open()
    await state.open()
    await state.migrate()
    monitor = Monitor(
        servers=ServerWatch(pools),
        store=AlertStore(state),
        announcer=NoAnnouncer(),
        thresholds=MonitorThresholds(),
        interval=60,
        channel=None,
    )
    try:
        async with asyncio.timeout(60):
            while not all(pools.lifeline(name).connected for name in dsns):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        statements, times = [], []
        for _ in range(cycles):
            before = pools.statements[0]
            started = time.perf_counter()
            await monitor.run_cycle()
            times.append((time.perf_counter() - started) * 1000)
            statements.append(pools.statements[0] - before)
        return statements, times
    finally:
        await monitor.stop()
        await pools.close()
        await state.close()


class _Clock:
    """An announcer that only notes when each alert would have been posted."""

    can_post = True

    def __init__(self) -> None:
        self.posted: dict[str, float] = {}

    async def post_alert(self, alert: Any, channel: str) -> str:
        self.posted.setdefault(alert.target, time.perf_counter())
        return f"{time.time():.6f}"

    async def update_alert(self, alert: Any) -> None:
        return None

    async def reply_resolved(self, alert: Any) -> None:
        return None

    async def delete_message(self, channel: str, ts: str) -> None:
        return None


async def frozen_target(driver: Driver, table: Table, smoke: bool) -> None:
    """19 targets on one server and one on another that freezes: the first ones' alerts do not wait."""
    with server(15, 300, targets=20) as cluster, server(15, 40) as other:
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            for i in range(18):
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"pgbench_db{i}")))
            admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 1").format(sql.Identifier(FILLER)))
        filler = psycopg.connect(as_role(cluster, FILLER), autocommit=True)  # at its limit: an alert
        proxy = TcpProxy("127.0.0.1", other.port)
        port = await proxy.start()
        try:
            dsns = {
                "default": as_role(cluster, BOT),
                **{f"db{i}": as_role(cluster, BOT, f"pgbench_db{i}") for i in range(18)},
            }
            frozen = conninfo_to_dict(as_role(other, BOT))
            dsns["frozen"] = make_conninfo(**{**frozen, "port": str(port)})
            delays = []
            for freeze in (False, True):
                proxy.frozen = freeze
                delays.append(await _first_alert_after(dsns, as_role(cluster, BOT, STATE_DB)))
        finally:
            proxy.restore()
            await proxy.close()
            filler.close()
    delay = (delays[1] - delays[0]) * 1000
    table.add(
        "one frozen target among 20: the others' alerts later by",
        ms(max(0.0, delay)),
        "< 100 ms",
        delay < 100,
    )


async def _first_alert_after(dsns: dict[str, str], state_dsn: str) -> float:
    """Seconds from a cycle's start to the healthy server's alert (a fresh state database each time)."""
    name = f"pgbench_state_{time.monotonic_ns()}"
    with psycopg.connect(make_conninfo(state_dsn, user="postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(BOT)))
    pools = CountingPools(dsns, command_timeout=2.0)
    state = StateStore(make_conninfo(state_dsn, dbname=name))
    clock = _Clock()
    await pools.open()
    await state.open()
    await state.migrate()
    monitor = Monitor(
        servers=ServerWatch(pools),
        store=AlertStore(state),
        announcer=clock,
        thresholds=MonitorThresholds(),
        interval=60,
        channel=ALERTS,
    )
    try:
        async with asyncio.timeout(30):
            while not pools.lifeline("default").connected:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        started = time.perf_counter()
        await monitor.run_cycle()
        return clock.posted["default"] - started
    finally:
        await monitor.stop()
        await pools.close()
        await state.close()
        with psycopg.connect(make_conninfo(state_dsn, user="postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- a hung leader --------------------------------------------------------------------------------


async def hung_leader(driver: Driver, table: Table, smoke: bool) -> None:
    """Two replicas, interval 5 s: SIGSTOP the leader; the other alerts; no duplicates after SIGCONT."""
    interval = "2" if smoke else "5"
    with server(15, 60, replicas=2) as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            for name in ("pgbench_first", "pgbench_second"):
                admin.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 1").format(sql.Identifier(name)))
        sessions = [psycopg.connect(as_role(cluster, "pgbench_first"), autocommit=True)]
        state = as_role(cluster, BOT, STATE_DB)
        more = {"PGCONN_MONITOR_INTERVAL": interval, "PGCONN_ALERT_CHANNEL": ALERTS}
        envs = [bot_env(driver.slack, as_role(cluster, BOT), state, **more) for _ in range(2)]
        try:
            async with bot(envs[0]) as one, bot(envs[1]) as two:
                await driver.slack.wait_for(lambda: _posts(driver.slack, "pgbench_first"), timeout=30)
                leader = next(p for p in (one, two) if p.proc is not None and p.proc.pid == _leader_pid(state))
                assert leader.proc is not None
                os.kill(leader.proc.pid, signal.SIGSTOP)
                try:
                    sessions.append(psycopg.connect(as_role(cluster, "pgbench_second"), autocommit=True))
                    started = time.perf_counter()
                    await driver.slack.wait_for(lambda: _posts(driver.slack, "pgbench_second"), timeout=60)
                    took = time.perf_counter() - started
                finally:
                    os.kill(leader.proc.pid, signal.SIGCONT)
                await asyncio.sleep(3 * float(interval))  # the woken leader's next cycles
                duplicates = sum(len(_posts(driver.slack, r)) - 1 for r in ("pgbench_first", "pgbench_second"))
        finally:
            for conn in sessions:
                conn.close()
    table.add(
        f"SIGSTOP the leader (interval {interval} s): another replica alerts after / duplicates after SIGCONT",
        f"{took:.1f} s / {duplicates}",
        "< 15 s / 0",
        took < 15 and duplicates == 0,
    )


def _posts(slack: FakeSlack, role: str) -> list[Any]:
    return [c for c in slack.api_calls("chat.postMessage", ALERTS) if role in str(c.payload)]


def _leader_pid(state_dsn: str) -> int:
    with psycopg.connect(state_dsn) as conn:
        row = conn.execute("SELECT holder_name FROM pgconn.monitor_leader WHERE expires_at > now()").fetchone()
    return int(str(row[0]).rsplit(":", 1)[1]) if row else -1


# --- a long history ----------------------------------------------------------------------------------

PERIODIC = {
    "unsynced messages": (bot_sql.UNSYNCED_MESSAGES, {"limit": 20}),
    "expire due requests": (bot_sql.EXPIRE_DUE, {}),
    "interrupted executions": (bot_sql.INTERRUPT_STALE, {"after": 600}),
    "half-posted requests": (bot_sql.WITHDRAW_STALE_POSTING, {"after": 300}),
    "claim an audit entry": (
        bot_sql.CLAIM_AUDIT_DELIVERY,
        {"lease": 30, "channel": "C0A", "park_retry": 3600, "replica": uuid.uuid4()},
    ),
    "next audit entry due": (bot_sql.NEXT_AUDIT_DUE, {"channel": "C0A", "park_retry": 3600, "replica": None}),
    "heartbeat": (bot_sql.HEARTBEAT, {"replica": uuid.uuid4(), "name": "bench"}),
    "leader lease": (bot_sql.HOLD_LEADERSHIP, {"me": uuid.uuid4(), "lease": 24, "name": "bench"}),
    "undeliverable audit": (bot_sql.UNDELIVERABLE_AUDIT, {"channel": "C0A"}),
    "close refusal windows": (bot_sql.CLOSE_REFUSAL_WINDOWS, {"window": 60}),
    "unsettled alerts": (bot_sql.UNSETTLED_ALERTS, {"targets": None}),
    "open alerts of a target": (bot_sql.OPEN_ALERTS_OF_TARGET, {"target": "default"}),
    "resolve unmonitored": (bot_sql.RESOLVE_UNMONITORED, {"targets": ["default"]}),
    "pending requests": (bot_sql.PENDING_REQUESTS, {"limit": 50}),
    "a requester's open requests": (bot_sql.OPEN_REQUESTS_OF, {"requester": "U0REQ"}),
}


async def long_history(driver: Driver, table: Table, smoke: bool) -> None:
    """Every statement that runs periodically, with 300k finished requests behind it."""
    rows = 3000 if smoke else 300_000
    with server(15, 30) as cluster:
        state_dsn = as_role(cluster, BOT, STATE_DB)
        store = StateStore(state_dsn)
        await store.open()
        await store.migrate()
        await store.close()
        with psycopg.connect(state_dsn, autocommit=True) as conn:
            _history(conn, rows)
            slowest = ("", 0.0)
            for label, (statement, params) in PERIODIC.items():
                times = []
                for _ in range(20):
                    with conn.transaction(force_rollback=True):  # the writes among them change nothing
                        started = time.perf_counter()
                        conn.execute(statement, params)  # type: ignore[arg-type]
                        times.append((time.perf_counter() - started) * 1000)
                median = statistics.median(times)
                if median > slowest[1]:
                    slowest = (label, median)
    table.add(
        f"state with {rows:,} finished requests: slowest periodic statement (median of 20)",
        f"{ms(slowest[1])} ({slowest[0]})",
        "< 5 ms",
        slowest[1] < 5,
    )


def _history(conn: psycopg.Connection[Any], rows: int) -> None:
    """``rows`` finished requests with their targets, approvals, audit entries and delivered outbox
    rows, some resolved alerts, and a few things still open."""
    conn.execute(
        """INSERT INTO pgconn.request (created_at, expires_at, requester, action, scope, target, command_text,
                                       required_approvals, status, decided_at, finished_at, channel, message_ts,
                                       shown_state)
           SELECT now() - make_interval(mins => i), now() - make_interval(mins => i) + interval '1 hour',
                  'U0REQ' || (i %% 50), 'terminate', 'pids', 'default', 'kill 1', 1,
                  (ARRAY['executed', 'denied', 'expired'])[1 + i %% 3], now() - make_interval(mins => i),
                  now() - make_interval(mins => i), 'C0APPROVE', i || '.000001',
                  (ARRAY['executed', 'denied', 'expired'])[1 + i %% 3] || ':1'
             FROM generate_series(1, %s) i""",
        (rows,),
    )
    conn.execute(
        """INSERT INTO pgconn.request_target (request_id, pid, backend_start, role_oid, role_name, observed_at)
           SELECT id, 1000 + id % 30000, created_at, 10, 'bob', created_at FROM pgconn.request"""
    )
    conn.execute("INSERT INTO pgconn.approval (request_id, approver) SELECT id, 'U0APP' FROM pgconn.request")
    conn.execute("UPDATE pgconn.request SET message_dirty = false")
    conn.execute(
        "INSERT INTO pgconn.audit (event, request_id, actor) SELECT 'executed', id, 'U0APP' FROM pgconn.request"
    )
    conn.execute(
        """INSERT INTO pgconn.audit_outbox (audit_id, channel, delivered_at, delivered_ts)
           SELECT id, 'C0A', at, id || '.1' FROM pgconn.audit"""
    )
    conn.execute(
        """INSERT INTO pgconn.alert (target, kind, subject, severity, summary, opened_at, resolved_at, reply_posted)
           SELECT 'default', 'role_limit', 'r' || i, 'warning', 'x', now() - make_interval(mins => i),
                  now() - make_interval(mins => i - 1), true
             FROM generate_series(1, %s) i""",
        (rows // 10,),
    )
    conn.execute(
        """INSERT INTO pgconn.request (expires_at, requester, action, scope, target, command_text,
                                       required_approvals, status)
           SELECT now() + interval '1 hour', 'U0REQ', 'terminate', 'pids', 'default', 'kill 1', 1, 'pending'
             FROM generate_series(1, 5)"""
    )
    conn.execute("ANALYZE")


def main() -> None:
    table = Table()
    asyncio.run(run(table, smoke="--smoke" in sys.argv))
    table.print()


if __name__ == "__main__":
    main()
