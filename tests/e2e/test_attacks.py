"""Attacks found in an adversarial review, each replayed through the real path.

A student with a login role, a workspace member with no role, a slow or hostile Slack: every
test here is an attack that once worked, run against the bot over signed HTTP (or as a real
process) with a real PostgreSQL, and it fails if the defence regresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import io
import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from aiohttp import web
from psycopg import sql

from bot.doctor import run_check
from bot.model.audit import RefusalsSummarised, note_from_json
from bot.render.requests import audit_note_text
from tests.conftest import PgWorld
from tests.e2e.conftest import (
    APPROVALS,
    APPROVER,
    AUDIT,
    REQUESTER,
    BotUnderTest,
    alive,
    ephemeral_answer,
    eventually,
    eventually_true,
    message_text,
    open_request,
    wait_for_message_state,
    wait_for_request_message,
)
from tests.e2e.test_processes import _free_port, bot_env
from tests.support import planted
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import block_actions_payload, event_body, form_body, sign, slash_command_fields

ALERTS = "C0ALERTS"


@dataclass
class Trap:
    name: str
    dsn: str  # as the test's superuser
    planted: list[str]


@pytest.fixture
def trap(world: PgWorld) -> Iterator[Trap]:
    """A database owned by a student, with look-alikes of everything the bot's SQL calls planted
    in ``public`` and ``search_path = public, pg_catalog`` set on the database by its owner."""
    student = world.role("student", limit=None)
    name = f"pgct_{world.tag}_trap"
    world.admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(student)))
    world.databases.append(name)
    dsn = world.dsn_for(database=name)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # as PostgreSQL 13/14 shipped
    with psycopg.connect(world.dsn_for(student, name), autocommit=True) as conn:
        done = planted.plant(conn)
        conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = public, pg_catalog").format(sql.Identifier(name)))
    yield Trap(name, dsn, done)


def _sleep_in_background(conn: psycopg.Connection[Any]) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_catalog.pg_sleep(60)")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def test_functions_planted_on_the_search_path_never_run_as_the_bot(
    world: PgWorld, trap: Trap, start_bot: Any
) -> None:
    # The review's hijack, and everything else the bot calls, is planted.
    assert {"lower(text)", "count(*)", "name = name"} <= set(trap.planted), trap.planted
    assert len(trap.planted) >= 30, trap.planted
    baseline, _ = planted.hits(trap.dsn)

    victim = world.role("victim", limit=2)
    stray = world.connect(victim, "stray-notebook", database=trap.name)
    forgotten = world.connect(victim, "forgotten-tx", database=trap.name)
    forgotten.execute("BEGIN")  # idle in transaction, and the role is at its limit (2/2)
    runner = world.role("runner", limit=None)
    _sleep_in_background(world.connect(runner, "long-report", database=trap.name))
    bot: BotUnderTest = await start_bot(
        database_url=trap.dsn,
        state_url=trap.dsn,
        requesters=REQUESTER,
        approvers=APPROVER,
        approval_channel=APPROVALS,
        audit_channel=AUDIT,
        alert_channel=ALERTS,
        alert_idle_in_tx_seconds=0,
        alert_long_query_seconds=0,
    )

    # Every read command answers, and answers right.
    for text in (f"list {victim}", f"limit {victim}", "limits", f"stray {victim}", "status", "requests"):
        answer = message_text(await bot.ask(text, user_id=APPROVER))
        assert "went wrong" not in answer and "unreachable" not in answer, (text, answer)
    assert "2/2" in message_text(await bot.ask(f"limit {victim}"))

    # An approved kill: the right session ends.
    answer = await bot.ask(f"kill {stray.info.backend_pid}", user_id=REQUESTER)
    assert "sent for approval" in message_text(answer), message_text(answer)
    message = await wait_for_request_message(bot.slack, APPROVALS, 1)
    await bot.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(bot.slack, message, lambda m: not m.buttons())
    assert "1 terminated" in done.text, done.text

    # A monitor cycle with something to report in every category, and its alerts posted.
    world.connect(victim, "back-again", database=trap.name)  # at the limit again: 2/2
    assert await bot.server.runtime.monitor.run_cycle()
    await bot.slack.wait_for(lambda: len(bot.slack.channel_messages(ALERTS)) >= 3)
    for text in ("audit 20", "alerts"):
        answer = message_text(await bot.ask(text, user_id=APPROVER))
        assert "went wrong" not in answer, (text, answer)

    # The doctor, as the real process.
    env = bot_env(PGCONN_DATABASE_URL=trap.dsn, PGCONN_STATE_URL=trap.dsn)
    check = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "target default: PostgreSQL" in check.stdout, check.stdout + check.stderr
    assert "state database: schema pgconn at version" in check.stdout, check.stdout

    count, which = planted.hits(trap.dsn)
    assert (count - baseline, which) == (0, [])


# --- a squatted schema (review item 10) ------------------------------------------------------


def _serve(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "serve"], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("squat", ["schema", "table", "grant"])
async def test_a_schema_pgconn_someone_else_owns_is_never_adopted(
    world: PgWorld, fresh_state_dsn: str, squat: str
) -> None:
    squatter = world.role("squatter", limit=None)
    database = psycopg.conninfo.conninfo_to_dict(fresh_state_dsn)["dbname"]
    with psycopg.connect(fresh_state_dsn, autocommit=True) as admin:
        if squat == "schema":  # someone who may create schemas got there first
            admin.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(*map(sql.Identifier, (database, squatter)))
            )
        elif squat == "table":  # the schema is the bot's, but another role may create in it and did
            admin.execute("CREATE SCHEMA pgconn")
            admin.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA pgconn TO {}").format(sql.Identifier(squatter)))
        else:  # all the bot's, but someone was given the right to change its tables
            admin.execute("CREATE SCHEMA pgconn")
            admin.execute("CREATE TABLE pgconn.schema_version (version integer PRIMARY KEY, applied_at timestamptz)")
            admin.execute(sql.SQL("GRANT USAGE ON SCHEMA pgconn TO {}").format(sql.Identifier(squatter)))
            admin.execute(sql.SQL("GRANT UPDATE ON pgconn.schema_version TO {}").format(sql.Identifier(squatter)))
    if squat != "grant":
        with psycopg.connect(world.dsn_for(squatter, database), autocommit=True) as conn:
            if squat == "schema":
                conn.execute("CREATE SCHEMA pgconn")
            conn.execute("CREATE TABLE pgconn.schema_version (version integer PRIMARY KEY, applied_at timestamptz)")

    env = bot_env(
        PGCONN_DATABASE_URL=world.dsn,
        PGCONN_STATE_URL=fresh_state_dsn,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET="test-secret",
        PORT=str(_free_port()),
    )
    done = await asyncio.to_thread(_serve, env)
    assert done.returncode == 1, done.stderr
    why = {
        "schema": "is owned by role",
        "table": "holds objects another role owns",
        "grant": f"grant privileges to {squatter}",
    }[squat]
    assert why in done.stderr and "will not use it" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    with psycopg.connect(fresh_state_dsn) as conn:  # nothing of the bot's was created in it
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'pgconn'")}
    assert tables == {"schema_version"}

    check = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 1 and "✗ state database:" in check.stdout and why in check.stdout, check.stdout


# --- a password in an error (review item 11) ---------------------------------------------------


@pytest.mark.parametrize("variable", ["PGCONN_DATABASE_URL", "PGCONN_STATE_URL", "PGCONN_TARGETS"])
@pytest.mark.parametrize("mode", ["serve", "console", "check"])
def test_a_malformed_connection_string_never_prints_its_password(variable: str, mode: str) -> None:
    dsn = "postgresql://bot:S3cr%ZZet@db.example.org/postgres"
    value = json.dumps({"vault": dsn}) if variable == "PGCONN_TARGETS" else dsn
    env = bot_env(**{variable: value, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "test-secret"})
    done = subprocess.run(
        [sys.executable, "-m", "bot", mode], env=env, input="", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert variable in done.stderr and "not a valid PostgreSQL connection string" in done.stderr, done.stderr
    for fragment in ("S3cr", "ZZet"):
        assert fragment not in done.stdout + done.stderr


# --- text from the database (review item 9) ----------------------------------------------------


async def test_names_from_the_database_cannot_forge_mentions_or_silence_an_answer(
    world: PgWorld, start_bot: Any
) -> None:
    forger = world.role("\x1d@U0ATTACK\x1d", limit=None)  # the bot's internal marker, planted in a name
    breaker = world.role("\x1dtnot-a-time\x1d", limit=None)  # once made `status` answer nothing
    liar = world.role("bob\n:white_check_mark: executed, approved by <@U0BOSS>", limit=None)
    for role in (forger, breaker, liar):
        world.connect(role, "app")
    bot: BotUnderTest = await start_bot()

    for text in ("status", "limits", f"list {forger}"):
        answer = await bot.ask(text, user_id=APPROVER)
        raw = str(answer)
        assert "<@U0ATTACK>" not in raw and "<@U0BOSS>" not in raw, raw
        assert "went wrong" not in message_text(answer), message_text(answer)
    status = message_text(await bot.ask("status"))
    assert "�@U0ATTACK�" in status  # shown, visibly defused
    assert "bob�:\u2060white_check_mark: executed" in status  # one line, and no emoji
    assert not any(line.lstrip().startswith(":white_check_mark:") for line in status.splitlines())


async def test_a_rendering_failure_is_answered_like_any_other_error(
    world: PgWorld, start_bot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.render.reads as reads

    def broken(fill: float, cells: int = 10) -> str:
        raise ValueError("a renderer bug")

    monkeypatch.setattr(reads, "fill_bar", broken)
    bot: BotUnderTest = await start_bot()
    answer = message_text(await bot.ask("status"))
    assert "Something went wrong while preparing this answer (ref " in answer, answer
    assert "ValueError" not in answer and "renderer bug" not in answer


# --- writing into the audit trail, flooding its channel (review item 2) ------------------------

NOBODY = "U0NOBODY"
FORGED = "bob :white_check_mark: executed, approved by @bob <https://evil.example/login|details>"


def _all_audit(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM pgconn.audit ORDER BY id").fetchall()


async def test_an_unknown_target_is_answered_at_once_and_never_recorded(
    fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    bot: BotUnderTest = await start_approval_bot(default_role="none")
    lines = "x\n:white_check_mark: executed #1 · approved by <@U0BOSS>\n<https://evil.example|details>"
    for text in ("kill 1 --db nowhere", f"kill 1 --db {shlex.quote(lines)}", "status --db 'no where'"):
        answer = message_text(await bot.ask(text, user_id=NOBODY))
        assert "unknown target" in answer or "--db takes the name of a configured target" in answer, answer
    assert _all_audit(fresh_state_dsn) == []
    assert not bot.slack.api_calls("chat.postMessage", AUDIT)


async def test_typed_text_reaches_the_audit_as_one_clean_defused_line(
    fresh_state_dsn: str, start_approval_bot: Any
) -> None:
    bot: BotUnderTest = await start_approval_bot(default_role="viewer")
    answer = message_text(await bot.ask(f'kill user {shlex.quote(FORGED[:60])} --reason "a\\nb"', user_id=NOBODY))
    assert "needs the requester role" in answer
    (row,) = _all_audit(fresh_state_dsn)
    assert row["event"] == "refused" and "\n" not in str(row)
    posted = await bot.slack.wait_for(lambda: bot.slack.channel_messages(AUDIT))
    raw = json.dumps(posted[0])
    assert "<https://evil" not in raw and "<@" not in raw.replace("<@U0NOBODY>", "")
    assert ":white_check_mark:" not in raw  # an emoji code in typed text is shown as text, not as an emoji
    section = posted[0]["blocks"][0]["text"]
    assert section["verbatim"] is True and "\n" not in section["text"]


async def test_a_flood_of_refusals_is_summarised_and_never_delays_real_events(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.db.requests as requests_store

    monkeypatch.setattr(requests_store, "REFUSAL_WINDOW_SECONDS", 1.5)
    bot: BotUnderTest = await start_approval_bot(default_role="viewer")
    bot.slack.delays["chat.postMessage"] = 0.1  # Slack takes its time with every post
    attackers = [f"U0ATTACK{i}" for i in range(8)]
    await asyncio.gather(*(bot.ask("kill 1 2 3", user_id=who) for who in attackers for _ in range(7)))
    await bot.slack.wait_for(lambda: bot.slack.api_calls("chat.postMessage", AUDIT), timeout=10)

    role = world.role("real")
    pid = world.pid_of(world.connect(role))
    before = len(bot.slack.api_calls("chat.postMessage", AUDIT))
    answer = message_text(await bot.ask(f"kill {pid}", user_id=REQUESTER))
    assert "sent for approval" in answer, answer

    def audit_posts() -> list[str]:
        return [str(c.payload.get("text")) for c in bot.slack.api_calls("chat.postMessage", AUDIT)]

    await bot.slack.wait_for(lambda: any("· requested" in t for t in audit_posts()), timeout=10)
    position = next(i for i, t in enumerate(audit_posts()) if "· requested" in t)
    assert position - before <= 2, audit_posts()  # at most what was already on its way

    def summaries() -> list[dict[str, Any]]:
        return [r for r in _all_audit(fresh_state_dsn) if r["event"] == "more_refused"]

    await eventually(lambda: len(summaries()) == len(attackers), timeout=10)
    rows = _all_audit(fresh_state_dsn)
    for who in attackers:
        assert len([r for r in rows if r["event"] == "refused" and r["actor"] == who]) == 5
        (summary,) = [r for r in summaries() if r["actor"] == who]
        note = note_from_json(summary["detail"])
        assert isinstance(note, RefusalsSummarised) and note.count == 2
        assert audit_note_text(note).startswith("2 more refused attempts")


async def test_one_requester_cannot_open_more_than_the_allowed_requests(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_approval_bot(max_pending_per_user=3, requesters=f"{REQUESTER},U0REQ2")
    role = world.role("many", limit=None)
    pids = [world.pid_of(world.connect(role)) for _ in range(5)]
    answers = [message_text(await bot.ask(f"kill {pid}", user_id=REQUESTER)) for pid in pids]
    assert [("sent for approval" in a) for a in answers] == [True, True, True, False, False], answers
    assert "you already have 3 open requests (#1, #2, #3)" in answers[3]
    assert "PGCONN_MAX_PENDING_PER_USER=3" in answers[3]
    # Concurrent attempts cannot slip past the cap either.
    await asyncio.gather(*(bot.ask(f"kill {pid}", user_id="U0REQ2") for pid in pids))
    with psycopg.connect(fresh_state_dsn) as conn:
        counts = dict(conn.execute("SELECT requester, count(*) FROM pgconn.request GROUP BY 1").fetchall())
    assert counts == {REQUESTER: 3, "U0REQ2": 3}


# --- a slow Slack (review item 3) --------------------------------------------------------------


async def test_a_slow_slack_never_takes_the_state_database_away(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_approval_bot(requesters=f"{REQUESTER},U0REQ2", state_pool_max_size=2)
    role = world.role("slow", limit=None)
    messages = []
    for i in range(6):
        pid = world.pid_of(world.connect(role))
        _, message = await open_request(bot, f"kill {pid}", user=REQUESTER if i < 3 else "U0REQ2")
        messages.append(message)
    bot.slack.delays["chat.update"] = 6.0  # every message update now hangs for seconds
    for message in messages:
        await bot.click(message, "Deny", APPROVER)
    await bot.slack.wait_for(lambda: len(bot.slack.api_calls("chat.update")) >= 4, timeout=10)

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with bot.session.get(bot.url + "/healthz") as health:
        assert health.status == 200
    for text in ("requests", "audit 5"):
        answer = message_text(await bot.ask(text, timeout=3))
        assert "not answering" not in answer and "went wrong" not in answer, answer
    assert loop.time() - started < 3
    with psycopg.connect(fresh_state_dsn) as conn:
        (denied,) = conn.execute("SELECT count(*) FROM pgconn.request WHERE status = 'denied'").fetchone()  # type: ignore[misc]
    assert denied == 6


# --- approvable before posted (review item 5) --------------------------------------------------


async def test_a_request_cannot_be_approved_before_it_is_posted(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_approval_bot()
    role = world.role("unposted")
    pid = world.pid_of(world.connect(role))
    bot.slack.delays["chat.postMessage"] = 1.5
    bot.slack.overrides["chat.postMessage"] = lambda p: (
        web.json_response({"ok": False, "error": "not_in_channel"}) if p.get("channel") == APPROVALS else None
    )
    asking = asyncio.create_task(bot.ask(f"kill {pid}", user_id=REQUESTER, timeout=10))
    await bot.slack.wait_for(lambda: bot.slack.api_calls("chat.postMessage", APPROVALS))

    # While it is being posted: not on App Home, and not approvable from there or the console.
    home = await _open_home(bot, APPROVER)
    assert "No pending requests" in json.dumps(home), home
    click = await _home_click(bot, APPROVER, request_id=1)
    assert "still being posted" in click, click

    answer = message_text(await asking)
    assert "could not be posted" in answer and "nothing was signalled" in answer
    assert alive(world, [pid]) == {pid}
    assert [r["event"] for r in _all_audit(fresh_state_dsn)] == ["requested", "withdrawn"]


async def test_a_request_slack_posted_despite_an_error_is_told_truthfully(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_approval_bot()
    role = world.role("lostanswer")
    pid = world.pid_of(world.connect(role))
    slack = bot.slack

    def posted_but_lost(payload: dict[str, Any]) -> web.Response | None:
        if payload.get("channel") != APPROVALS:
            return None
        blocks = payload["blocks"]
        slack.messages.setdefault(APPROVALS, {})["1700000077.000001"] = {
            **payload,
            "blocks": json.loads(blocks) if isinstance(blocks, str) else blocks,
        }
        return web.Response(status=500, text="the answer got lost")

    slack.delays["chat.postMessage"] = 1.5
    slack.overrides["chat.postMessage"] = posted_but_lost
    asking = asyncio.create_task(bot.ask(f"kill {pid}", user_id=REQUESTER, timeout=10))
    message = await wait_for_request_message(slack, APPROVALS, 1)
    del slack.overrides["chat.postMessage"]
    slack.delays.clear()
    clicked = await bot.click(message, "Approve", APPROVER)  # on the message Slack did post
    assert clicked.status == 200
    await eventually(lambda: alive(world, [pid]) == set())
    answer = message_text(await asking)
    assert "withdrawn" not in answer and "nothing was signalled" not in answer, answer
    assert "Request #1" in answer
    events = [r["event"] for r in _all_audit(fresh_state_dsn)]
    assert events[:3] == ["requested", "approved", "executed"] and "withdrawn" not in events


async def _open_home(bot: BotUnderTest, user: str) -> dict[str, Any]:
    before = len(bot.slack.api_calls("views.publish"))
    body = event_body({"type": "app_home_opened", "user": user, "tab": "home", "channel": "D0HOME"})
    async with await bot.post(body, {**sign(body), "Content-Type": "application/json"}) as response:
        assert response.status == 200
    calls = await bot.slack.wait_for(lambda: bot.slack.api_calls("views.publish")[before:] or None)
    return (
        json.loads(calls[-1].payload["view"])
        if isinstance(calls[-1].payload["view"], str)
        else calls[-1].payload["view"]
    )


async def _home_click(bot: BotUnderTest, user: str, request_id: int) -> str:
    """Approve as clicked on the App Home tab (no message, no response URL); returns the note shown."""
    payload = block_actions_payload(
        user_id=user,
        action_id="pgconn_approve",
        value=str(request_id),
        channel_id="D0HOME",
        message_ts="0",
        response_url=None,
    )
    payload["container"] = {"type": "view", "view_id": "V0HOME"}
    del payload["channel"], payload["message"]
    before = len(bot.slack.api_calls("views.publish"))
    body = form_body(payload)
    async with await bot.post(body, sign(body)) as response:
        assert response.status == 200
    calls = await bot.slack.wait_for(lambda: bot.slack.api_calls("views.publish")[before:] or None)
    return json.dumps(calls[-1].payload["view"])


# --- one bad entry blocks the rest (review item 7) ---------------------------------------------


async def test_entries_slack_refuses_are_parked_and_delivery_goes_on(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    fake_slack.overrides["chat.postMessage"] = lambda p: (
        web.json_response({"ok": False, "error": "is_archived"}) if p.get("channel") == AUDIT else None
    )
    bot: BotUnderTest = await start_approval_bot()
    role = world.role("archived")
    pids = [world.pid_of(world.connect(role)) for _ in range(2)]
    for pid in pids:
        await open_request(bot, f"kill {pid}")

    def parked() -> int:
        with psycopg.connect(fresh_state_dsn) as conn:
            row = conn.execute("SELECT count(*) FROM pgconn.audit_outbox WHERE parked_at IS NOT NULL").fetchone()
        return int(row[0]) if row else 0

    await eventually(lambda: parked() == 2)
    tries = len(fake_slack.api_calls("chat.postMessage", AUDIT))
    async with bot.session.get(bot.url + "/metrics") as response:
        await eventually(lambda: True)
        metrics = await response.text()
    assert "pgconn_audit_undeliverable" in metrics
    out = io.StringIO()
    await run_check(bot.server.settings, out)
    assert "2 audit entries could not be delivered to C0AUDIT (is_archived)" in out.getvalue(), out.getvalue()
    await asyncio.sleep(0.5)  # several housekeeping rounds: parked entries are not hammered
    assert len(fake_slack.api_calls("chat.postMessage", AUDIT)) == tries
    await bot.server.stop()

    # A new audit channel: everything still waiting goes there, in order.
    del fake_slack.overrides["chat.postMessage"]
    await start_approval_bot(audit_channel="C0AUDIT2")
    await fake_slack.wait_for(lambda: len(fake_slack.channel_messages("C0AUDIT2")) == 2, timeout=10)
    texts = [message_text(m) for m in fake_slack.channel_messages("C0AUDIT2")]
    assert "#1 · requested" in texts[0] and "#2 · requested" in texts[1]


async def test_an_entry_slack_will_never_take_does_not_hold_up_the_next(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    def refuse_the_first(payload: dict[str, Any]) -> web.Response | None:
        if payload.get("channel") == AUDIT and "#1 · requested" in str(payload.get("text")):
            return web.json_response({"ok": False, "error": "msg_too_long"})
        return None

    fake_slack.overrides["chat.postMessage"] = refuse_the_first
    bot: BotUnderTest = await start_approval_bot()
    role = world.role("toolong")
    for _ in range(2):
        await open_request(bot, f"kill {world.pid_of(world.connect(role))}")
    await fake_slack.wait_for(
        lambda: any("#2 · requested" in message_text(m) for m in fake_slack.channel_messages(AUDIT)), timeout=10
    )
    with psycopg.connect(fresh_state_dsn) as conn:
        rows = conn.execute(
            "SELECT audit_id, last_error FROM pgconn.audit_outbox WHERE parked_at IS NOT NULL"
        ).fetchall()
    assert rows == [(1, "msg_too_long")]


# --- query text shown to everyone (review item 4) ----------------------------------------------

SECRET_SQL = "ALTER ROLE pgct_someone PASSWORD 'hunter2-in-the-query'"


@pytest.mark.parametrize("mode", ["approvers", "everyone", "nobody"])
async def test_sql_text_is_shown_only_as_pgconn_show_queries_says(
    world: PgWorld, fresh_state_dsn: str, start_bot: Any, mode: str
) -> None:
    role = world.role("dba", limit=None)
    conn = world.connect(role, "psql")
    statement = f"SELECT pg_catalog.pg_sleep(30) /* {SECRET_SQL} */"
    _sleep_in_background_with(conn, statement)
    settings: dict[str, Any] = {"approvers": APPROVER, "alert_channel": ALERTS, "state_url": fresh_state_dsn}
    settings.update(alert_long_query_seconds=0, show_queries=mode)
    bot: BotUnderTest = await start_bot(**settings)
    await eventually(lambda: _active(world, conn.info.backend_pid))

    for user in ("U0VIEWER", APPROVER):
        status = message_text(await bot.ask("status", user_id=user))
        shown = mode == "everyone" or (mode == "approvers" and user == APPROVER)
        assert ("hunter2" in status) is shown, (mode, user, status)
        if not shown:
            assert f"SELECT … ({len(statement)} chars)" in status, status

    assert await bot.server.runtime.monitor.run_cycle()
    posts = await bot.slack.wait_for(
        lambda: [m for m in bot.slack.channel_messages(ALERTS) if "long-running query" in message_text(m)]
    )
    alert_text = message_text(posts[0])
    assert ("hunter2" in alert_text) is (mode == "everyone"), alert_text  # a channel post
    with psycopg.connect(fresh_state_dsn) as state:
        stored = json.dumps(state.execute("SELECT details FROM pgconn.alert").fetchall())
    assert ("hunter2" in stored) is (mode == "everyone")


def _sleep_in_background_with(conn: psycopg.Connection[Any], statement: str) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(psycopg.Error):
            conn.execute(statement)  # type: ignore[arg-type]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _active(world: PgWorld, pid: int) -> bool:
    row = world.admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "active"


async def test_health_reflects_the_database_not_a_busy_pool(fresh_state_dsn: str, start_approval_bot: Any) -> None:
    bot: BotUnderTest = await start_approval_bot(state_pool_max_size=1)
    pool = bot.server.runtime.state.pool
    # every state connection is taken (by slow work, say)
    async with pool.connection(), bot.session.get(bot.url + "/healthz") as health:
        assert health.status == 200, await health.text()


# --- stale approvers (review item 6) -----------------------------------------------------------


async def test_an_approver_group_slack_cannot_confirm_stops_granting_within_minutes(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.core.policy as policy

    # Two minutes in production; a second here (the rule, not the number, is under test).
    monkeypatch.setattr(policy, "GROUP_CACHE_SECONDS", 0.2)
    monkeypatch.setattr(policy, "FAILED_LOOKUP_SECONDS", 0.1)
    monkeypatch.setattr(policy, "MAX_UNCONFIRMED_SECONDS", 1.0)
    bot: BotUnderTest = await start_approval_bot(approvers="S0DBAS")
    bot.slack.usergroups = {"S0DBAS": [APPROVER]}
    role = world.role("stale", limit=None)
    first, second = (world.pid_of(world.connect(role)) for _ in range(2))

    _, message = await open_request(bot, f"kill {first}")
    await bot.click(message, "Approve", APPROVER)
    await eventually(lambda: alive(world, [first]) == set())

    # The approver is removed from the group, and Slack stops answering the lookup.
    bot.slack.overrides["usergroups.users.list"] = lambda p: web.json_response({"ok": False, "error": "fatal_error"})
    _, message = await open_request(bot, f"kill {second}")
    service_policy = bot.server.runtime.service._policy

    async def unconfirmed() -> bool:
        return bool((await service_policy.standing(policy.Identity(APPROVER))).unconfirmed)

    await eventually_true(unconfirmed)
    answer = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER))
    assert "only approvers can approve" in answer and "could not be confirmed with Slack" in answer, answer
    assert alive(world, [second]) == {second}

    del bot.slack.overrides["usergroups.users.list"]  # Slack answers again: the group counts again

    async def confirmed() -> bool:
        return not await unconfirmed()

    await eventually_true(confirmed)
    await bot.click(message, "Approve", APPROVER)
    await eventually(lambda: alive(world, [second]) == set())


# --- gaps in "protected" (review item 8) -------------------------------------------------------


def _grant(world: PgWorld, role: str, member: str) -> None:
    world.admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member)))


def _group(world: PgWorld, suffix: str, *, superuser: bool = False) -> str:
    name = world.role(suffix, limit=None, superuser=superuser)
    world.admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))
    return name


@pytest.mark.parametrize("via", ["superuser", "protected"])
async def test_members_of_superuser_and_protected_roles_are_never_signalled(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld, via: str
) -> None:
    group = _group(world, "root" if via == "superuser" else "staff", superuser=via == "superuser")
    inner = _group(world, "inner")  # membership counts transitively
    _grant(world, group, inner)
    member = world.role("sneaky", limit=None)
    _grant(world, inner, member)
    conn = world.connect(member, "psql")
    if via == "superuser":
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(group)))  # as a superuser now
    bot: BotUnderTest = await start_approval_bot(protected_roles=group if via == "protected" else "")

    for text in (f"kill {world.pid_of(conn)}", f"kill user {member}"):
        answer = message_text(await bot.ask(text, user_id=REQUESTER))
        assert "Nothing was requested" in answer and f"a member of {via} role {group}" in answer, answer

    # Not a member when asked, a member by the time it is approved: checked again as it is signalled.
    later = world.role("later", limit=None)
    victim = world.connect(later, "psql")
    _, message = await open_request(bot, f"kill {world.pid_of(victim)}")
    _grant(world, inner, later)
    await bot.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(bot.slack, message, lambda m: not m.buttons())
    assert "protected now, not signalled" in done.text, done.text
    assert alive(world, [world.pid_of(victim), world.pid_of(conn)]) == {world.pid_of(victim), world.pid_of(conn)}


async def test_the_bots_own_connections_under_another_login_are_never_signalled(start_bot: Any, world: PgWorld) -> None:
    state_login = world.role("botstate", limit=None)
    database = f"pgct_{world.tag}_botstate"
    world.admin.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(state_login))
    )
    world.databases.append(database)
    bot: BotUnderTest = await start_bot(
        state_url=world.dsn_for(state_login, database),
        requesters=REQUESTER,
        approvers=APPROVER,
        approval_channel=APPROVALS,
        alert_channel=ALERTS,
    )
    assert await bot.server.runtime.monitor.run_cycle()
    rows = world.admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE usename = %s ORDER BY pid", (state_login,)
    ).fetchall()
    own = [pid for (pid,) in rows]
    assert own, own  # the state pool's
    for text in (f"kill {own[0]}", f"kill {' '.join(map(str, own))}", f"kill user {state_login}", f"cancel {own[-1]}"):
        answer = message_text(await bot.ask(text, user_id=REQUESTER))
        assert "Nothing was requested" in answer and "pgconn-bot's own connection" in answer, (text, answer)
    assert alive(world, own) == set(own)


# --- the Slack surface (review item 12) --------------------------------------------------------


async def test_app_home_lists_several_requests_with_unique_block_ids_and_escaped_text(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_approval_bot()
    role = world.role("home", limit=None)
    for _ in range(3):
        await open_request(bot, f"kill {world.pid_of(world.connect(role))}")
    for user in (APPROVER, REQUESTER):
        view = await _open_home(bot, user)
        ids = [block["block_id"] for block in view["blocks"] if "block_id" in block]
        assert len(ids) == len(set(ids)), ids  # Slack rejects a view with a repeated block_id
        raw = json.dumps(view)
        assert "<role>" not in raw and "<pid>" not in raw, raw
    assert "&lt;role&gt;" in json.dumps(await _open_home(bot, REQUESTER))
    approver_view = await _open_home(bot, APPROVER)
    assert len([b for b in approver_view["blocks"] if b.get("type") == "actions"]) == 3


async def test_app_rate_limited_is_acknowledged(bot: BotUnderTest) -> None:
    body = json.dumps(
        {
            "token": "x",
            "type": "app_rate_limited",
            "team_id": "T0TEST01",
            "minute_rate_limited": 1518467820,
            "api_app_id": "A0TEST01",
        }
    )
    async with await bot.post(body, {**sign(body), "Content-Type": "application/json"}) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    ("team", "enterprise"),
    [("T0OTHER", None), ("T0TEST01", "E0OTHER"), ("", None), ("user-only", None)],
    ids=["team", "org", "none", "a guest from another workspace"],
)
async def test_requests_from_another_workspace_or_org_are_refused(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld, team: str, enterprise: str | None
) -> None:
    bot: BotUnderTest = await start_approval_bot()
    role = world.role("foreign", limit=None)
    pid = world.pid_of(world.connect(role))
    _, message = await open_request(bot, f"kill {pid}")

    def foreign(fields: dict[str, Any]) -> dict[str, Any]:
        fields = {**fields, "team_id": "T0OTHER" if team == "user-only" else team}
        if enterprise:
            fields["enterprise_id"] = enterprise
        return fields

    url = bot.slack.new_response_url()
    command = urlencode(foreign(slash_command_fields("status", user_id=APPROVER, response_url=url)))
    async with await bot.post(command, sign(command)) as response:
        assert response.status == 403

    click = block_actions_payload(
        user_id=APPROVER,
        action_id="pgconn_approve",
        value="1",
        channel_id=APPROVALS,
        message_ts=message.ts,
        response_url=bot.slack.new_response_url(),
    )
    if team == "user-only":  # the click happens in our workspace, by a user of another one
        click["user"]["team_id"] = "T0OTHER"
    else:
        click["team"] = {"id": team, "domain": "elsewhere"}
        click["user"]["team_id"] = team
    if enterprise:
        click["enterprise"] = {"id": enterprise, "name": "elsewhere"}
    body = form_body(click)
    async with await bot.post(body, sign(body)) as response:
        assert response.status == 403

    assert bot.slack.responses_to(url) == []
    assert alive(world, [pid]) == {pid}
    answer = message_text(await bot.ask("requests", user_id=APPROVER))  # our own workspace still works
    assert "#1" in answer


# --- console identity (review item 13) ---------------------------------------------------------


def test_console_actions_are_recorded_as_console_actions(world: PgWorld, pg_dsn: str, fresh_state_dsn: str) -> None:
    victim = world.role("console", limit=None)
    pid = world.pid_of(world.connect(victim))
    env = bot_env(
        PGCONN_DATABASE_URL=pg_dsn,
        PGCONN_STATE_URL=fresh_state_dsn,
        PGCONN_REQUESTERS="U0REQ",
        PGCONN_APPROVERS="U0APP",
    )
    script = f"as U0REQ\nkill {pid}\nas U0APP\napprove 1\naudit 5\n"
    done = subprocess.run(
        [sys.executable, "-m", "bot", "console"], input=script, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    origin = f"console, local user {getpass.getuser()}"
    rows = _all_audit(fresh_state_dsn)
    assert [(r["event"], r["actor"], r["origin"]) for r in rows] == [
        ("requested", "U0REQ", origin),
        ("approved", "U0APP", origin),
        ("executed", "U0APP", origin),
    ]
    assert f"approved by @U0APP · via {origin}" in done.stdout, done.stdout


async def test_health_checks_cannot_make_the_bot_open_connections(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_approval_bot(state_pool_max_size=1)
    login = world.admin.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
    database = psycopg.conninfo.conninfo_to_dict(fresh_state_dsn)["dbname"]

    def connections() -> int:
        row = world.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s AND application_name = %s",
            (database, login, "pgconn-bot"),
        ).fetchone()
        return int(row[0]) if row else 0

    async def health() -> int:
        async with bot.session.get(bot.url + "/healthz") as response:
            return response.status

    async with bot.server.runtime.state.pool.connection():  # the pool is busy
        before = connections()
        statuses = await asyncio.gather(*(health() for _ in range(30)))
        assert set(statuses) == {200}
        assert connections() <= before + 1  # at most the one connection kept aside


# --- found in review: requests that cannot be posted, a hostile Retry-After, stale approvals ----


async def test_requests_that_cannot_be_posted_cannot_flood_the_audit_either(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    # No approval channel configured, and the command typed where the bot cannot post.
    bot: BotUnderTest = await start_approval_bot(approval_channel=None)
    bot.slack.overrides["chat.postMessage"] = lambda p: (
        web.json_response({"ok": False, "error": "channel_not_found"}) if p.get("channel") == "C0SECRET" else None
    )
    pid = world.pid_of(world.connect(world.role("own", limit=None)))
    answers = [message_text(await bot.ask(f"kill {pid}", user_id=REQUESTER, channel_id="C0SECRET")) for _ in range(12)]
    assert sum("could not be posted" in a for a in answers) == 10, answers
    assert all("in the last minute" in a for a in answers[10:]), answers[10:]
    events = [r["event"] for r in _all_audit(fresh_state_dsn)]
    assert events.count("requested") == 10 and events.count("withdrawn") == 10


async def test_a_hostile_retry_after_never_stalls_anything(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    forever = {"Retry-After": "100000000"}
    bot: BotUnderTest = await start_approval_bot()
    bot.slack.overrides["chat.postMessage"] = lambda p: web.json_response(
        {"ok": False, "error": "ratelimited"}, status=429, headers=forever
    )
    pid = world.pid_of(world.connect(world.role("ratelimited", limit=None)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = message_text(await bot.ask(f"kill {pid}", user_id=REQUESTER, timeout=10))
    assert "could not be posted for approval (ratelimited)" in answer, answer  # no sleeping on it
    assert loop.time() - started < 5
    await bot.slack.wait_for(lambda: bot.slack.api_calls("chat.postMessage", AUDIT))
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        await eventually(
            lambda: (
                conn.execute("SELECT last_error FROM pgconn.audit_outbox WHERE audit_id = 1").fetchone()
                == ("ratelimited",)
            )
        )
        (wait,) = conn.execute(  # type: ignore[misc]
            "SELECT extract(epoch FROM next_attempt - now()) FROM pgconn.audit_outbox WHERE audit_id = 1"
        ).fetchone()
    assert wait <= 300  # at most five minutes, whatever Retry-After said


async def test_an_earlier_approval_by_someone_no_longer_an_approver_does_not_count(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_approval_bot(approvers="S0DBAS", required_approvals=2)
    bot.slack.usergroups = {"S0DBAS": [APPROVER, "U0APP2", "U0APP3"]}
    pid = world.pid_of(world.connect(world.role("twokeys", limit=None)))
    _, message = await open_request(bot, f"kill {pid}")
    first = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER))
    assert "1 of 2" in first

    bot.slack.usergroups = {"S0DBAS": ["U0APP2", "U0APP3"]}  # the first approver is removed
    bot.server.runtime.service._policy._groups._cache.clear()  # (what the cache does a minute later)
    second = await ephemeral_answer(bot, await bot.click(message, "Approve", "U0APP2"))
    assert "1 of 2" in second, second  # only U0APP2's approval counts now
    assert alive(world, [pid]) == {pid}
    await bot.click(message, "Approve", "U0APP3")
    await eventually(lambda: alive(world, [pid]) == set())


async def test_a_decided_request_message_is_never_given_up_after_a_long_outage(
    fresh_state_dsn: str, start_approval_bot: Any, world: PgWorld
) -> None:
    bot: BotUnderTest = await start_approval_bot()
    pid = world.pid_of(world.connect(world.role("outage", limit=None)))
    request_id, message = await open_request(bot, f"kill {pid}")
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        # Denied on the console while Slack was down for hours: many failed updates behind it.
        conn.execute(
            "UPDATE pgconn.request SET status = 'denied', decided_by = 'U0APP', decided_at = now(), "
            "sync_attempts = 40, sync_after = now() WHERE id = %s",
            (request_id,),
        )
    done = await wait_for_message_state(bot.slack, message, lambda m: not m.buttons(), timeout=10)
    assert "Denied" in done.text
