"""The monitor inside the bot: alerts posted once, resolved in thread, a button into the approval flow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from aiohttp import web

from tests.conftest import PgWorld
from tests.e2e.conftest import (
    BotUnderTest,
    Posted,
    eventually_true,
    message_text,
    posted_messages,
    wait_for_request_message,
)
from tests.support.fake_slack import FakeSlack

ALERTS, APPROVALS = "C0ALERTS", "C0APPROVE"
REQUESTER, APPROVER = "U0REQ", "U0APP"


@pytest.fixture
def start_monitored_bot(fresh_state_dsn: str, start_bot: Any) -> Callable[..., Any]:
    async def start(**overrides: Any) -> BotUnderTest:
        settings: dict[str, Any] = {
            "requesters": REQUESTER,
            "approvers": APPROVER,
            "approval_channel": APPROVALS,
            "alert_channel": ALERTS,
            "state_url": fresh_state_dsn,
            "monitor_interval": 0,  # cycles are driven by the test
            # Other sessions on the test server must not raise alerts of their own.
            "alert_utilization_warn": 0.98,
            "alert_utilization_crit": 0.99,
            "alert_idle_in_tx_seconds": 3600,
            "alert_long_query_seconds": 3600,
        }
        settings.update(overrides)
        return await start_bot(**settings)  # type: ignore[no-any-return]

    return start


def top_level(slack: FakeSlack) -> list[Posted]:
    return [m for m in posted_messages(slack, ALERTS) if "thread_ts" not in m.payload]


def replies(slack: FakeSlack, ts: str) -> list[Posted]:
    return [m for m in posted_messages(slack, ALERTS) if m.payload.get("thread_ts") == ts]


def about(slack: FakeSlack, word: str) -> list[Posted]:
    return [m for m in top_level(slack) if word in m.text]


async def cycle(bot: BotUnderTest) -> None:
    assert await bot.server.runtime.monitor.run_cycle()


async def test_role_at_its_limit_alerts_once_and_resolves_in_thread(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_monitored_bot()
    role = world.role("student", limit=3)
    conns = [world.connect(role, "DBeaver") for _ in range(3)]
    for _ in range(3):
        await cycle(bot)
    (alert,) = about(fake_slack, role)
    assert f"{role} is at its connection limit on default: 3/3" in alert.text
    assert "DBeaver" in alert.text and "Request cleanup" in alert.buttons()

    for conn in conns:
        conn.close()
    await cycle(bot)
    await cycle(bot)
    (reply,) = replies(fake_slack, alert.ts)
    assert "Resolved after" in reply.text and f"{role} is below its connection limit again" in reply.text
    edited = Posted(ALERTS, alert.ts, fake_slack.messages[ALERTS][alert.ts])
    assert "Resolved" in edited.text and not edited.buttons()
    assert len(about(fake_slack, role)) == 1


async def test_idle_in_transaction_alert(start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack) -> None:
    bot = await start_monitored_bot(alert_idle_in_tx_seconds=0)
    role = world.role("txn", limit=None)
    conn = world.connect(role, "forgot-to-commit")
    conn.execute("BEGIN")
    conn.execute("SELECT 42 AS answer")
    pid = world.pid_of(conn)
    await cycle(bot)
    await cycle(bot)
    (alert,) = about(fake_slack, f"pid {pid}")
    assert "idle in transaction" in alert.text and "forgot-to-commit" in alert.text
    # A channel post: the statement's keyword and length, never its text (PGCONN_SHOW_QUERIES).
    assert "last statement: SELECT … (19 chars)" in alert.text and "SELECT 42" not in alert.text
    assert "Request termination" in alert.buttons()
    conn.execute("COMMIT")
    await cycle(bot)
    assert len(replies(fake_slack, alert.ts)) == 1


async def test_unreachable_target_alerts_once_and_recovers(
    start_monitored_bot: Any, fake_slack: FakeSlack, pg_dsn: str
) -> None:
    bot = await start_monitored_bot(targets=json.dumps({"dead": "postgresql://postgres@127.0.0.1:1/postgres"}))
    for _ in range(3):
        await cycle(bot)
    (alert,) = about(fake_slack, "dead is not answering")
    assert "reason" in alert.text
    assert about(fake_slack, "default is not answering") == []


async def test_server_fill_alert(start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack) -> None:
    bot = await start_monitored_bot(alert_utilization_warn=0.01, alert_utilization_crit=0.99)
    await cycle(bot)
    await cycle(bot)
    (alert,) = about(fake_slack, "close to max_connections")
    assert "WARNING" in alert.text and "usable slots" in alert.text


async def test_button_creates_a_pending_cleanup_request(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_monitored_bot()
    role = world.role("full", limit=2)
    pids = [world.pid_of(world.connect(role)) for _ in range(2)]
    await cycle(bot)
    (alert,) = about(fake_slack, role)

    viewer = await bot.click(alert, "Request cleanup", "U0VIEWER")
    refused = message_text(await fake_slack.wait_for_response(viewer.response_url))
    assert "needs the requester role" in refused

    clicked = await bot.click(alert, "Request cleanup", REQUESTER)
    answer = message_text(await fake_slack.wait_for_response(clicked.response_url))
    assert "sent for approval" in answer
    request = await wait_for_request_message(fake_slack, APPROVALS, 1)
    assert f"idle sessions of {role}" in request.text and request.buttons()
    assert all(str(pid) in request.text for pid in pids)
    pending = message_text(await bot.ask("requests"))
    assert "#1" in pending
    alerts = message_text(await bot.ask("alerts"))
    assert role in alerts and "1 open alert" in alerts


async def test_two_monitors_on_one_state_database_post_once(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    first = await start_monitored_bot()
    second = await start_monitored_bot()
    role = world.role("twice", limit=1)
    world.connect(role)
    ran = [await first.server.runtime.monitor.run_cycle(), await second.server.runtime.monitor.run_cycle()]
    ran += [await second.server.runtime.monitor.run_cycle(), await first.server.runtime.monitor.run_cycle()]
    assert ran == [True, False, False, True]
    assert len(about(fake_slack, role)) == 1

    await first.server.stop()  # the leader goes away: the other takes over
    assert await second.server.runtime.monitor.run_cycle()
    assert len(about(fake_slack, role)) == 1


async def test_restart_neither_reposts_nor_forgets(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack, fresh_state_dsn: str
) -> None:
    before = await start_monitored_bot()
    role = world.role("restart", limit=1)
    conn = world.connect(role)
    await cycle(before)
    await before.server.stop()

    after = await start_monitored_bot()
    await cycle(after)
    (alert,) = about(fake_slack, role)
    conn.close()
    await cycle(after)
    assert len(replies(fake_slack, alert.ts)) == 1
    with psycopg.connect(fresh_state_dsn) as state:
        rows = state.execute("SELECT count(*), count(resolved_at) FROM pgconn.alert WHERE subject = %s", (role,))
        assert rows.fetchone() == (1, 1)


async def test_monitor_runs_by_itself_inside_serve(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    role = world.role("auto", limit=1)
    world.connect(role)
    await start_monitored_bot(monitor_interval=0.2)
    await fake_slack.wait_for(lambda: about(fake_slack, role), timeout=10)


async def test_slack_failure_is_retried_on_a_later_cycle(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    failures = [429]

    def flaky(payload: dict[str, Any]) -> web.Response | None:
        if payload.get("channel") == ALERTS and failures:
            failures.pop()
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
        return None

    fake_slack.overrides["chat.postMessage"] = flaky
    bot = await start_monitored_bot()
    role = world.role("retry", limit=1)
    world.connect(role)
    await cycle(bot)
    assert about(fake_slack, role) == []
    await cycle(bot)
    assert about(fake_slack, role) == []  # Retry-After: not before a second has passed
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        while not about(fake_slack, role):
            await cycle(bot)
            await asyncio.sleep(0.1)  # cycles are what the monitor does between its intervals
    assert loop.time() - started <= 1.5
    assert len(about(fake_slack, role)) == 1


async def test_a_target_that_comes_back_is_resolved(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    later = f"pgct_{world.tag}_later"
    bot = await start_monitored_bot(targets=json.dumps({"later": world.dsn_for(database=later)}))
    await cycle(bot)
    assert about(fake_slack, "later is not answering") == []  # one failed snapshot is not an outage
    await cycle(bot)
    (alert,) = about(fake_slack, "later is not answering")
    assert later in alert.text  # libpq's reason: the database does not exist (yet)
    world.admin.execute(f'CREATE DATABASE "{later}"')
    world.databases.append(later)
    async with asyncio.timeout(15):
        while not replies(fake_slack, alert.ts):
            await cycle(bot)
            await asyncio.sleep(0.2)  # the target's pool reconnects on its own schedule
    assert "later answers again" in replies(fake_slack, alert.ts)[0].text


async def test_going_over_the_limit_edits_the_same_alert(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_monitored_bot()
    role = world.role("shrink", limit=2)
    for _ in range(2):
        world.connect(role)
    await cycle(bot)
    (alert,) = about(fake_slack, role)
    world.admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 1')
    await cycle(bot)
    (edited,) = about(fake_slack, role)
    assert edited.ts == alert.ts and "over its connection limit on default: 2/1" in edited.text


async def test_idle_in_transaction_button_requests_that_pid(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_monitored_bot(alert_idle_in_tx_seconds=0)
    role = world.role("stuck", limit=None)
    conn = world.connect(role)
    conn.execute("BEGIN")
    pid = world.pid_of(conn)
    await cycle(bot)
    (alert,) = about(fake_slack, f"pid {pid}")
    clicked = await bot.click(alert, "Request termination", REQUESTER)
    assert "sent for approval" in message_text(await fake_slack.wait_for_response(clicked.response_url))
    request = await wait_for_request_message(fake_slack, APPROVALS, 1)
    assert f"terminate pid {pid}" in request.text


async def test_idle_alert_button_refuses_once_the_transaction_has_ended(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_monitored_bot(alert_idle_in_tx_seconds=0)
    role = world.role("moved_on", limit=None)
    conn = world.connect(role)
    conn.execute("BEGIN")
    pid = world.pid_of(conn)
    await cycle(bot)
    (alert,) = about(fake_slack, f"pid {pid}")
    conn.execute("COMMIT")
    conn.execute("BEGIN")  # a new transaction of the same session: not the one alerted about
    clicked = await bot.click(alert, "Request termination", REQUESTER)
    answer = message_text(await fake_slack.wait_for_response(clicked.response_url))
    assert "no longer idle in the transaction the alert was about" in answer
    assert fake_slack.channel_messages(APPROVALS) == []


async def test_alerts_of_a_target_no_longer_configured_are_resolved(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    before = await start_monitored_bot(targets=json.dumps({"extra": "postgresql://nobody@127.0.0.1:1/postgres"}))
    await cycle(before)
    await cycle(before)
    (alert,) = about(fake_slack, "extra is not answering")
    await before.server.stop()
    after = await start_monitored_bot()
    await cycle(after)
    (reply,) = replies(fake_slack, alert.ts)
    assert "no longer monitored" in reply.text


async def test_databases_of_one_server_share_one_snapshot_and_one_alert_per_problem(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    databases = [world.database(f"db{i}") for i in range(3)]
    targets = {f"db{i}": world.dsn_for(database=name) for i, name in enumerate(databases)}
    bot = await start_monitored_bot(targets=json.dumps(targets), alert_idle_in_tx_seconds=0)
    role = world.role("shared", limit=1)
    conn = world.connect(role, "forgot-to-commit", database=databases[1])
    conn.execute("BEGIN")
    await eventually_true(lambda: _connected(bot, ["default", *targets]))

    await cycle(bot)
    server = "the server of default, db0, db1, db2"
    (limit,) = about(fake_slack, f"{role} is at its connection limit on {server}")
    (idle,) = about(fake_slack, f"is idle in transaction on {server}")
    assert len(top_level(fake_slack)) == 2, [m.text for m in top_level(fake_slack)]
    assert bot.server.runtime.monitor.servers() == {"default": ["default", "db0", "db1", "db2"]}
    await cycle(bot)
    assert len(top_level(fake_slack)) == 2  # still one message per problem
    conn.execute("COMMIT")
    conn.close()
    await cycle(bot)
    assert len(replies(fake_slack, limit.ts)) == 1 and len(replies(fake_slack, idle.ts)) == 1


async def _connected(bot: BotUnderTest, names: list[str]) -> bool:
    return all(bot.server.runtime.targets.lifeline(name).connected for name in names)
