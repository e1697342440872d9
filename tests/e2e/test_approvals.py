"""kill/cancel → approval message → clicks → execution → updated message → audit, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import psycopg
from aiohttp import web

from tests.conftest import PgWorld
from tests.e2e.conftest import (
    APPROVALS,
    APPROVER,
    APPROVER2,
    AUDIT,
    ORIGIN,
    REQUESTER,
    VIEWER,
    Posted,
    alive,
    audit_rows,
    ephemeral_answer,
    eventually,
    message_text,
    no_buttons,
    open_request,
    request_id_of,
    wait_for_message_state,
    wait_for_request_message,
)
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import block_actions_body, sign


async def test_full_flow_only_an_approver_executes_and_everything_is_on_record(
    start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_flow", limit=2)
    pids = [world.pid_of(world.connect(role, "stray-notebook")) for _ in range(2)]

    request_id, message = await open_request(bot, f'kill user {role} --reason "locked out before the exam"')
    text = message.text
    assert f"terminate all 2 sessions of {role}" in text
    for expected in ("<@U0REQ>", "locked out before the exam", "2/2", "stray-notebook", f"Request #{request_id}"):
        assert expected in text, expected
    assert {"Approve", "Deny"} <= set(message.buttons())
    approve = next(b for b in message.payload["blocks"] if b["type"] == "actions")["elements"][0]
    assert approve["style"] == "primary" and "terminate" in approve["confirm"]["text"]["text"]
    assert message.button("Approve")[1] == str(request_id)  # the id only

    refused = await ephemeral_answer(bot, await bot.click(message, "Approve", VIEWER))
    assert "only approvers" in refused
    own = await ephemeral_answer(bot, await bot.click(message, "Approve", REQUESTER))
    assert "only approvers" in own  # a TA asks; a TA cannot approve
    assert alive(world, pids) == set(pids)

    clicked = await bot.click(message, "Approve", APPROVER)
    assert clicked.status == 200 and clicked.ack_seconds < 1.0
    done = await wait_for_message_state(bot.slack, message, no_buttons)
    assert "terminated" in done.text and "<@U0APP>" in done.text
    assert alive(world, pids) == set()

    executed = [row for row in audit_rows(fresh_state_dsn, request_id) if row["event"] == "executed"]
    assert len(executed) == 1
    assert executed[0]["requester"] == REQUESTER and executed[0]["approvers"] == [APPROVER]
    assert sorted(executed[0]["pids"]) == sorted(pids) and executed[0]["role_name"] == role

    def delivered_executed() -> list[str]:
        texts = [message_text(m) for m in bot.slack.channel_messages(AUDIT)]
        return [t for t in texts if f"#{request_id}" in t and "executed" in t]

    (entry,) = await bot.slack.wait_for(delivered_executed)
    for expected in ("terminate", role, str(pids[0]), "U0REQ", "U0APP", "terminated"):
        assert expected in entry
    # The requester hears the outcome directly.
    await bot.slack.wait_for(lambda: bot.slack.api_calls("chat.postMessage", REQUESTER))


async def test_an_approver_cannot_approve_their_own_request_unless_allowed(
    start_approval_bot: Any, world: PgWorld
) -> None:
    bot = await start_approval_bot()
    role = world.role("dba_self")
    pid = world.pid_of(world.connect(role))
    _, message = await open_request(bot, f"kill {pid}", user=APPROVER)
    own = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER))
    assert "another approver has to approve it" in own
    assert alive(world, [pid]) == {pid}

    relaxed = await start_approval_bot(allow_self_approval=True)
    _, message = await open_request(relaxed, f"kill {pid}", user=APPROVER)
    await relaxed.click(message, "Approve", APPROVER)
    await wait_for_message_state(relaxed.slack, message, no_buttons)
    assert alive(world, [pid]) == set()


async def test_deny_leaves_sessions_alone(start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_deny")
    pid = world.pid_of(world.connect(role))
    request_id, message = await open_request(bot, f"kill {pid}")
    clicked = await bot.click(message, "Deny", APPROVER)
    assert clicked.status == 200
    done = await wait_for_message_state(bot.slack, message, no_buttons)
    assert "Denied by <@U0APP>" in done.text
    assert alive(world, [pid]) == {pid}
    assert [r["event"] for r in audit_rows(fresh_state_dsn, request_id)] == ["requested", "denied"]
    late = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER2))
    assert "already denied by <@U0APP>" in late


async def test_expired_request_is_updated_and_cannot_be_approved(
    start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_expire")
    pid = world.pid_of(world.connect(role))
    request_id, message = await open_request(bot, f"kill {pid}")
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgconn.request SET expires_at = now() - interval '1 second' WHERE id = %s", (request_id,))
    done = await wait_for_message_state(bot.slack, message, no_buttons)  # the housekeeper expires it
    assert "Expired" in done.text
    late = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER))
    assert "expired" in late
    assert alive(world, [pid]) == {pid}
    assert [r["event"] for r in audit_rows(fresh_state_dsn, request_id)] == ["requested", "expired"]


async def test_click_after_ttl_expires_it_on_the_spot(start_approval_bot: Any, world: PgWorld) -> None:
    bot = await start_approval_bot(approval_ttl=1)
    bot.server.runtime.housekeeper._interval = 3600  # only the click may notice
    role = world.role("ta_ttl")
    pid = world.pid_of(world.connect(role))
    _, message = await open_request(bot, f"kill {pid}")
    await asyncio.sleep(1.1)  # the TTL itself is what is under test
    late = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER))
    assert "expired" in late
    await wait_for_message_state(bot.slack, message, no_buttons)
    assert alive(world, [pid]) == {pid}


async def test_two_of_two_approvals(start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bot = await start_approval_bot(required_approvals=2)
    role = world.role("ta_two")
    pid = world.pid_of(world.connect(role))
    request_id, message = await open_request(bot, f"kill {pid}")
    first = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER))
    assert "1 of 2" in first
    partly = await wait_for_message_state(bot.slack, message, lambda m: "approved so far by <@U0APP>" in m.text)
    assert partly.buttons()
    again = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER))
    assert "already approved" in again
    assert alive(world, [pid]) == {pid}
    await bot.click(message, "Approve", APPROVER2)
    done = await wait_for_message_state(bot.slack, message, no_buttons)
    assert "<@U0APP>" in done.text and "<@U0APP2>" in done.text and "terminated" in done.text
    assert alive(world, [pid]) == set()
    events = [r["event"] for r in audit_rows(fresh_state_dsn, request_id)]
    assert events == ["requested", "approval", "approved", "executed"]


async def test_viewer_cannot_request(start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_viewer")
    pid = world.pid_of(world.connect(role))
    answer = await bot.ask(f"kill {pid}", user_id=VIEWER)
    assert "needs the requester role" in message_text(answer)
    assert bot.slack.api_calls("chat.postMessage", APPROVALS) == []
    with psycopg.connect(fresh_state_dsn) as conn:
        (refused,) = conn.execute("SELECT actor, event FROM pgconn.audit").fetchall()
    assert refused == (VIEWER, "refused")
    assert alive(world, [pid]) == {pid}


async def test_protected_targets_are_refused_at_once(start_approval_bot: Any, world: PgWorld) -> None:
    bot = await start_approval_bot(protected_roles="pgct_never")
    boss = world.role("boss", superuser=True, limit=None)
    boss_pid = world.pid_of(world.connect(boss))
    answer = message_text(await bot.ask(f"kill {boss_pid}", user_id=REQUESTER))
    assert "superuser" in answer and "Nothing was requested" in answer
    answer = message_text(await bot.ask(f"kill user {boss}", user_id=REQUESTER))
    assert "superuser" in answer

    bot_pid = world.admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgconn-bot' AND datname = current_database() "
        "ORDER BY backend_start DESC LIMIT 1"
    ).fetchone()
    assert bot_pid is not None
    answer = message_text(await bot.ask(f"kill {bot_pid[0]}", user_id=REQUESTER))
    assert "pgconn-bot's own connection" in answer

    checkpointer = world.admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
    ).fetchone()
    assert checkpointer is not None
    answer = message_text(await bot.ask(f"cancel {checkpointer[0]}", user_id=REQUESTER))
    assert "checkpointer, not a client session" in answer

    answer = message_text(await bot.ask("kill 999999", user_id=REQUESTER))
    assert "pid 999999 is not a session" in answer
    assert bot.slack.api_calls("chat.postMessage", APPROVALS) == []
    assert alive(world, [boss_pid]) == {boss_pid}


async def test_protected_role_setting(start_approval_bot: Any, world: PgWorld) -> None:
    role = world.role("guarded")
    bot = await start_approval_bot(protected_roles=f"{role},other")
    pid = world.pid_of(world.connect(role))
    answer = message_text(await bot.ask(f"kill {pid}", user_id=REQUESTER))
    assert "protected role" in answer
    answer = message_text(await bot.ask(f"kill idle {role}", user_id=REQUESTER))
    assert "protected role" in answer


async def test_target_gone_before_approval(start_approval_bot: Any, world: PgWorld) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_gone")
    conn = world.connect(role)
    pid = world.pid_of(conn)
    _, message = await open_request(bot, f"kill {pid}")
    conn.close()
    await bot.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(bot.slack, message, no_buttons)
    assert "already gone" in done.text


async def test_replaced_session_is_not_signalled(start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_reuse")
    pid = world.pid_of(world.connect(role))
    request_id, message = await open_request(bot, f"kill {pid}")
    # As if the pid had been reused by a newer session: the stored start no longer matches.
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgconn.request_target SET backend_start = backend_start - interval '1 hour' WHERE request_id = %s",
            (request_id,),
        )
    await bot.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(bot.slack, message, no_buttons)
    assert "replaced by another session" in done.text
    assert alive(world, [pid]) == {pid}


async def test_simultaneous_approvals_on_two_replicas_execute_once(
    start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    first = await start_approval_bot()
    second = await start_approval_bot()
    role = world.role("ta_race")
    pids = [world.pid_of(world.connect(role)) for _ in range(3)]
    request_id, message = await open_request(first, f"kill user {role}")
    clicks = await asyncio.gather(
        first.click(message, "Approve", APPROVER),
        second.click(message, "Approve", APPROVER2),
        first.click(message, "Approve", APPROVER2),
        second.click(message, "Approve", APPROVER),
    )
    assert all(c.status == 200 for c in clicks)
    await wait_for_message_state(first.slack, message, no_buttons)

    def settled() -> bool:
        events = [r["event"] for r in audit_rows(fresh_state_dsn, request_id)]
        return "executed" in events

    await first.slack.wait_for(settled)

    # The three clicks that lost the race were each told so; the winner's answer is the message itself.
    def answered() -> list[str]:
        return [message_text(r[0]) for c in clicks if (r := first.slack.responses_to(c.response_url or ""))]

    late = await first.slack.wait_for(lambda: len(answered()) >= 3 and answered())
    assert len(late) == 3 and all("already approved" in text for text in late), late
    events = [r["event"] for r in audit_rows(fresh_state_dsn, request_id)]
    assert events.count("approved") == 1 and events.count("executed") == 1
    assert alive(world, pids) == set()


async def test_request_survives_a_restart(start_approval_bot: Any, world: PgWorld) -> None:
    before = await start_approval_bot()
    role = world.role("ta_restart")
    pid = world.pid_of(world.connect(role))
    _, message = await open_request(before, f"kill {pid}")
    await before.server.stop()

    after = await start_approval_bot()
    await after.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(after.slack, message, no_buttons)
    assert "terminated" in done.text
    assert alive(world, [pid]) == set()


async def test_click_without_response_url_is_answered_in_channel(start_approval_bot: Any, world: PgWorld) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_nourl")
    pid = world.pid_of(world.connect(role))
    _, message = await open_request(bot, f"kill {pid}")
    await bot.click(message, "Approve", VIEWER, with_response_url=False)
    (note,) = await bot.slack.wait_for(lambda: bot.slack.api_calls("chat.postEphemeral"))
    assert note.payload["user"] == VIEWER and note.payload["channel"] == APPROVALS
    assert "only approvers" in note.payload["text"]


async def test_audit_entries_survive_slack_failures_and_arrive_once(
    start_approval_bot: Any, world: PgWorld, fake_slack: FakeSlack, fresh_state_dsn: str
) -> None:
    failures = ["500", "429", "500"]

    def flaky(payload: dict[str, Any]) -> web.Response | None:
        if payload.get("channel") != AUDIT or not failures:
            return None
        kind = failures.pop(0)
        if kind == "429":
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
        return web.Response(status=500, text="internal error")

    fake_slack.overrides["chat.postMessage"] = flaky
    bot = await start_approval_bot()
    role = world.role("ta_flaky")
    pid = world.pid_of(world.connect(role))
    request_id, message = await open_request(bot, f"kill {pid}")
    await bot.click(message, "Approve", APPROVER)
    await wait_for_message_state(bot.slack, message, no_buttons)

    def delivered() -> list[str]:
        return [message_text(m) for m in fake_slack.channel_messages(AUDIT)]

    await fake_slack.wait_for(lambda: any("executed" in t for t in delivered()), timeout=15)
    texts = delivered()
    for event in ("requested", "approved", "executed"):
        assert len([t for t in texts if f"#{request_id} · {event}" in t]) == 1, (event, texts)
    assert failures == []

    def outbox_empty() -> bool:
        with psycopg.connect(fresh_state_dsn) as conn:
            row = conn.execute("SELECT count(*) FROM pgconn.audit_outbox WHERE delivered_at IS NULL").fetchone()
        return row == (0,)

    await eventually(outbox_empty)


async def test_undelivered_audit_entries_are_sent_after_a_restart(
    start_approval_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    fake_slack.overrides["chat.postMessage"] = lambda p: (
        web.Response(status=503, text="down") if p.get("channel") == AUDIT else None
    )
    before = await start_approval_bot()
    role = world.role("ta_outage")
    pid = world.pid_of(world.connect(role))
    request_id, _ = await open_request(before, f"kill {pid}")
    await fake_slack.wait_for(lambda: fake_slack.api_calls("chat.postMessage", AUDIT))
    await before.server.stop()

    del fake_slack.overrides["chat.postMessage"]
    await start_approval_bot()
    await fake_slack.wait_for(
        lambda: any(f"#{request_id} · requested" in message_text(m) for m in fake_slack.channel_messages(AUDIT)),
        timeout=10,
    )


async def test_request_that_cannot_be_posted_is_withdrawn(
    start_approval_bot: Any, world: PgWorld, fake_slack: FakeSlack, fresh_state_dsn: str
) -> None:
    fake_slack.overrides["chat.postMessage"] = lambda p: (
        web.json_response({"ok": False, "error": "not_in_channel"}) if p.get("channel") == APPROVALS else None
    )
    bot = await start_approval_bot()
    role = world.role("ta_nochan")
    pid = world.pid_of(world.connect(role))
    answer = message_text(await bot.ask(f"kill {pid}", user_id=REQUESTER))
    assert "could not be posted" in answer and "/invite" in answer
    with psycopg.connect(fresh_state_dsn) as conn:
        (status,) = conn.execute("SELECT status FROM pgconn.request").fetchone()  # type: ignore[misc]
    assert status == "withdrawn"


async def test_requests_and_audit_commands(start_approval_bot: Any, world: PgWorld) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_lists")
    pid = world.pid_of(world.connect(role))
    request_id, _ = await open_request(bot, f'kill {pid} --reason "runaway"')
    pending = message_text(await bot.ask("requests"))
    assert f"#{request_id}" in pending and f"terminate pid {pid}" in pending
    audit = message_text(await bot.ask("audit 5"))
    assert f"#{request_id}" in audit and "requested" in audit and "runaway" in audit


async def test_approval_channel_defaults_to_the_command_channel(start_approval_bot: Any, world: PgWorld) -> None:
    bot = await start_approval_bot(approval_channel=None)
    role = world.role("ta_here")
    pid = world.pid_of(world.connect(role))
    answer = await bot.ask(f"kill {pid}", user_id=REQUESTER)
    request_id = request_id_of(answer)
    message = await wait_for_request_message(bot.slack, ORIGIN, request_id)
    assert message.buttons()


async def test_slack_retry_of_a_click_executes_once(
    start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_retry")
    pid = world.pid_of(world.connect(role))
    request_id, message = await open_request(bot, f"kill {pid}")
    action_id, value = message.button("Approve")
    body = block_actions_body(
        user_id=APPROVER,
        action_id=action_id,
        value=value,
        channel_id=message.channel,
        message_ts=message.ts,
        response_url=bot.slack.new_response_url(),
    )
    async with await bot.post(body, sign(body)) as first:
        assert first.status == 200
    retry_headers = {**sign(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    async with await bot.post(body, retry_headers) as retry:
        assert retry.status == 200
    await wait_for_message_state(bot.slack, message, no_buttons)
    await eventually(lambda: [r["event"] for r in audit_rows(fresh_state_dsn, request_id)].count("executed") == 1)
    events = [r["event"] for r in audit_rows(fresh_state_dsn, request_id)]
    assert events.count("approved") == 1 and events.count("executed") == 1


async def test_a_message_whose_ts_was_never_stored_is_still_updated(
    start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_adopt")
    pid = world.pid_of(world.connect(role))
    request_id, message = await open_request(bot, f"kill {pid}")
    # As if the bot died between posting the message and recording where it is.
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgconn.request SET channel = NULL, message_ts = NULL WHERE id = %s", (request_id,))
    await bot.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(bot.slack, message, no_buttons)
    assert "terminated" in done.text


async def test_oversized_entries_stay_within_slack_limits_and_are_delivered(
    start_approval_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_" + "x" * 40)
    pids = [world.pid_of(world.connect(role)) for _ in range(3)]
    reason = "&<>" * 166  # 498 characters that each grow when escaped
    request_id, message = await open_request(bot, f"kill user {role} --reason '{reason}'")
    for block in message.payload["blocks"]:
        if block.get("text"):
            assert len(block["text"]["text"]) <= 3000
    assert "Waiting for 1 approval" in message.text  # where it stands survives any reason
    await bot.click(message, "Approve", APPROVER)
    await wait_for_message_state(bot.slack, message, no_buttons)
    assert alive(world, pids) == set()

    def executed_entry() -> list[dict[str, Any]]:
        return [m for m in fake_slack.channel_messages(AUDIT) if f"#{request_id} · executed" in message_text(m)]

    (entry,) = await fake_slack.wait_for(executed_entry)
    assert all(len(b["text"]["text"]) <= 3000 for b in entry["blocks"])
    assert not re.search(r"&[a-z]{0,4}…", entry["text"])  # no entity cut in half


async def test_shutdown_lets_an_approval_in_flight_finish(
    start_approval_bot: Any, world: PgWorld, fake_slack: FakeSlack, fresh_state_dsn: str
) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_sigterm")
    pids = [world.pid_of(world.connect(role)) for _ in range(3)]
    request_id, message = await open_request(bot, f"kill user {role}")
    clicked = await bot.click(message, "Approve", APPROVER)
    assert clicked.status == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bot.server.stop()  # as on SIGTERM, right after the click was acknowledged
    assert loop.time() - started < 10
    assert alive(world, pids) == set()
    assert "executed" in [r["event"] for r in audit_rows(fresh_state_dsn, request_id)]
    final = Posted(APPROVALS, message.ts, fake_slack.messages[APPROVALS][message.ts])
    assert no_buttons(final) and "terminated" in final.text
    # The last flush delivered the outbox, "executed" included.
    assert any(f"#{request_id} · executed" in message_text(m) for m in fake_slack.channel_messages(AUDIT))


async def test_a_post_answered_without_ts_still_works_through_the_click(
    start_approval_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    def without_ts(payload: dict[str, Any]) -> web.Response | None:
        if payload.get("channel") != APPROVALS:
            return None
        fake_slack.messages.setdefault(APPROVALS, {})["1700000099.000001"] = {
            **payload,
            "blocks": json.loads(payload["blocks"]) if isinstance(payload.get("blocks"), str) else payload["blocks"],
        }
        return web.json_response({"ok": True})  # a Slack stand-in that leaves the ts out

    fake_slack.overrides["chat.postMessage"] = without_ts
    bot = await start_approval_bot()
    role = world.role("ta_nots")
    pid = world.pid_of(world.connect(role))
    _, message = await open_request(bot, f"kill {pid}")
    del fake_slack.overrides["chat.postMessage"]
    await bot.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(bot.slack, message, no_buttons)
    assert "terminated" in done.text and alive(world, [pid]) == set()
