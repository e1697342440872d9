"""When the server is in trouble: every slot taken, a burst of commands, a frozen target, a hung leader.

Each server that is filled or frozen here is a throwaway cluster of the test's own (the same major
version as the test server); the shared server only holds the bot's state.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from bot.budget import Budget
from bot.core.monitor import leader_lease
from tests.conftest import PgWorld
from tests.e2e.conftest import (
    APPROVALS,
    APPROVER,
    REQUESTER,
    BotUnderTest,
    alive,
    eventually,
    message_text,
    open_request,
)
from tests.e2e.test_processes import _free_port, bot_env
from tests.matrix.servers import Cluster
from tests.support.crowd import BOT, FILLER, Crowd, dsn_as, own_server
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import SIGNING_SECRET
from tests.support.tcp_proxy import TcpProxy

ALERTS = "C0ALERTS"


@pytest.fixture
def server() -> Iterator[Cluster]:
    with own_server(max_connections=20) as cluster:
        yield cluster


@pytest.fixture
def crowd(server: Cluster) -> Iterator[Crowd]:
    people = Crowd(dsn_as(server, FILLER))
    yield people
    people.close()


def _bot_settings(server: Cluster, **more: Any) -> dict[str, Any]:
    return {
        "database_url": dsn_as(server, BOT),
        "requesters": REQUESTER,
        "approvers": APPROVER,
        "approval_channel": APPROVALS,
        "alert_channel": ALERTS,
        **more,
    }


async def _lifeline_up(bot: BotUnderTest, name: str = "default") -> None:
    await eventually(lambda: bot.server.runtime.targets.lifeline(name).connected, timeout=10)


async def test_a_bot_running_when_the_server_fills_keeps_answering_and_acting(
    server: Cluster, crowd: Crowd, fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    bot: BotUnderTest = await start_approval_bot(**_bot_settings(server))
    await _lifeline_up(bot)
    assert crowd.fill() > 5
    crowd.refill()  # every slot that frees is taken again at once

    status = message_text(await bot.ask("status", user_id=APPROVER))
    assert "CRITICAL" in status and "unreachable" not in status and "full" not in status.split("\n")[0], status
    listed = message_text(await bot.ask(f"list {FILLER}"))
    assert f"{FILLER}:" in listed and "connections" in listed, listed
    victim = crowd.pids()[0]
    _, message = await open_request(bot, f"kill {victim}")
    await bot.click(message, "Approve", APPROVER)
    await eventually(lambda: _gone(server, victim), timeout=10)


async def test_a_bot_started_into_a_full_server_says_full_and_gets_in_when_a_slot_frees(
    server: Cluster, crowd: Crowd, fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    crowd.fill()
    bot: BotUnderTest = await start_approval_bot(**_bot_settings(server))
    answer = message_text(await bot.ask("status", user_id=APPROVER, timeout=3))
    assert "target default is full" in answer and "unreachable" not in answer, answer
    assert "It keeps trying" in answer

    # The server-full alert, raised by the bot itself (it cannot take a snapshot).
    assert await bot.server.runtime.monitor.run_cycle()
    posted = await bot.slack.wait_for(lambda: bot.slack.channel_messages(ALERTS))
    assert "default is full: new connections are refused" in message_text(posted[0])

    crowd.free(1)  # one slot: the bot takes it, and keeps it
    await _lifeline_up(bot)
    status = message_text(await bot.ask("status", user_id=APPROVER))
    assert "usable connection slots in use" in status, status
    crowd.fill()  # full again: the bot keeps its slot
    status = message_text(await bot.ask("status", user_id=APPROVER))
    assert "usable connection slots in use" in status, status


@pytest.mark.pg(min=16)
async def test_with_reserved_connections_a_bot_started_into_a_full_server_just_works(
    fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    with own_server(max_connections=20, reserved_connections="4") as server:
        crowd = Crowd(dsn_as(server, FILLER))
        try:
            crowd.fill()
            bot: BotUnderTest = await start_approval_bot(**_bot_settings(server))
            status = message_text(await bot.ask("status", user_id=APPROVER, timeout=5))
            assert "usable connection slots in use" in status, status
            victim = crowd.pids()[0]
            _, message = await open_request(bot, f"kill {victim}")
            await bot.click(message, "Approve", APPROVER)
            await eventually(lambda: _gone(server, victim), timeout=10)
        finally:
            crowd.close()
            await bot.server.stop()


async def test_a_burst_of_commands_gets_real_answers_within_the_roles_limit(
    world: PgWorld, fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    limit = Budget(targets=1, pool=4, state_pool=4).connection_limit
    role = world.role("burst_bot", limit=limit)
    world.admin.execute(f'GRANT pg_monitor TO "{role}"')
    victim = world.role("burst_victim", limit=None)
    world.connect(victim)
    # What is tested is that every command gets a real answer through the pool and the lifeline,
    # never an extra probe: how fast is the benchmark's business. A budget that leaves room for a
    # loaded machine (CI runs the matrix beside other work) keeps a slow turn from reading "busy".
    bot: BotUnderTest = await start_approval_bot(database_url=world.dsn_for(role), command_timeout=10)
    await _lifeline_up(bot)

    answers = await asyncio.gather(*(bot.ask(f"list {victim}", timeout=30) for _ in range(200)))
    texts = [message_text(a) for a in answers]
    assert all(f"{victim}: 1 connection" in t for t in texts), [t for t in texts if victim not in t][:3]
    backends = world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)).fetchone()
    assert backends is not None and backends[0] <= 4 + 1  # the pool and the lifeline, never a probe more


async def test_a_frozen_target_never_delays_the_others_alerts(
    world: PgWorld, fresh_state_dsn: str, start_approval_bot: Any, server: Cluster
) -> None:
    proxy = TcpProxy("127.0.0.1", server.port)
    port = await proxy.start()
    try:
        frozen = dsn_as(server, BOT, host="127.0.0.1", port=str(port))
        bot: BotUnderTest = await start_approval_bot(
            targets=json.dumps({"frozen": frozen}), alert_channel=ALERTS, approval_channel=APPROVALS
        )
        await _lifeline_up(bot, "frozen")
        full = world.role("healthy_full", limit=1)
        world.connect(full)
        proxy.frozen = True  # the other server hangs: every answer from it swallowed
        cycle = asyncio.create_task(bot.server.runtime.monitor.run_cycle())
        await bot.slack.wait_for(
            lambda: [m for m in bot.slack.channel_messages(ALERTS) if full in message_text(m)], timeout=5
        )
        assert not cycle.done()  # the healthy server's alert went out while the frozen one was still asked
        await cycle
    finally:
        proxy.restore()
        await proxy.close()


async def test_the_lifeline_comes_back_at_once_when_its_connection_is_killed(
    world: PgWorld, fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    bot: BotUnderTest = await start_approval_bot()
    await _lifeline_up(bot)
    lifeline = bot.server.runtime.targets.lifeline("default")

    # Which backend is the lifeline: the one that answers for the bot while nothing else runs.
    async def lifeline_pid(conn: Any) -> int:
        cur = await conn.execute("SELECT pg_catalog.pg_backend_pid() AS pid")
        row = await cur.fetchone()
        return int(row["pid"])

    pid = await bot.server.runtime.targets.run("default", lifeline_pid)
    world.admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await eventually(lambda: alive(world, [pid]) == set())
    answer = message_text(await bot.ask("status"))
    assert "usable connection slots in use" in answer, answer
    await eventually(lambda: lifeline.connected, timeout=5)


async def test_with_its_lifeline_refused_the_bot_answers_on_the_connection_its_pool_holds(
    world: PgWorld, fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    role = world.role("pooled_bot", limit=None)
    world.admin.execute(f'GRANT pg_monitor TO "{role}"')
    bot: BotUnderTest = await start_approval_bot(database_url=world.dsn_for(role))
    await _lifeline_up(bot)
    targets = bot.server.runtime.targets

    async def backend(conn: Any) -> int:
        cur = await conn.execute("SELECT pg_catalog.pg_backend_pid() AS pid, pg_catalog.pg_sleep(0.3)")
        row = await cur.fetchone()
        return int(row["pid"])

    both = set(await asyncio.gather(backend_on(targets, backend), backend_on(targets, backend)))
    assert len(both) == 2  # the lifeline, and a connection of the pool's
    lifeline_pid = await backend_on(targets, backend)  # alone: on the lifeline
    world.admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 1')  # the pool's one: no room for another
    world.admin.execute("SELECT pg_terminate_backend(%s)", (lifeline_pid,))
    await eventually(lambda: alive(world, [lifeline_pid]) == set())

    status = message_text(await bot.ask("status", user_id=APPROVER))
    assert "usable connection slots in use" in status, status  # a real answer, on the pooled connection
    lifeline = targets.lifeline("default")
    assert not lifeline.connected and lifeline.full == "role"


async def backend_on(targets: Any, work: Any) -> int:
    return int(await targets.run("default", work))


async def test_a_snapshot_slower_than_the_leaders_lease_still_counts(
    server: Cluster, fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute("CREATE ROLE pgct_slow LOGIN CONNECTION LIMIT 1")
    held = psycopg.connect(dsn_as(server, "pgct_slow"))
    try:
        bot: BotUnderTest = await start_approval_bot(**_bot_settings(server, command_timeout=5))
        await _lifeline_up(bot)
        monitor = bot.server.runtime.monitor
        with psycopg.connect(server.dsn) as locker:  # the server is slow to answer: its catalog locked
            locker.execute("LOCK TABLE pg_catalog.pg_authid IN ACCESS EXCLUSIVE MODE")
            cycle = asyncio.create_task(monitor.run_cycle())
            await eventually(lambda: _waiting_for_a_lock(locker, BOT))  # (new logins wait for the lock too)
            # Held until the lease the cycle started with has run out (within the snapshot's budget).
            expired = _lease_expiry(fresh_state_dsn)
            await eventually(lambda: _past(fresh_state_dsn, expired), timeout=leader_lease(0) * 3)
            locker.rollback()
        assert await cycle
        assert [m for m in bot.slack.channel_messages(ALERTS) if "pgct_slow" in message_text(m)]
    finally:
        held.close()


def _lease_expiry(state_dsn: str) -> Any:
    with psycopg.connect(state_dsn) as conn:
        row = conn.execute("SELECT expires_at FROM pgconn.monitor_leader").fetchone()
    assert row is not None
    return row[0]


def _past(state_dsn: str, moment: Any) -> bool:
    with psycopg.connect(state_dsn) as conn:
        row = conn.execute("SELECT now() > %s + interval '0.5 seconds'", (moment,)).fetchone()
    return bool(row and row[0])


def _waiting_for_a_lock(conn: psycopg.Connection[Any], role: str) -> bool:
    conn.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")  # read afresh inside the transaction
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock'", (role,)
    ).fetchone()
    return row is not None and row[0] > 0


async def test_a_hung_leader_is_replaced_and_never_posts_twice(
    world: PgWorld, fresh_state_dsn: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    ports = [_free_port(), _free_port()]
    env = bot_env(
        PGCONN_DATABASE_URL=world.dsn,
        PGCONN_STATE_URL=fresh_state_dsn,
        PGCONN_MONITOR_INTERVAL="2",
        PGCONN_ALERT_CHANNEL=ALERTS,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake_slack.api_url,
    )
    first = world.role("first_problem", limit=1)
    world.connect(first)
    logs = [tmp_path / f"replica{i}.log" for i in range(2)]
    replicas = [_replica({**env, "PORT": str(port)}, log) for port, log in zip(ports, logs, strict=True)]
    try:
        async with aiohttp.ClientSession() as session:
            for port, process in zip(ports, replicas, strict=True):
                await _healthy(session, port, process)
        about_first = lambda: [m for m in fake_slack.channel_messages(ALERTS) if first in message_text(m)]  # noqa: E731
        await fake_slack.wait_for(about_first, timeout=15)
        leader_pid = _leader_pid(fresh_state_dsn)
        leader = next(p for p in replicas if p.pid == leader_pid)
        os.kill(leader.pid, signal.SIGSTOP)  # hung: alive, holding everything, doing nothing
        try:
            second = world.role("second_problem", limit=1)
            world.connect(second)
            about_second = lambda: [m for m in fake_slack.channel_messages(ALERTS) if second in message_text(m)]  # noqa: E731
            await fake_slack.wait_for(about_second, timeout=15)  # the other replica took over
            assert _leader_pid(fresh_state_dsn) != leader_pid
        finally:
            os.kill(leader.pid, signal.SIGCONT)
        # Woken, the old leader finds its lease taken (and says so) instead of posting anything.
        stopped_log = logs[replicas.index(leader)]
        await eventually(lambda: "no longer runs the monitor" in stopped_log.read_text(), timeout=15)
        third = world.role("third_problem", limit=1)
        world.connect(third)
        await fake_slack.wait_for(
            lambda: [m for m in fake_slack.channel_messages(ALERTS) if third in message_text(m)], timeout=15
        )
        for role in (first, second, third):
            posts = [c for c in fake_slack.api_calls("chat.postMessage", ALERTS) if role in str(c.payload)]
            assert len(posts) == 1, (role, len(posts))
    finally:
        for process in replicas:
            process.send_signal(signal.SIGTERM)
        for process in replicas:
            process.wait(timeout=20)


def _replica(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A real `pgconn-bot serve`, its log in ``log``."""
    with log.open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=err)


async def _healthy(session: aiohttp.ClientSession, port: int, process: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(20):
        while True:
            assert process.poll() is None, "serve exited"
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


def _leader_pid(state_dsn: str) -> int:
    with psycopg.connect(state_dsn) as conn:
        row = conn.execute("SELECT holder_name FROM pgconn.monitor_leader WHERE expires_at > now()").fetchone()
    assert row is not None
    return int(str(row[0]).rsplit(":", 1)[1])


def _gone(server: Cluster, pid: int) -> bool:
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,)
