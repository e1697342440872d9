"""`drain <database>` / `undrain` against the real PostgreSQL: the approval flow, the sessions
ended and new ones refused, other databases untouched, undrained in time by the housekeeper or at
once by `undrain`, the refusals, and the least-privilege function setup-sql makes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot.model.access import Identity
from bot.model.drains import DrainIssue, DrainRefused, Undrained
from bot.model.requests import AuditEvent, RequestStatus, TargetOutcome
from bot.model.results import Decided, RequestOpened, ServerStatus
from bot.render.text import render_text
from bot.runtime import Runtime
from bot.setup_sql import setup_sql
from tests.conftest import PgWorld

REQUESTER, APPROVER = Identity("U0REQ"), Identity("U0APP")


@pytest.fixture
async def runtimes(make_settings: Any, fresh_state_dsn: str) -> AsyncIterator[Any]:
    started: list[Runtime] = []

    async def start(**overrides: Any) -> Runtime:
        settings = make_settings(
            **{"requesters": "U0REQ", "approvers": "U0APP", "state_url": fresh_state_dsn, **overrides}
        )
        runtime = Runtime.build(settings)
        await runtime.start(require_state=False)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        await runtime.stop()


async def ask(runtime: Runtime, text: str, who: Identity) -> Any:
    return (await runtime.service.handle(text, who)).result


def allows_connections(world: PgWorld, database: str) -> bool:
    row = world.admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (database,)).fetchone()
    assert row is not None
    return bool(row[0])


def alive(world: PgWorld, pids: list[int]) -> set[int]:
    rows = world.admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchall()
    return {row[0] for row in rows}


def events(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT event FROM pgconn.audit ORDER BY id")]


async def drain(runtime: Runtime, text: str) -> Decided:
    opened = await ask(runtime, text, REQUESTER)
    assert isinstance(opened, RequestOpened), render_text(opened)
    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert isinstance(decided, Decided), render_text(decided)
    return decided


async def test_drain_ends_the_sessions_refuses_new_ones_and_leaves_other_databases_alone(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str
) -> None:
    student = world.role("student", limit=None)
    work, other = world.database("work"), world.database("other")
    pids = [world.pid_of(world.connect(student, "DBeaver", database=work)) for _ in range(2)]
    bystander = world.pid_of(world.connect(student, "psql", database=other))
    runtime = await runtimes()

    opened = await ask(runtime, f'drain {work} --for 30m --reason "restore"', REQUESTER)
    assert isinstance(opened, RequestOpened), render_text(opened)
    shown = render_text(opened)  # the approver's sentence: the database, its sessions, the time
    assert f"drain database {work}" in shown and "2 client sessions now" in shown and "DBeaver 2" in shown
    assert "undrained after 30m" in shown
    assert allows_connections(world, work) and alive(world, pids) == set(pids)  # nothing before the approval

    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert isinstance(decided, Decided) and decided.request.status is RequestStatus.EXECUTED, render_text(decided)
    assert [t.outcome for t in decided.request.targets] == [TargetOutcome.TERMINATED] * 2
    assert not allows_connections(world, work) and not alive(world, pids)
    assert alive(world, [bystander]) == {bystander} and allows_connections(world, other)
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(world.dsn_for(student, work, connect_timeout=3)).close()

    status = await ask(runtime, "status", REQUESTER)
    assert isinstance(status, ServerStatus) and [d.database for d in status.drains] == [work]
    assert f"DRAINED: {work} refuses new connections" in render_text(status)
    again = await ask(runtime, f"drain {work}", REQUESTER)
    assert isinstance(again, DrainRefused) and again.issue is DrainIssue.ALREADY_DRAINED

    undrained = await ask(runtime, f"undrain {work}", REQUESTER)
    assert isinstance(undrained, Undrained) and undrained.by == "U0REQ", render_text(undrained)
    assert allows_connections(world, work)
    world.connect(student, "back", database=work)
    assert events(fresh_state_dsn)[-5:] == ["requested", "approved", "executed", "refused", "undrained"]
    none_left = await ask(runtime, f"undrain {work}", REQUESTER)
    assert isinstance(none_left, DrainRefused) and none_left.issue is DrainIssue.NOT_DRAINED


async def test_a_drain_ends_by_itself_when_its_time_is_up(world: PgWorld, runtimes: Any, fresh_state_dsn: str) -> None:
    work = world.database("work")
    runtime = await runtimes()
    await drain(runtime, f"drain {work} --for 1m")
    assert not allows_connections(world, work)
    await runtime.housekeeper.run_once()
    assert not allows_connections(world, work)  # not yet
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgconn.drain SET until = now() WHERE undrained_at IS NULL")
    # Any replica's housekeeper, even one started later, undrains it once.
    later = await runtimes()
    await later.housekeeper.run_once()
    await runtime.housekeeper.run_once()
    assert allows_connections(world, work)
    assert events(fresh_state_dsn).count(AuditEvent.UNDRAINED) == 1


async def test_a_session_that_comes_between_request_and_approval_is_ended_too(world: PgWorld, runtimes: Any) -> None:
    student = world.role("student", limit=None)
    work = world.database("work")
    first = world.pid_of(world.connect(student, "one", database=work))
    runtime = await runtimes()
    opened = await ask(runtime, f"drain {work}", REQUESTER)
    assert isinstance(opened, RequestOpened)
    late = world.pid_of(world.connect(student, "late", database=work))
    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert isinstance(decided, Decided)
    assert {t.pid: t.outcome for t in decided.request.targets} == {
        first: TargetOutcome.TERMINATED,
        late: TargetOutcome.TERMINATED,
    }
    assert not alive(world, [first, late])


@pytest.mark.parametrize("what", ["unknown", "template", "state", "own"])
async def test_drain_is_refused_for_what_must_not_be_drained(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str, what: str
) -> None:
    state_db = psycopg.conninfo.conninfo_to_dict(fresh_state_dsn)["dbname"]
    runtime = await runtimes()
    database, issue = {
        "unknown": ("pgct_nosuch_db", DrainIssue.NO_SUCH_DATABASE),
        "template": ("template1", DrainIssue.TEMPLATE),
        "state": (state_db, DrainIssue.STATE_DATABASE),
        "own": ("postgres", DrainIssue.OWN_DATABASE),
    }[what]
    refused = await ask(runtime, f"drain {database}", REQUESTER)
    assert isinstance(refused, DrainRefused) and refused.issue is issue, render_text(refused)
    assert "Traceback" not in render_text(refused)
    with psycopg.connect(fresh_state_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgconn.request").fetchone() == (0,)


async def test_the_least_privilege_function(world: PgWorld, runtimes: Any) -> None:
    """A bot role that is no superuser may drain only through pgconn_drain, and only what it lists."""
    bot = world.role("bot", limit=None)
    world.admin.execute(sql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(sql.Identifier(bot)))
    home, work, other = world.database("home"), world.database("work"), world.database("other")
    student = world.role("student", limit=None)
    pid = world.pid_of(world.connect(student, "DBeaver", database=work))
    runtime = await runtimes(database_url=world.dsn_for(bot, home))

    refused = await ask(runtime, f"drain {work}", REQUESTER)
    assert isinstance(refused, DrainRefused) and refused.issue is DrainIssue.NOT_SET_UP
    assert f"setup-sql --drain {work}" in render_text(refused)

    with psycopg.connect(world.dsn_for(None, home), autocommit=True) as admin:  # as the superuser, once
        admin.execute(_drain_function([work], bot).encode())
    try:
        refused = await ask(runtime, f"drain {other}", REQUESTER)
        assert isinstance(refused, DrainRefused) and refused.issue is DrainIssue.NOT_LISTED
        assert work in render_text(refused)

        await drain(runtime, f"drain {work}")
        assert not allows_connections(world, work) and not alive(world, [pid])
        assert isinstance(await ask(runtime, f"undrain {work}", REQUESTER), Undrained)
        assert allows_connections(world, work)
    finally:
        world.admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(work)))


def _drain_function(databases: list[str], bot: str) -> str:
    """Exactly what `pgconn-bot setup-sql --drain` prints for it: its drain section, run alone."""
    script = setup_sql(bot, drain=databases)
    begin = script.index("-- Draining")
    end = script.index("-- (end of draining)")
    return script[begin:end]


async def test_protected_sessions_are_named_and_spared(world: PgWorld, runtimes: Any) -> None:
    admin_role = world.role("dba", limit=None, superuser=True)
    student = world.role("student", limit=None)
    work = world.database("work")
    spared = world.pid_of(world.connect(admin_role, "maintenance", database=work))
    ended = world.pid_of(world.connect(student, "DBeaver", database=work))
    runtime = await runtimes()
    opened = await ask(runtime, f"drain {work}", REQUESTER)
    assert isinstance(opened, RequestOpened), render_text(opened)
    assert [t.pid for t in opened.request.targets] == [ended]
    shown = render_text(opened)
    assert f"spared: pid {spared} ({admin_role}: a superuser)" in shown, shown
    decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
    assert isinstance(decided, Decided)
    assert alive(world, [spared, ended]) == {spared}
    assert "done in " in render_text(decided), render_text(decided)
    world.admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(work)))


async def test_a_target_whose_database_is_drained_is_not_called_down(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str
) -> None:
    import json

    work = world.database("work")
    runtime = await runtimes(
        targets=json.dumps({"work": world.dsn_for(None, work)}), alert_channel="C0ALERTS", monitor_interval=3600
    )
    await drain(runtime, f"drain {work}")
    # The bot's own connections to it were spared; once they are lost, it cannot get back in.
    world.admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = 'pgconn-bot'",
        (work,),
    )
    lifeline = runtime.targets.lifeline("work")
    for _ in range(300):  # the lifeline notices within its idle check, and cannot get back in
        if lifeline.error and "not currently accepting connections" in lifeline.error:
            break
        await asyncio.sleep(0.1)
    assert lifeline.error and "not currently accepting connections" in lifeline.error, lifeline.error
    for _ in range(4):
        await runtime.monitor.run_cycle()
    with psycopg.connect(fresh_state_dsn) as conn:
        kinds = [row[0] for row in conn.execute("SELECT kind FROM pgconn.alert WHERE target = 'work'")]
    assert "target_down" not in kinds, kinds
    assert isinstance(await ask(runtime, f"undrain {work}", REQUESTER), Undrained)
