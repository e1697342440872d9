"""The approval flow in the core, against the real PostgreSQL, without Slack (as the console runs it)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from bot.model.access import Identity
from bot.model.problems import NothingToDo, PidsRefused, StateUnavailable, Unsignallable
from bot.model.requests import TargetOutcome
from bot.model.results import Decided, RequestOpened
from bot.render.text import render_text
from bot.runtime import Runtime
from tests.conftest import PgWorld

REQUESTER, APPROVER = Identity("U0REQ"), Identity("U0APP")


@pytest.fixture
async def make_runtime(make_settings: Any, fresh_state_dsn: str) -> AsyncIterator[Callable[..., Any]]:
    started: list[Runtime] = []

    async def make(**overrides: Any) -> Runtime:
        settings = make_settings(
            **{"requesters": "U0REQ", "approvers": "U0APP", "state_url": fresh_state_dsn, **overrides}
        )
        runtime = Runtime.build(settings)
        await runtime.start(require_state=False)
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        await runtime.stop()


async def ask(runtime: Runtime, text: str, who: Identity) -> Any:
    return (await runtime.service.handle(text, who)).result


async def open_and_approve(runtime: Runtime, text: str) -> Decided:
    opened = await ask(runtime, text, REQUESTER)
    assert isinstance(opened, RequestOpened), render_text(opened)
    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert isinstance(decided, Decided), render_text(decided)
    return decided


def outcomes(decided: Decided) -> dict[int, tuple[str | None, str | None]]:
    return {t.pid: (t.outcome, t.error) for t in decided.request.targets}


def sleeping_query(world: PgWorld, role: str, seconds: int = 30) -> tuple[int, threading.Thread, list[BaseException]]:
    conn = world.connect(role, "busy")
    pid = world.pid_of(conn)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            conn.execute("SELECT pg_sleep(%s)", (seconds,))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until_active(world, pid)
    return pid, thread, errors


def wait_until_active(world: PgWorld, pid: int) -> None:
    for _ in range(500):  # until the server reports it running
        row = world.admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row and row[0] == "active":
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"pid {pid} never became active")


async def test_console_flow_request_then_approve(make_runtime: Any, world: PgWorld) -> None:
    runtime = await make_runtime()
    role = world.role("c_flow")
    pid = world.pid_of(world.connect(role))
    opened = await ask(runtime, f"kill {pid} --reason 'exam'", REQUESTER)
    assert isinstance(opened, RequestOpened) and opened.console
    text = render_text(opened)
    assert f"approve {opened.request.id}" in text and "exam" in text
    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert outcomes(decided) == {pid: (TargetOutcome.TERMINATED, None)}
    assert "done: 1 terminated" in render_text(decided)


async def test_cancel_stops_the_query_but_keeps_the_session(make_runtime: Any, world: PgWorld) -> None:
    runtime = await make_runtime()
    role = world.role("c_cancel")
    pid, thread, errors = sleeping_query(world, role)
    decided = await open_and_approve(runtime, f"cancel {pid}")
    assert outcomes(decided) == {pid: (TargetOutcome.CANCELLED, None)}
    thread.join(timeout=5)
    assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled)
    row = world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row == (1,)


async def test_cancel_of_an_idle_session_is_refused_at_once(make_runtime: Any, world: PgWorld) -> None:
    runtime = await make_runtime()
    role = world.role("c_idle_cancel")
    pid = world.pid_of(world.connect(role))
    refused = await ask(runtime, f"cancel {pid}", REQUESTER)
    assert isinstance(refused, PidsRefused) and refused.refusals[0].why is Unsignallable.NO_QUERY
    assert "there is no query to cancel" in render_text(refused)


async def test_cancel_does_not_hit_a_later_query(make_runtime: Any, world: PgWorld) -> None:
    runtime = await make_runtime()
    role = world.role("c_later")
    pid, thread, _ = sleeping_query(world, role)
    opened = await ask(runtime, f"cancel {pid}", REQUESTER)
    assert isinstance(opened, RequestOpened)
    world.admin.execute("SELECT pg_cancel_backend(%s)", (pid,))  # that query ends before approval…
    thread.join(timeout=5)
    conn = next(c for c in world.connections if c.info.backend_pid == pid)
    again = threading.Thread(target=lambda: _quietly(conn, "SELECT pg_sleep(30)"), daemon=True)
    again.start()  # …and another one starts
    wait_until_active(world, pid)
    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert outcomes(decided)[pid][0] == TargetOutcome.CHANGED
    assert world.admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == ("active",)
    world.admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
    again.join(timeout=5)


async def test_kill_idle_spares_a_session_that_woke_up(make_runtime: Any, world: PgWorld) -> None:
    runtime = await make_runtime()
    role = world.role("c_woke")
    conn = world.connect(role)
    pid = world.pid_of(conn)
    opened = await ask(runtime, f"kill idle {role}", REQUESTER)
    assert isinstance(opened, RequestOpened)
    conn.execute("SELECT 1")  # the student came back: it is no longer the idle session approved
    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert outcomes(decided)[pid][0] == TargetOutcome.CHANGED
    assert world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)


async def test_kill_idle_takes_only_idle_sessions(make_runtime: Any, world: PgWorld) -> None:
    runtime = await make_runtime()
    role = world.role("c_idle")
    idle_pid = world.pid_of(world.connect(role))
    busy_pid, thread, _ = sleeping_query(world, role)
    opened = await ask(runtime, f"kill idle {role}", REQUESTER)
    assert isinstance(opened, RequestOpened)
    assert opened.request.pids == [idle_pid]
    nothing = await ask(runtime, f"kill idle {role} --older 2h", REQUESTER)
    assert isinstance(nothing, NothingToDo) and "idle for 2h or more" in render_text(nothing)
    world.admin.execute("SELECT pg_cancel_backend(%s)", (busy_pid,))
    thread.join(timeout=5)


async def test_missing_privilege_is_reported_per_target(make_runtime: Any, world: PgWorld) -> None:
    # The bot's login can see every session (pg_read_all_stats) but may not signal them.
    weak = world.role("weakbot", limit=None)
    world.admin.execute(f'GRANT pg_read_all_stats TO "{weak}"')
    victim = world.role("c_victim")
    pid = world.pid_of(world.connect(victim))
    runtime = await make_runtime(database_url=world.dsn_for(weak))
    decided = await open_and_approve(runtime, f"kill {pid}")
    outcome, detail = outcomes(decided)[pid]
    assert outcome == TargetOutcome.FAILED and detail and "pg_signal_backend" in detail
    assert world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)
    assert "failed" in render_text(decided)


async def test_without_pg_monitor_nothing_is_requested(make_runtime: Any, world: PgWorld) -> None:
    blind = world.role("blindbot", limit=None)
    victim = world.role("c_hidden")
    pid = world.pid_of(world.connect(victim))
    runtime = await make_runtime(database_url=world.dsn_for(blind))
    refused = await ask(runtime, f"kill {pid}", REQUESTER)
    assert isinstance(refused, PidsRefused) and refused.refusals[0].why is Unsignallable.HIDDEN
    assert "pg_monitor" in render_text(refused)


@pytest.mark.pg(max=13)
async def test_on_postgresql_13_terminations_are_polled_until_gone(make_runtime: Any, world: PgWorld) -> None:
    # 13 has no pg_terminate_backend(pid, timeout): the bot signals, then polls until each is gone.
    runtime = await make_runtime()
    role = world.role("c_poll")
    pids = [world.pid_of(world.connect(role)) for _ in range(3)]
    decided = await open_and_approve(runtime, f"kill user {role}")
    assert {t.pid: t.outcome for t in decided.request.targets} == dict.fromkeys(pids, TargetOutcome.TERMINATED)
    gone = world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone()
    assert gone == (0,)


async def test_a_role_promoted_to_superuser_after_the_request_is_not_signalled(
    make_runtime: Any, world: PgWorld
) -> None:
    runtime = await make_runtime()
    role = world.role("c_promoted")
    pid = world.pid_of(world.connect(role))
    opened = await ask(runtime, f"kill {pid}", REQUESTER)
    world.admin.execute(f'ALTER ROLE "{role}" SUPERUSER')
    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert outcomes(decided)[pid][0] == TargetOutcome.PROTECTED
    assert world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)


async def test_blocked_sessions_are_shown(make_runtime: Any, world: PgWorld) -> None:
    runtime = await make_runtime()
    role = world.role("c_lock")
    world.admin.execute(f'CREATE TABLE "{role}_t" (id int)')
    world.admin.execute(f'GRANT ALL ON "{role}_t" TO "{role}"')
    try:
        holder = world.connect(role)
        holder.execute("BEGIN")
        holder.execute(f'LOCK TABLE "{role}_t" IN ACCESS EXCLUSIVE MODE')
        waiter = world.connect(role)
        waiter_pid = world.pid_of(waiter)
        thread = threading.Thread(target=lambda: _quietly(waiter, f'SELECT * FROM "{role}_t"'), daemon=True)
        thread.start()
        for _ in range(200):
            row = world.admin.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (waiter_pid,)
            ).fetchone()
            if row and row[0] == "Lock":
                break
            threading.Event().wait(0.01)
        opened = await ask(runtime, f"kill {world.pid_of(holder)}", REQUESTER)
        assert isinstance(opened, RequestOpened)
        assert opened.request.targets[0].blocks == (waiter_pid,)
        assert re.search(rf"\b{waiter_pid}\b", render_text(opened))
        holder.execute("ROLLBACK")
        thread.join(timeout=5)
    finally:
        # The holder's transaction must end first, or the DROP waits for its lock for ever.
        world.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        world.admin.execute(f'DROP TABLE IF EXISTS "{role}_t"')


def _quietly(conn: psycopg.Connection[Any], statement: str) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute(statement)


async def test_interrupted_execution_is_reported_not_rerun(
    make_runtime: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    runtime = await make_runtime()
    role = world.role("c_crash")
    pid = world.pid_of(world.connect(role))
    opened = await ask(runtime, f"kill {pid}", REQUESTER)
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgconn.request SET status = 'executing', decided_at = now() - interval '1 hour' WHERE id = %s",
            (opened.request.id,),
        )
    await runtime.housekeeper.run_once()
    request = await runtime.approvals._store.get(opened.request.id)
    assert request is not None and request.status == "interrupted"
    with psycopg.connect(fresh_state_dsn) as conn:
        events = [r[0] for r in conn.execute("SELECT event FROM pgconn.audit ORDER BY id")]
    assert events == ["requested", "interrupted"]
    assert world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)


async def test_the_audit_table_is_append_only(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    runtime = await make_runtime()
    role = world.role("c_append")
    pid = world.pid_of(world.connect(role))
    await ask(runtime, f"kill {pid}", REQUESTER)
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        for statement in (
            "UPDATE pgconn.audit SET event = 'x'",
            "DELETE FROM pgconn.audit",
            "TRUNCATE pgconn.audit CASCADE",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)


async def test_unknown_request_and_bad_ids(make_runtime: Any) -> None:
    runtime = await make_runtime()
    missing = await ask(runtime, "approve 424242", APPROVER)
    assert "There is no request #424242" in render_text(missing)
    assert "is not a request id" in render_text(await ask(runtime, "deny abc", APPROVER))


async def test_no_state_database_is_a_clear_answer(make_settings: Any, world: PgWorld) -> None:
    settings = make_settings(
        requesters="U0REQ", state_url=world.dsn_for(database="pgct_no_such_database"), command_timeout=1.0
    )
    runtime = Runtime.build(settings)
    await runtime.start(require_state=False)
    try:
        role = world.role("c_nostate")
        pid = world.pid_of(world.connect(role))
        answer = await ask(runtime, f"kill {pid}", REQUESTER)
        assert isinstance(answer, StateUnavailable), answer
        assert "state database" in render_text(answer)
        assert isinstance(await ask(runtime, "requests", REQUESTER), StateUnavailable)
    finally:
        await runtime.stop()
