"""Self-service over signed HTTP: a student locked out at their role's limit links their Slack
user to the role once (by logging in with a one-time code) and then frees their own idle
sessions with one command or one button, with no instructor; everything audited."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg

from tests.conftest import PgWorld
from tests.e2e.conftest import (
    APPROVALS,
    APPROVER,
    AUDIT,
    BotUnderTest,
    alive,
    eventually,
    message_text,
    posted_messages,
    wait_for_message_state,
    wait_for_request_message,
)
from tests.support.slack_requests import block_actions_body, sign

STUDENT, OTHER = "U0STUDENT", "U0OTHER"
CODE = re.compile(r"pgconn-link-([2-9A-Z]{4}-[2-9A-Z]{4})")


async def start(start_approval_bot: Any, **overrides: Any) -> BotUnderTest:
    # A student has no role in the bot at all (unless a test says otherwise): self-service needs none.
    settings: dict[str, Any] = {"default_role": "none"} | overrides
    return await start_approval_bot(**settings)  # type: ignore[no-any-return]


async def link_by_login(bot: BotUnderTest, world: PgWorld, role: str, user: str = STUDENT) -> None:
    answer = message_text(await bot.ask(f"link {role}", user_id=user))
    found = CODE.search(answer)
    assert found, answer
    assert f"user={role}" in answer and "application_name=pgconn-link-" in answer, answer
    proof = world.connect(role, f"pgconn-link-{found.group(1)}")
    dm = await bot.slack.wait_for(lambda: bot.slack.channel_messages(user), timeout=10)
    assert f"you own role {role}" in message_text(dm[-1]), dm
    proof.close()


async def test_a_locked_out_student_links_once_then_frees_their_sessions(
    world: PgWorld, start_approval_bot: Any, fresh_state_dsn: str
) -> None:
    bob = world.role("bob", limit=3)
    bot = await start(start_approval_bot, self_service="auto", default_role="viewer")
    await link_by_login(bot, world, bob)

    idle = [world.pid_of(world.connect(bob, "DBeaver")) for _ in range(3)]  # 3/3: locked out
    limit = message_text(await bot.ask(f"limit {bob}", user_id=STUDENT))
    assert "3/3 — at limit" in limit and "free ends its idle sessions" in limit, limit

    freed = message_text(await bot.ask("free", user_id=STUDENT))
    assert "Freed: 3 idle sessions of yours ended" in freed, freed
    assert all(f"{pid} terminated" in freed for pid in idle), freed
    await eventually(lambda: not alive(world, idle))
    world.connect(bob, "psql")  # in again

    def audited() -> list[str]:
        return [message_text(m) for m in bot.slack.channel_messages(AUDIT)]

    await bot.slack.wait_for(lambda: any(" executed " in t for t in audited()), timeout=10)
    assert any(" linked " in t and f"role {bob}" in t and "proved a login" in t for t in audited()), audited()
    assert any(" self_service " in t and "no approver needed" in t for t in audited()), audited()
    executed = next(t for t in audited() if " executed " in t)
    assert all(f"{pid} terminated" in executed for pid in idle), executed
    with psycopg.connect(fresh_state_dsn) as conn:
        events = [r[0] for r in conn.execute("SELECT event FROM pgconn.audit ORDER BY id")]
    assert events == ["linked", "requested", "self_service", "executed"], events


async def test_the_free_button_on_mine(world: PgWorld, start_approval_bot: Any) -> None:
    bob, alice = world.role("bob", limit=2), world.role("alice", limit=2)
    owners = json.dumps({STUDENT: [bob]})
    bot = await start(start_approval_bot, self_service="auto", role_owners=owners)
    idle = world.pid_of(world.connect(bob, "notebook"))
    running = world.connect(bob, "psql")
    someone_else = world.pid_of(world.connect(alice, "DBeaver"))

    answer = await bot.ask("mine", user_id=STUDENT)
    text = message_text(answer)
    assert bob in text and alice not in text and str(idle) in text, text
    button = next(
        e
        for b in answer["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if "Free my idle" in e["text"]["text"]
    )

    import threading

    busy = threading.Thread(target=lambda: running.execute("SELECT pg_sleep(3)"), daemon=True)
    busy.start()
    await eventually(
        lambda: (
            world.admin.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (world.pid_of(running),)
            ).fetchone()
            == ("active",)
        )
    )
    response_url = bot.slack.new_response_url()
    body = block_actions_body(
        user_id=STUDENT,
        action_id=button["action_id"],
        value=button["value"],
        channel_id="C0TEST01",
        message_ts="1700000000.000001",
        response_url=response_url,
    )
    async with await bot.post(body, sign(body)) as response:
        assert response.status == 200
    said = message_text(await bot.slack.wait_for_response(response_url))
    assert "Freed: 1 idle session of yours ended" in said and f"{idle} terminated" in said, said
    assert "1 active session left alone" in said, said
    await eventually(lambda: not alive(world, [idle]))
    assert alive(world, [someone_else, world.pid_of(running)]) == {someone_else, world.pid_of(running)}
    busy.join(timeout=10)

    # Someone who owns nothing clicking the same button: refused, nothing ended.
    response_url = bot.slack.new_response_url()
    body = block_actions_body(
        user_id=OTHER,
        action_id=button["action_id"],
        value=button["value"],
        channel_id="C0TEST01",
        message_ts="1700000000.000001",
        response_url=response_url,
    )
    async with await bot.post(body, sign(body)) as response:
        assert response.status == 200
    assert "you own no database role" in message_text(await bot.slack.wait_for_response(response_url))
    assert alive(world, [someone_else]) == {someone_else}


async def test_free_asks_an_approver_by_default(world: PgWorld, start_approval_bot: Any) -> None:
    bob = world.role("bob", limit=2)
    bot = await start(start_approval_bot, role_owners=json.dumps({STUDENT: [bob]}))
    pids = [world.pid_of(world.connect(bob, "DBeaver")) for _ in range(2)]

    answer = message_text(await bot.ask("free", user_id=STUDENT))
    assert "sent for approval" in answer, answer
    request_id = int(re.search(r"Request #(\d+)", answer).group(1))  # type: ignore[union-attr]
    message = await wait_for_request_message(bot.slack, APPROVALS, request_id)
    assert f"@{STUDENT}" in message.text or STUDENT in json.dumps(message.payload)
    assert alive(world, pids) == set(pids)  # nothing before the approval

    await bot.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(bot.slack, message, lambda m: not m.buttons())
    assert "2 terminated" in done.text, done.text
    await eventually(lambda: not alive(world, pids))


async def test_free_is_refused_when_self_service_is_off_and_for_non_owners(
    world: PgWorld, start_approval_bot: Any
) -> None:
    bob = world.role("bob", limit=2)
    pid = world.pid_of(world.connect(bob, "DBeaver"))
    bot = await start(start_approval_bot, self_service="off", role_owners=json.dumps({STUDENT: [bob]}))
    assert "Self-service is turned off here" in message_text(await bot.ask("free", user_id=STUDENT))
    assert "you own no database role" in message_text(await bot.ask("free", user_id=OTHER))
    assert "you own no database role" in message_text(await bot.ask("mine", user_id=OTHER))
    assert alive(world, [pid]) == {pid}


async def test_codes_link_only_their_own_user_and_role(world: PgWorld, start_approval_bot: Any) -> None:
    bob, eve = world.role("bob", limit=5), world.role("eve", limit=5)
    bot = await start(start_approval_bot)
    answer = message_text(await bot.ask(f"link {bob}", user_id=STUDENT))
    code = CODE.search(answer).group(1)  # type: ignore[union-attr]

    world.connect(eve, f"pgconn-link-{code}")  # the code on another role's session
    world.connect(bob, "pgconn-link-ZZZZ-ZZZZ")  # a code nobody was given
    await bot.server.runtime.link_watcher.run_once()  # type: ignore[union-attr]
    who = message_text(await bot.ask("whoami", user_id=STUDENT))
    assert "You own no database role" in who and "Waiting for a login as" in who, who
    assert "You own no database role" in message_text(await bot.ask("whoami", user_id=OTHER))

    world.connect(bob, f"pgconn-link-{code}")
    await bot.slack.wait_for(lambda: bot.slack.channel_messages(STUDENT), timeout=10)
    assert f"You own: {bob}" in message_text(await bot.ask("whoami", user_id=STUDENT))
    assert "You own no database role" in message_text(await bot.ask("whoami", user_id=OTHER))


async def test_approvers_link_and_unlink_with_a_mention_and_the_alert_names_owners(
    world: PgWorld, start_approval_bot: Any
) -> None:
    bob = world.role("bob", limit=1)
    bot = await start(start_approval_bot, alert_channel="C0ALERTS", monitor_interval=3600)
    refused = message_text(await bot.ask(f"link {bob} <@{OTHER}|other>", user_id=STUDENT))
    assert "Only approvers link or unlink someone else" in refused, refused

    linked = message_text(await bot.ask(f"link {bob} <@{STUDENT}|student>", user_id=APPROVER))
    assert f"<@{STUDENT}> owns role {bob} now" in linked, linked
    world.connect(bob, "DBeaver")  # 1/1
    assert await bot.server.runtime.monitor.run_cycle()
    alert = await bot.slack.wait_for(lambda: bot.slack.channel_messages("C0ALERTS"), timeout=10)
    assert f"<@{STUDENT}>" in json.dumps(alert[-1]), alert[-1]

    assert "You no longer own role" in message_text(await bot.ask(f"unlink {bob}", user_id=STUDENT))
    assert "You own no database role" in message_text(await bot.ask("whoami", user_id=STUDENT))
    assert not posted_messages(bot.slack, APPROVALS)
