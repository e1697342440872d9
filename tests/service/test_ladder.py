"""The cancel-then-terminate ladder (``cancel <pid> --escalate 2s``) against the real PostgreSQL:
one approval; the cancel step; the wait (cut short when every cancelled query ended); the second
step terminating only what still runs the same query; restarts, replicas and late housekeeping.

A *stubborn* session catches query_canceled and goes on (a cancel cannot stop it, a terminate
can); an *obedient* one runs ``SELECT pg_sleep(60)`` and ends its query when cancelled."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import psycopg
import pytest

from bot.core.approvals import INTERRUPTED_AFTER_SECONDS
from bot.core.ports import NoAnnouncer
from bot.core.service import command_for_alert
from bot.model.access import Identity
from bot.model.alerts import Alert, AlertKind, SessionOfNote, Severity, Shape
from bot.model.requests import DEFAULT_ESCALATION, RequestStatus, SignalAction, SignalRequest, TargetOutcome
from bot.model.results import Decided, RequestOpened
from bot.render.text import render_text
from bot.runtime import Runtime
from tests.conftest import PgWorld

REQUESTER, APPROVER = Identity("U0REQ"), Identity("U0APP")

STUBBORN = "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(60); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$"
OBEDIENT = "SELECT pg_sleep(60)"


# --- sessions -------------------------------------------------------------------------------------


def activity(world: PgWorld, pid: int) -> tuple[str | None, datetime | None] | None:
    """(state, query_start) of the backend, or None when it is gone."""
    row = world.admin.execute("SELECT state, query_start FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return (row[0], row[1]) if row else None


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.01)


async def until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Re-check ``condition`` (the database cannot notify us) until it holds, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Session:
    """A session of a test role running ``statements`` one after another in a thread (each
    statement's error, if any, is kept). ``query_start`` is that of its first statement."""

    def __init__(self, world: PgWorld, role: str, *statements: str, application: str = "pgct-ladder") -> None:
        self.world, self.role = world, role
        self.conn = world.connect(role, application)
        self.pid = world.pid_of(self.conn)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(statements,), daemon=True)
        self.thread.start()
        wait_for(lambda: (activity(world, self.pid) or (None, None))[0] == "active", f"pid {self.pid} to run")
        found = activity(world, self.pid)
        assert found is not None and found[1] is not None
        self.query_start: datetime = found[1]

    def _run(self, statements: tuple[str, ...]) -> None:
        for statement in statements:
            try:
                self.conn.execute(statement)
            except BaseException as exc:
                self.errors.append(exc)
                if self.conn.closed or self.conn.broken:
                    return

    @property
    def alive(self) -> bool:
        return activity(self.world, self.pid) is not None

    @property
    def on_first_query(self) -> bool:
        """Still running the very statement it ran when the request was made."""
        return activity(self.world, self.pid) == ("active", self.query_start)

    def end(self) -> None:
        """Only this test role's backend, then the thread."""
        self.world.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND usename = %s",
            (self.pid, self.role),
        )
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), f"session {self.pid} did not end"


@pytest.fixture
def sessions(world: PgWorld) -> Iterator[Callable[..., Session]]:
    made: list[Session] = []

    def make(role: str, *statements: str) -> Session:
        session = Session(world, role, *statements)
        made.append(session)
        return session

    yield make
    for session in made:
        session.end()


# --- runtimes on this test's own state database ---------------------------------------------------


class Runtimes:
    """``console``: no Slack, the grace time waited for inside ``approve``. ``replica``: a serve-like
    runtime (an announcer, so the wait runs in a task; ``background``: housekeeper running)."""

    def __init__(self, make_settings: Any, state_dsn: str) -> None:
        self._make_settings = make_settings
        self.state_dsn = state_dsn
        self.running: list[Runtime] = []

    def _settings(self, overrides: dict[str, Any]) -> Any:
        return self._make_settings(
            **{"requesters": "U0REQ", "approvers": "U0APP", "state_url": self.state_dsn, **overrides}
        )

    async def console(self, **overrides: Any) -> Runtime:
        runtime = Runtime.build(self._settings(overrides))
        await runtime.start(require_state=False)
        self.running.append(runtime)
        return runtime

    async def replica(self, *, background: bool = False, **overrides: Any) -> Runtime:
        runtime = Runtime.build(self._settings(overrides), announcer=NoAnnouncer(), housekeeping_seconds=0.2)
        await runtime.start(require_state=False, background=background)
        self.running.append(runtime)
        return runtime

    async def stop(self, runtime: Runtime) -> None:
        self.running.remove(runtime)
        await runtime.stop()


@pytest.fixture
async def runtimes(make_settings: Any, fresh_state_dsn: str) -> AsyncIterator[Runtimes]:
    made = Runtimes(make_settings, fresh_state_dsn)
    yield made
    for runtime in list(made.running):
        await made.stop(runtime)


async def ask(runtime: Runtime, text: str, who: Identity) -> Any:
    return (await runtime.service.handle(text, who)).result


async def request_ladder(runtime: Runtime, pids: list[int], grace: str) -> int:
    opened = await ask(runtime, f"cancel {' '.join(map(str, pids))} --escalate {grace}", REQUESTER)
    assert isinstance(opened, RequestOpened), render_text(opened)
    assert opened.request.escalate_after is not None
    return opened.request.id


async def approve(runtime: Runtime, request_id: int) -> SignalRequest:
    decided = await ask(runtime, f"approve {request_id}", APPROVER)
    assert isinstance(decided, Decided), render_text(decided)
    return decided.request


def state_rows(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return list(conn.execute(query, params).fetchall())


def status_of(dsn: str, request_id: int) -> str:
    return str(state_rows(dsn, "SELECT status FROM pgconn.request WHERE id = %s", (request_id,))[0][0])


def executed(dsn: str, request_id: int) -> bool:
    return status_of(dsn, request_id) == "executed"


def events(dsn: str, request_id: int) -> list[str]:
    return [
        r[0] for r in state_rows(dsn, "SELECT event FROM pgconn.audit WHERE request_id = %s ORDER BY id", (request_id,))
    ]


def outcomes(request: SignalRequest) -> dict[int, TargetOutcome | None]:
    return {t.pid: t.outcome for t in request.targets}


async def stored(runtime: Runtime, request_id: int) -> SignalRequest:
    request = await runtime.approvals._store.get(request_id)
    assert request is not None
    return request


async def escalating_and_stopped(runtimes: Runtimes, stubborn: Session, grace: str = "3s") -> int:
    """A serve-like replica approves a ladder and stops during the grace time: left escalating."""
    first = await runtimes.replica(background=True)
    request_id = await request_ladder(first, [stubborn.pid], grace)
    waiting = await approve(first, request_id)
    assert waiting.status is RequestStatus.ESCALATING, waiting.status
    assert outcomes(waiting) == {stubborn.pid: TargetOutcome.CANCELLED}
    await runtimes.stop(first)  # a restart (a deploy) during the grace time
    assert status_of(runtimes.state_dsn, request_id) == "escalating"
    assert stubborn.on_first_query, "stopping must not signal the stubborn session"
    assert events(runtimes.state_dsn, request_id) == ["requested", "approved", "escalating"]
    return request_id


# --- 1. the ladder: the stubborn one terminated, the obedient one left connected -----------------


@pytest.mark.parametrize("mode", ["console", "replica"])
async def test_the_ladder_terminates_only_what_ignored_the_cancel(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session], mode: str
) -> None:
    role = world.role("ld_mix")
    stubborn, obedient = sessions(role, STUBBORN), sessions(role, OBEDIENT)
    runtime = await (runtimes.console() if mode == "console" else runtimes.replica(background=True))
    request_id = await request_ladder(runtime, [stubborn.pid, obedient.pid], "2s")

    started = time.monotonic()
    answer = await approve(runtime, request_id)
    if mode == "console":  # the console waits inside approve: the answer is the whole ladder
        assert answer.status is RequestStatus.EXECUTED
    else:  # serve: approve answers after the cancel step; the second step follows in a task
        assert answer.status is RequestStatus.ESCALATING
        assert answer.escalate_at is not None and answer.decided_at is not None
        assert timedelta(seconds=2) <= answer.escalate_at - answer.decided_at < timedelta(seconds=7)
        assert outcomes(answer) == dict.fromkeys((stubborn.pid, obedient.pid), TargetOutcome.CANCELLED)
        assert "escalating in" in render_text(Decided(answer, "executed"))
        await until(lambda: status_of(runtimes.state_dsn, request_id) == "executed", "the second step")
    elapsed = time.monotonic() - started
    assert elapsed >= 1.5, f"the stubborn session was terminated before its grace time ({elapsed:.1f}s)"

    done = await stored(runtime, request_id)
    assert done.status is RequestStatus.EXECUTED
    assert outcomes(done) == {stubborn.pid: TargetOutcome.ESCALATED, obedient.pid: TargetOutcome.CANCELLED}
    assert "cancelled, then terminated after 2s" in render_text(Decided(done, "executed"))

    wait_for(lambda: not stubborn.alive, "the stubborn session to be gone")
    stubborn.thread.join(timeout=5)
    assert stubborn.errors and isinstance(stubborn.errors[0], psycopg.OperationalError), stubborn.errors
    obedient.thread.join(timeout=5)
    assert obedient.errors and isinstance(obedient.errors[0], psycopg.errors.QueryCanceled), obedient.errors
    wait_for(lambda: (activity(world, obedient.pid) or (None, None))[0] == "idle", "the obedient session idle")
    assert obedient.alive  # still connected: only its query ended

    assert events(runtimes.state_dsn, request_id) == ["requested", "approved", "escalating", "executed"]
    (executed,) = state_rows(
        runtimes.state_dsn,
        "SELECT actor, approvers FROM pgconn.audit WHERE request_id = %s AND event = 'executed'",
        (request_id,),
    )
    assert executed == ("U0APP", ["U0APP"])


async def test_a_session_that_started_another_query_is_not_terminated(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session]
) -> None:
    # A client that retries after the cancel runs a *new* query: the ladder is about the old one.
    role = world.role("ld_retry")
    stubborn = sessions(role, STUBBORN)
    retrying = sessions(role, OBEDIENT, OBEDIENT)
    runtime = await runtimes.console()
    request_id = await request_ladder(runtime, [stubborn.pid, retrying.pid], "2s")
    done = await approve(runtime, request_id)
    assert done.status is RequestStatus.EXECUTED
    assert outcomes(done) == {stubborn.pid: TargetOutcome.ESCALATED, retrying.pid: TargetOutcome.CANCELLED}
    state = activity(world, retrying.pid)
    assert state is not None and state[0] == "active" and state[1] != retrying.query_start  # its retry runs on
    wait_for(lambda: not stubborn.alive, "the stubborn session to be gone")


# --- 2. every cancelled query ended: the second step comes early and terminates nothing -----------


@pytest.mark.parametrize("mode", ["console", "replica"])
async def test_when_every_query_ends_the_ladder_finishes_early(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session], mode: str
) -> None:
    role = world.role("ld_early")
    first, second = sessions(role, OBEDIENT), sessions(role, OBEDIENT)
    runtime = await (runtimes.console() if mode == "console" else runtimes.replica(background=False))
    request_id = await request_ladder(runtime, [first.pid, second.pid], "20s")
    started = time.monotonic()
    await approve(runtime, request_id)
    await until(lambda: status_of(runtimes.state_dsn, request_id) == "executed", "the early second step", 15.0)
    elapsed = time.monotonic() - started
    assert elapsed < 10.0, f"the ladder waited {elapsed:.1f}s although every cancelled query had ended"

    done = await stored(runtime, request_id)
    assert outcomes(done) == dict.fromkeys((first.pid, second.pid), TargetOutcome.CANCELLED)
    assert "terminated" not in render_text(Decided(done, "executed"))
    for session in (first, second):
        session.thread.join(timeout=5)
        assert session.errors and isinstance(session.errors[0], psycopg.errors.QueryCanceled)
        assert session.alive  # nothing was terminated
    assert events(runtimes.state_dsn, request_id) == ["requested", "approved", "escalating", "executed"]


# --- 3. a restart during the grace time: another runtime's housekeeper does the second step once --


async def test_a_restart_during_the_grace_time_leaves_the_second_step_to_the_housekeeper(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session]
) -> None:
    role = world.role("ld_restart")
    stubborn = sessions(role, STUBBORN)
    request_id = await escalating_and_stopped(runtimes, stubborn, "3s")
    dsn = runtimes.state_dsn

    after = await runtimes.replica()  # the next process, on the same state database
    due = "SELECT escalate_at <= now() FROM pgconn.request WHERE id = %s"
    await until(lambda: bool(state_rows(dsn, due, (request_id,))[0][0]), "the grace time to pass", 15.0)
    assert stubborn.on_first_query  # nothing terminates it before the housekeeper's round
    await after.housekeeper.run_once()

    done = await stored(after, request_id)
    assert done.status is RequestStatus.EXECUTED
    assert outcomes(done) == {stubborn.pid: TargetOutcome.ESCALATED}
    wait_for(lambda: not stubborn.alive, "the stubborn session to be gone")
    stubborn.thread.join(timeout=5)
    assert len(stubborn.errors) == 1 and isinstance(stubborn.errors[0], psycopg.OperationalError)
    assert events(dsn, request_id) == ["requested", "approved", "escalating", "executed"]

    # Never twice: neither by hand nor by the next rounds (of any replica).
    assert await after.approvals.escalate(request_id) is None
    again = await runtimes.replica()
    assert await again.approvals.escalate(request_id) is None
    await after.housekeeper.run_once()
    await again.housekeeper.run_once()
    assert events(dsn, request_id) == ["requested", "approved", "escalating", "executed"]
    assert status_of(dsn, request_id) == "executed"


# --- 4. two replicas at once: one carries out the second step, the other hears None --------------


async def test_two_replicas_escalating_at_once_do_it_once(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session]
) -> None:
    role = world.role("ld_race")
    stubborn = sessions(role, STUBBORN)
    request_id = await escalating_and_stopped(runtimes, stubborn, "3s")
    one, two = await runtimes.replica(), await runtimes.replica()

    results = await asyncio.gather(one.approvals.escalate(request_id), two.approvals.escalate(request_id))
    finished = [r for r in results if r is not None]
    assert len(finished) == 1 and results.count(None) == 1, results
    assert finished[0].status is RequestStatus.EXECUTED
    assert outcomes(finished[0]) == {stubborn.pid: TargetOutcome.ESCALATED}
    wait_for(lambda: not stubborn.alive, "the stubborn session to be gone")
    assert events(runtimes.state_dsn, request_id) == ["requested", "approved", "escalating", "executed"]


# --- 5. found long after it was due: reported as interrupted, never signalled ---------------------


@pytest.mark.parametrize(
    ("late", "expected"),
    [
        ("5 minutes", "executed"),  # late, but within INTERRUPTED_AFTER_SECONDS: carried out
        ("20 minutes", "interrupted"),  # far overdue: the situation may have changed entirely
    ],
)
async def test_a_ladder_found_late_is_carried_out_or_reported(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session], late: str, expected: str
) -> None:
    role = world.role("ld_late")
    stubborn = sessions(role, STUBBORN)
    request_id = await escalating_and_stopped(runtimes, stubborn, "1m")
    dsn = runtimes.state_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgconn.request SET escalate_at = now() - %s::interval WHERE id = %s", (late, request_id))

    later = await runtimes.replica()
    await later.housekeeper.run_once()
    assert status_of(dsn, request_id) == expected
    if expected == "interrupted":
        assert events(dsn, request_id) == ["requested", "approved", "escalating", "interrupted"]
        assert stubborn.on_first_query  # never signalled a second time
        assert await later.approvals.escalate(request_id) is None
        await later.housekeeper.run_once()
        assert stubborn.on_first_query and status_of(dsn, request_id) == "interrupted"
        request = await stored(later, request_id)
        assert outcomes(request) == {stubborn.pid: TargetOutcome.CANCELLED}  # what the cancel step did
        assert "stopped while executing" in render_text(Decided(request, "executed"))
    else:
        assert events(dsn, request_id) == ["requested", "approved", "escalating", "executed"]
        assert outcomes(await stored(later, request_id)) == {stubborn.pid: TargetOutcome.ESCALATED}
        wait_for(lambda: not stubborn.alive, "the stubborn session to be gone")


# --- 6. the long-query alert's button asks for the ladder ----------------------------------------


async def test_the_long_query_alert_requests_the_ladder(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session]
) -> None:
    role = world.role("ld_alert")
    busy = sessions(role, OBEDIENT)
    row = world.admin.execute(
        "SELECT backend_start, query_start, datname, state FROM pg_stat_activity WHERE pid = %s", (busy.pid,)
    ).fetchone()
    assert row is not None
    backend_start, query_start, database, state = row
    seen = SessionOfNote(
        pid=busy.pid,
        role=role,
        database=database,
        application="pgct-ladder",
        state=state,
        backend_start=backend_start,
        query_start=query_start,
        query=OBEDIENT,
    )
    now = query_start + timedelta(minutes=10)
    alert = Alert(  # as the monitor stores a long-query finding
        id=1,
        target="default",
        kind=AlertKind.LONG_QUERY,
        subject=f"{busy.pid}:{query_start.timestamp()}",
        severity=Severity.WARNING,
        shape=Shape.PLAIN,
        details={**seen.as_details(), "observed_at": now.isoformat(), "databases": ["default"]},
        opened_at=now,
        last_seen_at=now,
    )
    command = command_for_alert(alert, "alert #1: a long query")
    assert command is not None and command.escalate_after == DEFAULT_ESCALATION
    assert command.pids == (busy.pid,) and command.expected_marks == ((busy.pid, query_start),)

    runtime = await runtimes.console()
    opened = await runtime.service.run_command(command, REQUESTER, text="cancel (from alert #1)")
    assert isinstance(opened, RequestOpened), render_text(opened)
    request = await stored(runtime, opened.request.id)
    assert request.escalate_after == DEFAULT_ESCALATION == timedelta(seconds=30)
    assert "then terminate any still running that query after 30s" in render_text(opened)
    (column,) = state_rows(
        runtimes.state_dsn, "SELECT escalate_after FROM pgconn.request WHERE id = %s", (opened.request.id,)
    )
    assert column == (timedelta(seconds=30),)


# --- 7. the edge of INTERRUPTED_AFTER_SECONDS: a second step under way is not "interrupted" -------


class HeldTerminate:
    """The runtime's signaller, but its terminate waits for ``release`` first: a second step that
    takes a few seconds (a backend slow to end makes the terminate wait up to EXECUTION_WAIT_SECONDS)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def signal_backends(self, target: str, *, action: SignalAction, **kwargs: Any) -> Any:
        if action is SignalAction.TERMINATE:
            self.reached.set()
            await asyncio.wait_for(self.release.wait(), timeout=30)
        return await self._real.signal_backends(target, action=action, **kwargs)


async def test_a_second_step_claimed_just_in_time_is_not_reported_interrupted_meanwhile(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session]
) -> None:
    role = world.role("ld_edge")
    stubborn = sessions(role, STUBBORN)
    request_id = await escalating_and_stopped(runtimes, stubborn, "1m")
    dsn = runtimes.state_dsn
    # Every replica was down for a while: the next housekeeper finds it due 599 s ago, which is
    # still within INTERRUPTED_AFTER_SECONDS, so it claims it and carries out the second step.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgconn.request SET escalate_at = now() - make_interval(secs => %s) WHERE id = %s",
            (INTERRUPTED_AFTER_SECONDS - 1, request_id),
        )
    late = await runtimes.replica()
    held = HeldTerminate(late.approvals._signaller)
    late.approvals._signaller = held
    round_ = asyncio.create_task(late.housekeeper.run_once())
    try:
        await asyncio.wait_for(held.reached.wait(), timeout=10)  # claimed; its terminate under way
        assert status_of(dsn, request_id) == "executing"
        # The claim restarted the clock the stale check reads: it measures the step, not the wait.
        fresh = "SELECT escalate_at > now() - interval '1 minute' FROM pgconn.request WHERE id = %s"
        assert state_rows(dsn, fresh, (request_id,))[0][0]
        other = await runtimes.replica()
        await other.housekeeper.run_once()  # another replica's round, while the second step runs
    finally:
        held.release.set()
        await round_

    wait_for(lambda: not stubborn.alive, "the stubborn session to be gone")  # it was terminated…
    # …so the record must say so: executed, its outcome, and its executed audit entry.
    assert events(dsn, request_id) == ["requested", "approved", "escalating", "executed"]
    assert status_of(dsn, request_id) == "executed"
    assert outcomes(await stored(late, request_id)) == {stubborn.pid: TargetOutcome.ESCALATED}


# --- 8. a serve process keeps nothing of a ladder once it is over ---------------------------------


async def test_a_finished_ladder_leaves_no_task_behind(
    runtimes: Runtimes, world: PgWorld, sessions: Callable[..., Session]
) -> None:
    # A long-running serve process carries out ladder after ladder: each waiting task must be let
    # go once its second step is done, or the process holds every one it ever ran.
    role = world.role("ld_tasks")
    runtime = await runtimes.replica()
    for _ in range(3):
        busy = sessions(role, OBEDIENT)
        request_id = await request_ladder(runtime, [busy.pid], "20s")
        await approve(runtime, request_id)
        await until(partial(executed, runtimes.state_dsn, request_id), "the second step", 15.0)
    approvals = runtime.approvals
    await until(lambda: not approvals._escalations, "the waiting tasks to be let go")
    assert not approvals._signalling, f"{len(approvals._signalling)} finished ladder tasks still held"


# --- 9. a replica stopped during the grace time stops its housekeeper too ------------------------


async def test_stopping_a_replica_as_an_audit_wakes_its_housekeeper_stops_the_housekeeper(
    runtimes: Runtimes,
) -> None:
    # The ladder's restart story needs a stopped replica to be stopped: the approval's audit wakes
    # the housekeeper (approvals' audit hook is Housekeeper.wake); a stop that comes at that moment
    # must still end it, or it goes on running its rounds against closed pools.
    runtime = await runtimes.replica(background=True)
    housekeeper = runtime.housekeeper
    task = housekeeper._task
    assert task is not None
    # Parked between rounds (waiting to be woken), as it is most of the time.
    await until(lambda: bool(housekeeper._wake._waiters), "the housekeeper to wait for its next round")
    housekeeper.wake()  # an audit entry written just now…
    await runtimes.stop(runtime)  # …and the process is told to stop
    try:
        assert task.done(), "Runtime.stop left the housekeeper running"
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=5)
