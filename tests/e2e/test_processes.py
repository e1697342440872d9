"""The real processes: ``pgconn-bot console`` through stdin, ``pgconn-bot serve`` over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import aiohttp

from tests.conftest import PgWorld
from tests.e2e.conftest import BOT_TOKEN, message_text
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import SIGNING_SECRET, block_actions_body, sign, slash_command_body


def bot_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCONN_", "SLACK_"))}
    env.update(extra)
    return env


def run_console(stdin: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "console", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_console_answers_commands_from_stdin(world: PgWorld, pg_dsn: str, state_dsn: str) -> None:
    bob = world.role("bob", limit=5)
    conns = [world.connect(bob, "DBeaver") for _ in range(5)]
    env = bot_env(PGCONN_DATABASE_URL=pg_dsn, PGCONN_STATE_URL=state_dsn)

    done = run_console(f"/pgconn list {bob}\nlimit {bob}\nstray {bob} --idle 1h\nlist\nquit\n", env)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{bob}: 5 connections" in out
    positions = [out.index(str(world.pid_of(c))) for c in conns]
    assert positions == sorted(positions)
    assert "5/5 — at limit — new connections are refused" in out
    assert "no connections idle ≥ 1h" in out
    assert "list needs a role name" in out and "Usage: list <role>" in out
    assert "/pgconn" not in out  # the console's commands are typed bare
    assert "Traceback" not in out + done.stderr


def test_console_kill_is_a_request_and_approve_executes_it(world: PgWorld, pg_dsn: str, fresh_state_dsn: str) -> None:
    bob = world.role("bob")
    pid = world.pid_of(world.connect(bob, "left-open"))
    env = bot_env(
        PGCONN_DATABASE_URL=pg_dsn,
        PGCONN_STATE_URL=fresh_state_dsn,
        PGCONN_REQUESTERS="U0TA",
        PGCONN_APPROVERS="U0DBA",
    )
    script = f"as U0TA\nkill {pid} --reason 'left open'\napprove 1\nas U0DBA\ndeny 999\napprove 1\naudit 3\n"
    done = run_console(script, env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"Request #1 created: terminate pid {pid} ({bob})" in out
    assert "only approvers can approve" in out  # the TA's own approve
    assert "There is no request #999" in out
    assert "done: 1 terminated" in out
    assert "#1 · executed" in out and "requested by @U0TA" in out and "approved by @U0DBA" in out
    assert world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,)


def test_console_identity_switch_goes_through_the_policy(world: PgWorld, pg_dsn: str, state_dsn: str) -> None:
    bob = world.role("bob")
    env = bot_env(
        PGCONN_DATABASE_URL=pg_dsn, PGCONN_STATE_URL=state_dsn, PGCONN_DEFAULT_ROLE="none", PGCONN_VIEWERS="U0TA"
    )

    done = run_console(f"list {bob}\nas U0TA\nlist {bob}\n", env, "--as", "U0STUDENT")

    assert done.returncode == 0, done.stderr
    refused, _, allowed = done.stdout.partition("now acting as U0TA")
    assert "Sorry, list needs the viewer role" in refused
    assert f"Role {bob} has no connections" in allowed


def test_bad_configuration_fails_with_one_line() -> None:
    env = bot_env(PGCONN_TARGETS="{broken", SLACK_BOT_TOKEN="xoxb-x", SLACK_SIGNING_SECRET="s")
    done = subprocess.run([sys.executable, "-m", "bot", "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "PGCONN_TARGETS: not valid JSON" in done.stderr and "Traceback" not in done.stderr


def test_serve_without_slack_settings_says_what_is_missing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve"], env=bot_env(), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET must be set" in done.stderr


async def test_serve_process_answers_signed_commands_and_stops_on_sigterm(
    world: PgWorld, pg_dsn: str, state_dsn: str, fake_slack: FakeSlack
) -> None:
    bob = world.role("bob", limit=5)
    for _ in range(5):
        world.connect(bob)
    port = _free_port()
    env = bot_env(
        PORT=str(port),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake_slack.api_url,
        PGCONN_DATABASE_URL=pg_dsn,
        PGCONN_STATE_URL=state_dsn,
        PGCONN_MONITOR_INTERVAL="0",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_healthy(session, f"http://127.0.0.1:{port}/healthz", process)
            response_url = fake_slack.new_response_url()
            body = slash_command_body(f"limit {bob}", user_id="U0VIEWER", response_url=response_url)
            async with session.post(
                f"http://127.0.0.1:{port}/slack/events", data=body.encode(), headers=sign(body)
            ) as response:
                assert response.status == 200
            answer = await fake_slack.wait_for_response(response_url)
        assert "5/5 — at limit" in message_text(answer)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=15)
    assert code == 0


async def _wait_healthy(session: aiohttp.ClientSession, url: str, process: Any) -> None:
    async with asyncio.timeout(20):
        while True:
            if process.returncode is not None:
                raise AssertionError(f"serve exited: {(await process.stderr.read()).decode()}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_request_survives_sigkill_of_the_serve_process(
    world: PgWorld, pg_dsn: str, fresh_state_dsn: str, fake_slack: FakeSlack
) -> None:
    bob = world.role("bob")
    pid = world.pid_of(world.connect(bob))
    port = _free_port()
    env = bot_env(
        PORT=str(port),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake_slack.api_url,
        PGCONN_DATABASE_URL=pg_dsn,
        PGCONN_STATE_URL=fresh_state_dsn,
        PGCONN_MONITOR_INTERVAL="0",
        PGCONN_REQUESTERS="U0TA",
        PGCONN_APPROVERS="U0DBA",
        PGCONN_APPROVAL_CHANNEL="C0APPROVE",
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        first = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", env=env, stderr=asyncio.subprocess.PIPE
        )
        try:
            await _wait_healthy(session, url + "/healthz", first)
            body = slash_command_body(f"kill {pid}", user_id="U0TA", response_url=fake_slack.new_response_url())
            async with session.post(url + "/slack/events", data=body.encode(), headers=sign(body)) as response:
                assert response.status == 200
            await fake_slack.wait_for(lambda: fake_slack.channel_messages("C0APPROVE"))
        finally:
            first.kill()  # SIGKILL: no chance to tidy up
            await first.wait()
        (ts, message), *_ = fake_slack.messages["C0APPROVE"].items()
        approve = next(
            e
            for b in message["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
            if "Approve" in e["text"]["text"]
        )

        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", env=env, stderr=asyncio.subprocess.PIPE
        )
        try:
            await _wait_healthy(session, url + "/healthz", second)
            click = block_actions_body(
                user_id="U0DBA",
                action_id=approve["action_id"],
                value=approve["value"],
                channel_id="C0APPROVE",
                message_ts=ts,
                response_url=fake_slack.new_response_url(),
            )
            async with session.post(url + "/slack/events", data=click.encode(), headers=sign(click)) as response:
                assert response.status == 200
            await fake_slack.wait_for(lambda: fake_slack.api_calls("chat.update", "C0APPROVE"), timeout=10)
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), timeout=15) == 0
    updated = fake_slack.messages["C0APPROVE"][ts]
    assert not [b for b in updated["blocks"] if b["type"] == "actions"]
    assert "terminated" in message_text(updated)
    assert world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,)


def test_socket_without_an_app_token_says_so() -> None:
    env = bot_env(SLACK_BOT_TOKEN="xoxb-x")
    done = subprocess.run([sys.executable, "-m", "bot", "socket"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "SLACK_APP_TOKEN must be set" in done.stderr


async def test_socket_process_connects_answers_and_stops_on_sigterm(
    world: PgWorld, pg_dsn: str, fresh_state_dsn: str, fake_slack: FakeSlack
) -> None:
    bob = world.role("bob", limit=1)
    world.connect(bob)
    port = _free_port()
    env = bot_env(
        PORT=str(port),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN="xapp-1-test",
        SLACK_API_URL=fake_slack.api_url,
        PGCONN_DATABASE_URL=pg_dsn,
        PGCONN_STATE_URL=fresh_state_dsn,
        PGCONN_MONITOR_INTERVAL="0",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "socket", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_healthy(session, f"http://127.0.0.1:{port}/healthz", process)
        await fake_slack.wait_for(lambda: fake_slack.sockets, timeout=10)
        response_url = fake_slack.new_response_url()
        payload = {"command": "/pgconn", "text": f"limit {bob}", "user_id": "U0VIEWER", "team_id": "T0TEST01"}
        payload |= {"channel_id": "C0TEST01", "response_url": response_url, "api_app_id": "A0TEST01"}
        await fake_slack.send_envelope("slash_commands", payload)
        assert "1/1 — at limit" in message_text(await fake_slack.wait_for_response(response_url))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=15)
    assert code == 0


async def test_socket_with_a_refused_app_token_stops_with_one_line(
    fake_slack: FakeSlack, pg_dsn: str, state_dsn: str
) -> None:
    from aiohttp import web

    fake_slack.overrides["apps.connections.open"] = lambda _: web.json_response({"ok": False, "error": "invalid_auth"})
    env = bot_env(
        PORT=str(_free_port()),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN="xapp-1-revoked",
        SLACK_API_URL=fake_slack.api_url,
        PGCONN_DATABASE_URL=pg_dsn,
        PGCONN_STATE_URL=state_dsn,
        PGCONN_MONITOR_INTERVAL="0",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "socket", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        code = await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    said = (await process.stderr.read()).decode()
    assert code == 1, said
    assert "SLACK_APP_TOKEN" in said and "invalid_auth" in said and "Traceback" not in said, said


async def test_serve_says_why_the_state_database_refuses_it_and_names_the_variable(
    fake_slack: FakeSlack, pg_dsn: str
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    wrong_role = make_conninfo(**{**conninfo_to_dict(pg_dsn), "user": "pgct_nobody_at_all"})
    env = bot_env(
        PORT=str(_free_port()),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake_slack.api_url,
        PGCONN_DATABASE_URL=pg_dsn,
        PGCONN_STATE_URL=wrong_role,
        PGCONN_MONITOR_INTERVAL="0",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not any("carry" in line or "need no state" in line for line in lines):
                line = (await process.stderr.readline()).decode()
                assert line, "serve exited: " + "".join(lines)
                lines.append(line)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    said = "".join(lines)
    assert 'role "pgct_nobody_at_all" does not exist' in said, said
    assert "state database (PGCONN_STATE_URL)" in said, said
    assert "will be unused" not in said and "Traceback" not in said, said


def test_console_as_a_name_that_is_not_a_slack_id_is_warned(pg_dsn: str, state_dsn: str) -> None:
    env = bot_env(PGCONN_DATABASE_URL=pg_dsn, PGCONN_STATE_URL=state_dsn, PGCONN_LOG_LEVEL="INFO")
    done = run_console("as bob\nas U0TA\nkill 1\n", env)
    assert done.returncode == 0, done.stderr
    named, _, by_id = done.stdout.partition("now acting as U0TA")
    assert "now acting as bob" in named and "'bob' is not a Slack user ID" in named
    assert "not a Slack user ID" not in by_id
    assert " INFO " not in done.stdout + done.stderr  # the console logs warnings and errors only
