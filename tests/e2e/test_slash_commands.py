"""Signed slash commands over HTTP → the bot → answers recorded by the fake Slack."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp

from tests.conftest import PgWorld
from tests.e2e.conftest import BotUnderTest, message_text
from tests.support.slack_requests import sign, slash_command_body


def _pids_in_order(text: str, pids: list[int]) -> list[int]:
    positions = {pid: text.index(str(pid)) for pid in pids}
    return sorted(pids, key=positions.__getitem__)


async def test_list_answers_with_every_connection_in_order(bot: BotUnderTest, world: PgWorld) -> None:
    bob = world.role("bob", limit=5)
    conns = [world.connect(bob, app) for app in ("DBeaver", "pgAdmin 4", "psql", "DBeaver", "DataGrip")]
    pids = [world.pid_of(c) for c in conns]

    sent = await bot.command(f"list {bob}")
    answer = await bot.slack.wait_for_response(sent.response_url)
    text = message_text(answer)

    assert sent.status == 200 and sent.body == ""  # acknowledged empty; the answer follows
    assert answer["response_type"] == "ephemeral"
    assert _pids_in_order(text, pids) == pids
    assert "5/5 — at limit" in text
    for app in ("DBeaver", "pgAdmin 4", "DataGrip"):
        assert app in text
    assert f"/pgconn stray {bob}" in text
    assert len(answer["blocks"]) <= 50


async def test_limit_says_5_of_5_at_limit(bot: BotUnderTest, world: PgWorld) -> None:
    bob = world.role("bob", limit=5)
    for _ in range(5):
        world.connect(bob)
    alice = world.role("alice", limit=5)
    for _ in range(3):
        world.connect(alice)

    full = message_text(await bot.ask(f"limit {bob}"))
    partly = message_text(await bot.ask(f"limit {alice}"))

    assert "5/5 — at limit — new connections are refused" in full
    assert f"/pgconn stray {bob}" in full
    assert "3/5 — 2 left" in partly


async def test_limits_lists_full_roles_fullest_first(bot: BotUnderTest, world: PgWorld) -> None:
    four, five = world.role("four", limit=5), world.role("five", limit=5)
    for role, count in ((four, 4), (five, 5)):
        for _ in range(count):
            world.connect(role)

    text = message_text(await bot.ask("limits"))

    assert "5/5" in text and "4/5" in text
    assert text.index(five) < text.index(four)


async def test_stray_lists_idle_first_and_suggests_the_kill_command(bot: BotUnderTest, world: PgWorld) -> None:
    bob = world.role("bob")
    conns = [world.connect(bob, name) for name in ("one", "two", "three")]
    for conn in conns:
        conn.execute("SELECT 1")
    pids = [world.pid_of(c) for c in conns]

    text = message_text(await bot.ask(f"stray {bob}"))

    assert _pids_in_order(text, pids) == pids
    assert f"/pgconn kill {pids[0]} {pids[1]} {pids[2]}" in text
    assert f"/pgconn kill idle {bob}" in text


async def test_status_shows_fill_health_and_bar(bot: BotUnderTest, world: PgWorld) -> None:
    bob = world.role("bob", limit=None)
    for _ in range(3):
        world.connect(bob, "leaky-app")

    text = message_text(await bot.ask("status"))

    assert re.search(r"(HEALTHY|WARNING|CRITICAL) — default: \d+ of \d+ usable connection slots in use", text)
    assert re.search(r"[█░]{10} \d+%", text)
    assert "max_connections" in text and "states:" in text
    assert f"{bob} 3" in text and "leaky-app 3" in text


async def test_help_empty_text_and_bad_input_get_clear_answers(bot: BotUnderTest) -> None:
    help_text = message_text(await bot.ask(""))
    unknown = message_text(await bot.ask("frobnicate bob"))
    bad_duration = message_text(await bot.ask("stray bob --idle soon"))
    missing = message_text(await bot.ask("list"))

    assert "/pgconn list bob" in help_text and "/pgconn status" in help_text
    assert "unknown subcommand 'frobnicate'" in unknown and "Usage:" in unknown
    assert "--idle" in bad_duration and "/pgconn stray <role> [--idle 30m]" in bad_duration
    assert "list needs a role name" in missing


async def test_unknown_role_and_unknown_target(bot: BotUnderTest, world: PgWorld) -> None:
    ghost = f"pgct_{world.tag}_ghost"

    no_role = message_text(await bot.ask(f"list {ghost}"))
    no_target = message_text(await bot.ask("status --db nowhere"))

    assert f"no role named '{ghost}'" in no_role
    assert "unknown target 'nowhere'" in no_target and "default" in no_target


async def test_ack_is_immediate_and_answer_arrives_when_a_target_never_answers(start_bot: Any, world: PgWorld) -> None:
    silent = await asyncio.start_server(_hold_open, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        bot = await start_bot(
            targets={"silent": f"postgresql://postgres@127.0.0.1:{port}/postgres"}, command_timeout=2.0
        )
        started = time.perf_counter()
        sent = await bot.command("status --db silent")
        answer = await bot.slack.wait_for_response(sent.response_url, timeout=5)
        answered_after = time.perf_counter() - started
        healthy = message_text(await bot.ask("status"))
    finally:
        silent.close()

    assert sent.status == 200 and sent.ack_seconds < 0.5
    assert "target silent is unreachable" in message_text(answer)
    assert answered_after < 3.0
    assert "usable connection slots" in healthy  # the other target keeps working


async def test_untrusted_text_is_escaped(bot: BotUnderTest, world: PgWorld) -> None:
    bob = world.role("bob")
    world.connect(bob, "<!channel> *evil* `x` <@U123>")

    answer = await bot.ask(f"list {bob}")
    raw = str(answer["blocks"])

    assert "<!channel>" not in raw and "<@U123>" not in raw
    assert "&lt;!channel&gt;" in raw


async def test_many_connections_stay_within_block_kit_limits(bot: BotUnderTest, world: PgWorld) -> None:
    crowd = world.role("crowd", limit=None)
    for i in range(45):
        world.connect(crowd, f"pool-{i % 3}")

    answer = await bot.ask(f"list {crowd}")

    assert len(answer["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in answer["blocks"] if "text" in b)
    text = message_text(answer)
    assert "45 connections" in text and "and 5 more" in text
    assert "pool-0 15" in text  # the summary names the leaking application


async def test_permissions_default_none_refuses_politely_and_groups_grant(start_bot: Any, world: PgWorld) -> None:
    bot = await start_bot(default_role="none", viewers="U0LISTED,S0TAS")
    bot.slack.usergroups["S0TAS"] = ["U0TA"]
    bob = world.role("bob")

    stranger = message_text(await bot.ask(f"list {bob}", user_id="U0STRANGER"))
    listed = message_text(await bot.ask(f"list {bob}", user_id="U0LISTED"))
    via_group = message_text(await bot.ask(f"list {bob}", user_id="U0TA"))
    help_for_anyone = message_text(await bot.ask("help", user_id="U0STRANGER"))

    assert "Sorry" in stranger and "viewer role" in stranger and bob not in stranger
    assert "has no connections" in listed
    assert "has no connections" in via_group
    assert "/pgconn list bob" in help_for_anyone
    lookups = bot.slack.api_calls("usergroups.users.list")
    assert lookups and lookups[0].payload["usergroup"] == "S0TAS"
    assert lookups[0].headers["Authorization"] == "Bearer xoxb-test-token-not-real"


async def test_requests_not_signed_by_slack_are_rejected(bot: BotUnderTest) -> None:
    body = slash_command_body("status", user_id="U0VIEWER", response_url=bot.slack.new_response_url())
    now = int(time.time())
    cases = {
        "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
        "wrong secret": sign(body, secret="not-the-secret"),
        "stale": sign(body, timestamp=now - 6 * 60),
        "future": sign(body, timestamp=now + 6 * 60),
    }
    tampered = sign(body)
    before = len(bot.slack.calls)  # the start-up auth.test

    statuses = {}
    for name, headers in cases.items():
        async with await bot.post(body, headers) as response:
            statuses[name] = response.status
    async with await bot.post(body.replace("status", "limits"), tampered) as response:
        statuses["tampered body"] = response.status

    assert statuses == {name: 401 for name in [*cases, "tampered body"]}
    assert bot.slack.calls[before:] == []


async def test_health_and_metrics_endpoints(bot: BotUnderTest) -> None:
    await bot.ask("help")
    async with aiohttp.ClientSession() as session:
        async with session.get(bot.url + "/healthz") as health:
            assert health.status == 200
        async with session.get(bot.url + "/metrics") as metrics:
            body = await metrics.text()
    assert 'pgconn_commands_total{outcome="ok",subcommand="help"}' in body


async def _hold_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read()
    finally:
        writer.close()


async def test_healthz_is_503_when_the_state_database_does_not_answer(bot: BotUnderTest) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot.db.state import StateStore
    from bot.slack.web import build_web_app

    dead_state = StateStore("postgresql://postgres@127.0.0.1:1/postgres", timeout=0.5)
    await dead_state.open()
    client = TestClient(TestServer(build_web_app(bot.server.app, dead_state.healthy)))
    await client.start_server()
    try:
        response = await client.get("/healthz")
        assert response.status == 503
    finally:
        await client.close()
        await dead_state.close()
