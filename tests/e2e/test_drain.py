"""`drain` and `undrain` over signed HTTP: the approval message says what will happen, the click
drains, the housekeeper undrains when the time is up and says so in the request's channel."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import PgWorld
from tests.e2e.conftest import (
    APPROVALS,
    APPROVER,
    AUDIT,
    REQUESTER,
    alive,
    eventually,
    message_text,
    open_request,
    wait_for_message_state,
)


def allows_connections(world: PgWorld, database: str) -> bool:
    row = world.admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (database,)).fetchone()
    return bool(row and row[0])


async def test_drain_over_signed_http_and_the_undrain_when_its_time_is_up(
    world: PgWorld, start_approval_bot: Any, fresh_state_dsn: str
) -> None:
    student = world.role("student", limit=None)
    work = world.database("work")
    pids = [world.pid_of(world.connect(student, "notebook", database=work)) for _ in range(3)]
    bot = await start_approval_bot()

    request_id, message = await open_request(bot, f'drain {work} --for 5m --reason "restore"')
    assert f"drain database {work}" in message.text and "3 client sessions now" in message.text, message.text
    assert "undrained after 5m" in message.text
    await bot.click(message, "Approve", APPROVER)
    done = await wait_for_message_state(bot.slack, message, lambda m: not m.buttons())
    assert "3 terminated" in done.text, done.text
    await eventually(lambda: not alive(world, pids))
    assert not allows_connections(world, work)
    assert f"DRAINED: {work}" in message_text(await bot.ask("status", user_id=REQUESTER))

    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgconn.drain SET until = now() WHERE undrained_at IS NULL")
    notice = await bot.slack.wait_for(
        lambda: [m for m in bot.slack.channel_messages(APPROVALS) if "accepts connections again" in message_text(m)],
        timeout=10,
    )
    assert "its drain time was up" in message_text(notice[0])
    assert allows_connections(world, work)
    await bot.slack.wait_for(
        lambda: any(" undrained " in message_text(m) for m in bot.slack.channel_messages(AUDIT)), timeout=10
    )
    assert request_id


async def test_undrain_at_once_and_refusals_over_http(world: PgWorld, start_approval_bot: Any) -> None:
    work = world.database("work")
    bot = await start_approval_bot()
    _, message = await open_request(bot, f"drain {work}")
    await bot.click(message, "Approve", APPROVER)
    await wait_for_message_state(bot.slack, message, lambda m: not m.buttons())
    assert not allows_connections(world, work)
    said = message_text(await bot.ask(f"undrain {work}", user_id=REQUESTER))
    assert f"{work} accepts connections again (undrained by <@{REQUESTER}>)" in said, said
    assert allows_connections(world, work)
    for text, words in (
        ("drain template0", "template database"),
        ("drain pgct_nosuch", "There is no database named"),
        ("drain postgres", "the bot's connection to this target uses"),
        (f"undrain {work}", "is not drained by the bot"),
        (f"drain {work} --for 25h", "--for is from 1m to 24h"),
        (f"drain {work} --for 10s", "--for is from 1m to 24h"),
    ):
        answer = message_text(await bot.ask(text, user_id=REQUESTER))
        assert words in answer, (text, answer)
    assert "requester role" in message_text(await bot.ask(f"drain {work}", user_id="U0VIEWER"))


def test_drain_in_the_console_with_the_least_privilege_role(world: PgWorld, fresh_state_dsn: str) -> None:
    from psycopg import sql

    from tests.e2e.test_processes import bot_env, run_console
    from tests.service.test_drain import _drain_function

    bot = world.role("bot", limit=None)
    world.admin.execute(sql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(sql.Identifier(bot)))
    home, work = world.database("home"), world.database("work")
    student = world.role("student", limit=None)
    pid = world.pid_of(world.connect(student, "DBeaver", database=work))
    with psycopg.connect(world.dsn_for(None, home), autocommit=True) as admin:
        admin.execute(_drain_function([work], bot).encode())
    env = bot_env(
        PGCONN_DATABASE_URL=world.dsn_for(bot, home),
        PGCONN_STATE_URL=fresh_state_dsn,
        PGCONN_REQUESTERS="U0REQ",
        PGCONN_APPROVERS="U0APP",
    )
    try:
        done = run_console(f"as U0REQ\ndrain {work} --for 10m\nas U0APP\napprove 1\nstatus\nundrain {work}\n", env)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert f"Request #1 created: drain database {work}" in out, out
        assert "1 terminated" in out and f"DRAINED: {work} refuses new connections" in out, out
        assert f"{work} accepts connections again (undrained by @U0APP)" in out, out
        assert not alive(world, [pid]) and allows_connections(world, work)
    finally:
        world.admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(work)))
