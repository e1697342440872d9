"""The cancel-then-terminate ladder over real HTTP: ``cancel <pids> --escalate 2s`` → one approval
click → the message says it is escalating → the stubborn query's session is terminated after the
grace time, the obedient one left connected → the message and the audit channel say so."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import PgWorld
from tests.e2e.conftest import (
    APPROVER,
    APPROVER2,
    AUDIT,
    REQUESTER,
    alive,
    audit_rows,
    ephemeral_answer,
    eventually,
    message_text,
    no_buttons,
    open_request,
    wait_for_message_state,
)

STUBBORN = "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(60); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$"
OBEDIENT = "SELECT pg_sleep(60)"


def state_of(world: PgWorld, pid: int) -> str | None:
    row = world.admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row[0] if row else None


class Running:
    """A session of a test role running ``statement`` in a thread; ``end`` terminates only it."""

    def __init__(self, world: PgWorld, role: str, statement: str) -> None:
        self.world, self.role = world, role
        conn = world.connect(role, "pgct-ladder")
        self.pid = world.pid_of(conn)
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                conn.execute(statement)
            except BaseException as exc:
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 5
        while state_of(world, self.pid) != "active":
            assert time.monotonic() < deadline, f"pid {self.pid} never ran its statement"
            threading.Event().wait(0.01)

    def end(self) -> None:
        self.world.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND usename = %s",
            (self.pid, self.role),
        )
        self.thread.join(timeout=10)


@pytest.fixture
def running(world: PgWorld) -> Iterator[Callable[[str, str], Running]]:
    made: list[Running] = []

    def make(role: str, statement: str) -> Running:
        made.append(Running(world, role, statement))
        return made[-1]

    yield make
    for session in made:
        session.end()


async def test_the_ladder_over_http_one_approval_two_steps(
    start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str, running: Callable[[str, str], Running]
) -> None:
    bot = await start_approval_bot()
    role = world.role("ld_http")
    stubborn, obedient = running(role, STUBBORN), running(role, OBEDIENT)

    request_id, message = await open_request(
        bot, f"cancel {stubborn.pid} {obedient.pid} --escalate 2s --reason 'runaway join'", user=REQUESTER
    )
    assert "then terminate any still running that query after 2s" in message.text, message.text
    assert {"Approve", "Deny"} <= set(message.buttons())

    clicked = await bot.click(message, "Approve", APPROVER)
    assert clicked.status == 200 and clicked.ack_seconds < 1.0
    waiting = await wait_for_message_state(bot.slack, message, lambda m: "escalating in" in m.text)
    assert no_buttons(waiting), waiting.buttons()
    assert "2 cancelled" in waiting.text and "<@U0APP>" in waiting.text, waiting.text
    assert alive(world, [stubborn.pid]) == {stubborn.pid}  # the grace time first
    # A click from a client still showing the buttons: already approved, nothing more happens.
    late = await ephemeral_answer(bot, await bot.click(message, "Approve", APPROVER2))
    assert "already approved by <@U0APP>" in late, late

    done = await wait_for_message_state(bot.slack, message, lambda m: "done:" in m.text and no_buttons(m), timeout=15.0)
    assert "1 cancelled, then terminated after 2s" in done.text, done.text
    assert "1 cancelled" in done.text and "escalating in" not in done.text
    await eventually(lambda: alive(world, [stubborn.pid]) == set())
    stubborn.thread.join(timeout=5)
    assert stubborn.errors and isinstance(stubborn.errors[0], psycopg.OperationalError)
    obedient.thread.join(timeout=5)
    assert obedient.errors and isinstance(obedient.errors[0], psycopg.errors.QueryCanceled)
    assert state_of(world, obedient.pid) == "idle"  # connected still; only its query was cancelled

    events = [row["event"] for row in audit_rows(fresh_state_dsn, request_id)]
    assert events == ["requested", "approved", "escalating", "executed"], events

    def delivered() -> dict[str, str] | None:
        found = {}
        for posted in bot.slack.channel_messages(AUDIT):
            text = message_text(posted)
            if f"#{request_id}" in text:
                for event in ("escalating", "executed"):
                    if f" {event} " in text:
                        found[event] = text
        return found if len(found) == 2 else None

    entries = await bot.slack.wait_for(delivered, 10.0)
    assert f"{stubborn.pid} cancelled" in entries["escalating"] and f"{obedient.pid} cancelled" in entries["escalating"]
    assert f"{stubborn.pid} cancelled, then terminated" in entries["executed"], entries["executed"]
    assert f"{obedient.pid} cancelled" in entries["executed"]
    # The requester hears how it ended, once it has.
    await bot.slack.wait_for(lambda: bot.slack.api_calls("chat.postMessage", REQUESTER))
