"""Faults: databases that vanish mid-command, a state database that blinks, Slack failing, SIGKILL.

Outages go through a loopback TCP proxy the test controls; the shared PostgreSQL server is never
stopped.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import PgWorld
from tests.e2e.conftest import (
    BOT_TOKEN,
    BotUnderTest,
    Posted,
    message_text,
    wait_for_message_state,
    wait_for_request_message,
)
from tests.e2e.test_processes import _free_port, _wait_healthy, bot_env
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import SIGNING_SECRET, block_actions_body, sign, slash_command_body
from tests.support.tcp_proxy import TcpProxy

REQUESTER, APPROVER, APPROVALS, AUDIT = "U0REQ", "U0APP", "C0APPROVE", "C0AUDIT"


@pytest.fixture
async def proxy(pg_dsn: str) -> AsyncIterator[TcpProxy]:
    params = conninfo_to_dict(pg_dsn)
    tcp = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    await tcp.start()
    yield tcp
    await tcp.close()


def through(proxy: TcpProxy, dsn: str) -> str:
    assert proxy._server is not None
    return make_conninfo(dsn, host="127.0.0.1", port=str(proxy._server.sockets[0].getsockname()[1]))


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Re-check ``check`` (sync or async) until it is truthy: for recoveries the test cannot be told of."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.1)


def alive(world: PgWorld, pid: int) -> bool:
    return world.admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is not None


async def test_target_dropping_mid_command_is_answered_fast_and_the_pool_recovers(
    start_bot: Any, proxy: TcpProxy, pg_dsn: str
) -> None:
    bot: BotUnderTest = await start_bot(targets=json.dumps({"flaky": through(proxy, pg_dsn)}))
    assert "usable connection slots" in message_text(await bot.ask("status --db flaky"))

    proxy.frozen = True  # the command's query is sent into a hung network…
    sent = await bot.command("status --db flaky")
    proxy.cut()  # …and then the server is gone altogether
    started = time.monotonic()
    answer = message_text(await bot.slack.wait_for_response(sent.response_url, timeout=5))
    assert "target flaky is unreachable" in answer and time.monotonic() - started < 3
    assert "Traceback" not in answer
    assert "usable connection slots" in message_text(await bot.ask("status"))  # the others keep working

    proxy.restore()

    async def recovered() -> bool:
        return "usable connection slots" in message_text(await bot.ask("status --db flaky"))

    await eventually(recovered)


async def test_state_database_blinking_loses_nothing(
    fresh_state_dsn: str, start_bot: Any, proxy: TcpProxy, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_bot(
        state_url=through(proxy, fresh_state_dsn),
        requesters=REQUESTER,
        approvers=APPROVER,
        approval_channel=APPROVALS,
    )
    role = world.role("blink")
    first, second = (world.pid_of(world.connect(role)) for _ in range(2))
    answer = message_text(await bot.ask(f"kill {first}", user_id=REQUESTER))
    assert "Request #1 sent for approval" in answer
    message = await wait_for_request_message(bot.slack, APPROVALS, 1)

    proxy.cut()
    started = time.monotonic()
    refused = message_text(await bot.ask(f"kill {second}", user_id=REQUESTER, timeout=8))
    assert "state database" in refused and "nothing was changed" in refused
    assert time.monotonic() - started < 3
    assert "state database" in message_text(await bot.ask("requests", timeout=8))
    clicked = await bot.click(message, "Approve", APPROVER)
    said = message_text(await bot.slack.wait_for_response(clicked.response_url, timeout=8))
    assert "state database" in said and alive(world, first)

    proxy.restore()

    async def listed() -> bool:
        return "#1" in message_text(await bot.ask("requests"))

    await eventually(listed)
    await bot.click(message, "Approve", APPROVER)
    await wait_for_message_state(bot.slack, message, lambda m: not m.buttons())
    assert not alive(world, first) and alive(world, second)
    with psycopg.connect(fresh_state_dsn) as conn:
        requests = conn.execute("SELECT id, status FROM pgconn.request").fetchall()
        events = [r[0] for r in conn.execute("SELECT event FROM pgconn.audit ORDER BY id")]
    assert requests == [(1, "executed")]  # the refused kill left nothing half-written
    assert events == ["requested", "approved", "executed"]


async def test_a_bot_started_without_its_state_database_answers_and_takes_it_when_it_comes(
    fresh_state_dsn: str, start_bot: Any, proxy: TcpProxy, world: PgWorld
) -> None:
    proxy.cut()  # the state database is down when the bot starts
    started = time.monotonic()
    bot: BotUnderTest = await start_bot(  # waits state_wait=2 s for it, not longer
        state_url=through(proxy, fresh_state_dsn),
        requesters=REQUESTER,
        approvers=APPROVER,
        approval_channel=APPROVALS,
    )
    assert time.monotonic() - started < 6  # the promised wait (each try had waited 10 s before)
    role = world.role("degraded")
    pid = world.pid_of(world.connect(role))
    assert f"{role}: 1 connection" in message_text(await bot.ask(f"list {role}"))  # needs no state
    refused = message_text(await bot.ask(f"kill {pid}", user_id=REQUESTER))
    assert "state database" in refused and "nothing was changed" in refused

    proxy.restore()
    await eventually(lambda: bot.server.runtime.state.ready)
    assert "Request #1 sent for approval" in message_text(await bot.ask(f"kill {pid}", user_id=REQUESTER))


async def test_a_schema_someone_else_made_while_the_bot_waited_for_its_state_database_stops_it(
    world: PgWorld, fresh_state_dsn: str, proxy: TcpProxy, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    proxy.cut()
    port = _free_port()
    env = bot_env(
        PORT=str(port),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake_slack.api_url,
        PGCONN_DATABASE_URL=world.dsn,
        PGCONN_STATE_URL=through(proxy, fresh_state_dsn),
        PGCONN_MONITOR_INTERVAL="0",
    )
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "serve", env=env, stderr=err)
    try:
        async with aiohttp.ClientSession() as session:
            await _listening(session, f"http://127.0.0.1:{port}/healthz", process)  # started without it
        squatter = world.role("squatter", limit=None)
        database = conninfo_to_dict(fresh_state_dsn)["dbname"]
        with psycopg.connect(fresh_state_dsn, autocommit=True) as admin:
            admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{squatter}"')
        with psycopg.connect(world.dsn_for(squatter, str(database)), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA pgconn")
        proxy.restore()
        code = await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    said = log.read_text()
    assert code == 1, said
    assert "cannot go on" in said and "will not use it" in said and "Traceback" not in said, said


async def _listening(session: aiohttp.ClientSession, url: str, process: Any) -> None:
    """Until the process answers HTTP at all (healthy or not)."""
    async with asyncio.timeout(20):
        while True:
            assert process.returncode is None, "serve exited"
            try:
                async with session.get(url):
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)


async def test_a_replica_busy_with_slack_still_says_it_is_alive(
    fresh_state_dsn: str, start_bot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its leases (an audit entry it is posting, a message it is updating) are not taken over
    while it waits on a slow Slack: the heartbeat does not wait with it."""
    bot: BotUnderTest = await start_bot(state_url=fresh_state_dsn, audit_channel=AUDIT)
    housekeeper = bot.server.runtime.housekeeper
    replica = housekeeper.replica
    stuck, release = asyncio.Event(), asyncio.Event()

    async def slow_slack() -> None:
        stuck.set()
        await release.wait()

    monkeypatch.setattr(housekeeper, "deliver_audit", slow_slack)
    try:
        await asyncio.wait_for(stuck.wait(), timeout=5)
        seen = _seen_at(fresh_state_dsn, replica)
        for _ in range(2):  # beat after beat, while the housekeeper waits
            seen = await eventually(lambda before=seen: (now := _seen_at(fresh_state_dsn, replica)) > before and now)
    finally:
        release.set()


def _seen_at(state_dsn: str, replica: Any) -> Any:
    with psycopg.connect(state_dsn) as conn:
        row = conn.execute("SELECT seen_at FROM pgconn.replica WHERE id = %s", (replica,)).fetchone()
    assert row is not None
    return row[0]


async def test_answers_are_retried_when_the_response_url_fails(start_bot: Any, fake_slack: FakeSlack) -> None:
    bot: BotUnderTest = await start_bot()
    fake_slack.respond_failures = [500, 503]
    answer = await bot.ask("help", timeout=10)
    assert "pgconn-bot" in message_text(answer)
    assert len(fake_slack.api_calls("respond.failed")) == 2


async def test_concurrent_duplicate_clicks_with_retry_headers_execute_once(
    fresh_state_dsn: str, start_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_bot(
        state_url=fresh_state_dsn, requesters=REQUESTER, approvers=APPROVER, approval_channel=APPROVALS
    )
    role = world.role("dup")
    pid = world.pid_of(world.connect(role))
    await bot.ask(f"kill {pid}", user_id=REQUESTER)
    message = await wait_for_request_message(bot.slack, APPROVALS, 1)
    action_id, value = message.button("Approve")
    body = block_actions_body(
        user_id=APPROVER,
        action_id=action_id,
        value=value,
        channel_id=APPROVALS,
        message_ts=message.ts,
        response_url=bot.slack.new_response_url(),
    )

    async def post(retry: int | None) -> int:
        headers = sign(body)
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        async with await bot.post(body, headers) as response:
            return response.status

    assert await asyncio.gather(post(None), post(1), post(2)) == [200, 200, 200]
    await wait_for_message_state(bot.slack, message, lambda m: not m.buttons())
    with psycopg.connect(fresh_state_dsn) as conn:
        events = [r[0] for r in conn.execute("SELECT event FROM pgconn.audit ORDER BY id")]
    assert events.count("approved") == 1 and events.count("executed") == 1
    assert not alive(world, pid)


# --- SIGKILL at every step of a request's life ------------------------------------------------------


class ServeProcess:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.proc: asyncio.subprocess.Process | None = None
        # Its log, printed when it stops: pytest shows it with a failing test, and only then.
        self._log = tempfile.NamedTemporaryFile(prefix="pgconn-serve-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", env=self.env, stderr=self._log
        )
        await _wait_healthy(session, self.url + "/healthz", self.proc)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        self._show_log("killed")

    async def terminate(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), timeout=15)
        self._show_log("stopped")

    def _show_log(self, how: str) -> None:
        self._log.close()
        path = Path(self._log.name)
        print(f"--- serve on port {self.port}, {how} ---\n{path.read_text(errors='replace')}")
        path.unlink(missing_ok=True)


async def _post(session: aiohttp.ClientSession, url: str, body: str) -> None:
    async with session.post(url + "/slack/events", data=body.encode(), headers=sign(body)) as response:
        assert response.status == 200


def _env(fake_slack: FakeSlack, target: str, state: str) -> tuple[dict[str, str], int]:
    port = _free_port()
    env = bot_env(
        PORT=str(port),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake_slack.api_url,
        PGCONN_DATABASE_URL=target,
        PGCONN_STATE_URL=state,
        PGCONN_MONITOR_INTERVAL="0",
        PGCONN_REQUESTERS=REQUESTER,
        PGCONN_APPROVERS=APPROVER,
        PGCONN_APPROVAL_CHANNEL=APPROVALS,
        PGCONN_AUDIT_CHANNEL=AUDIT,
    )
    return env, port


def _click(message: Posted, fake_slack: FakeSlack, response_url: str | None = None) -> str:
    action_id, value = message.button("Approve")
    return block_actions_body(
        user_id=APPROVER,
        action_id=action_id,
        value=value,
        channel_id=APPROVALS,
        message_ts=message.ts,
        response_url=response_url or fake_slack.new_response_url(),
    )


def delivered(fake_slack: FakeSlack) -> list[str]:
    return [message_text(m) for m in fake_slack.channel_messages(AUDIT)]


async def test_sigkill_during_execution_never_runs_it_twice(
    world: PgWorld, pg_dsn: str, fresh_state_dsn: str, fake_slack: FakeSlack, proxy: TcpProxy
) -> None:
    role = world.role("mid_exec")
    pid = world.pid_of(world.connect(role))
    env, port = _env(fake_slack, through(proxy, pg_dsn), fresh_state_dsn)
    async with aiohttp.ClientSession() as session:
        first = ServeProcess(env, port)
        await first.start(session)
        try:
            await _post(session, first.url, slash_command_body(f"kill {pid}", user_id=REQUESTER, response_url=""))
            message = await wait_for_request_message(fake_slack, APPROVALS, 1)
            proxy.frozen = True  # the signal statement never reaches the server…
            await _post(session, first.url, _click(message, fake_slack))

            def executing() -> bool:
                with psycopg.connect(fresh_state_dsn) as conn:
                    row = conn.execute("SELECT status FROM pgconn.request WHERE id = 1").fetchone()
                return row == ("executing",)

            await eventually(executing)
        finally:
            await first.kill()  # …and the bot dies in the middle of it
        proxy.restore()

        second = ServeProcess(env, port)
        await second.start(session)
        try:
            late = fake_slack.new_response_url()
            await _post(session, second.url, _click(message, fake_slack, late))
            said = message_text(await fake_slack.wait_for_response(late, timeout=10))
            assert "already approved" in said and alive(world, pid)  # answered, and nothing re-run
            # After the interruption window the request is reported, never re-run.
            with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
                conn.execute("UPDATE pgconn.request SET decided_at = now() - interval '1 hour' WHERE id = 1")
            await fake_slack.wait_for(lambda: any("#1 · interrupted" in t for t in delivered(fake_slack)), 15)
            final = await wait_for_message_state(fake_slack, message, lambda m: not m.buttons())
            assert "stopped while executing" in final.text
        finally:
            await second.terminate()
    assert alive(world, pid)
    with psycopg.connect(fresh_state_dsn) as conn:
        events = [r[0] for r in conn.execute("SELECT event FROM pgconn.audit ORDER BY id")]
    assert events == ["requested", "approved", "interrupted"]


async def test_sigkill_before_the_audit_post_delivers_every_entry_once(
    world: PgWorld, pg_dsn: str, fresh_state_dsn: str, fake_slack: FakeSlack
) -> None:
    role = world.role("pre_audit")
    pid = world.pid_of(world.connect(role))
    fake_slack.overrides["chat.postMessage"] = lambda p: (
        web.Response(status=503, text="down") if p.get("channel") == AUDIT else None
    )
    env, port = _env(fake_slack, pg_dsn, fresh_state_dsn)
    async with aiohttp.ClientSession() as session:
        first = ServeProcess(env, port)
        await first.start(session)
        try:
            await _post(session, first.url, slash_command_body(f"kill {pid}", user_id=REQUESTER, response_url=""))
            message = await wait_for_request_message(fake_slack, APPROVALS, 1)
            await _post(session, first.url, _click(message, fake_slack))
            await wait_for_message_state(fake_slack, message, lambda m: not m.buttons())
        finally:
            await first.kill()
        assert delivered(fake_slack) == [] and not alive(world, pid)

        del fake_slack.overrides["chat.postMessage"]
        second = ServeProcess(env, port)
        await second.start(session)
        try:
            await fake_slack.wait_for(lambda: any("#1 · executed" in t for t in delivered(fake_slack)), 15)
        finally:
            await second.terminate()
    texts = delivered(fake_slack)
    for event in ("requested", "approved", "executed"):
        assert len([t for t in texts if f"#1 · {event}" in t]) == 1, (event, texts)
