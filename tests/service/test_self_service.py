"""Self-service (issue 15) against the real PostgreSQL: role owners, link codes proved by logging
in, approvers' links, `mine`, and `free` as PGCONN_SELF_SERVICE says (off, approve, auto)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from bot.core.approvals import FREES_PER_MINUTE
from bot.core.ownership import MAX_PENDING_CODES
from bot.model.access import AccessRole, Identity
from bot.model.ownership import (
    LINK_PREFIX,
    Freed,
    LinkChanged,
    LinkCodeIssued,
    LinkIssue,
    LinkRefused,
    LinkSource,
    MyRoles,
    NotAnOwner,
    NothingToFree,
    SelfServiceOff,
    WhoAmI,
)
from bot.model.problems import NoSuchRole, NotAllowed, TooManyRequests
from bot.model.requests import TargetOutcome
from bot.model.results import Decided, RequestOpened, RoleLimit
from bot.render.text import render_text
from bot.runtime import Runtime
from tests.conftest import PgWorld

OWNER, OTHER, APPROVER = Identity("U0OWN"), Identity("U0OTHER"), Identity("U0APP")
ALICE, BOB_USER = Identity("U0ALICE"), Identity("U0BOBUSER")


# --- helpers ------------------------------------------------------------------------------------


class Runtimes:
    """Started Runtimes on this test's own state database; ``owners``: PGCONN_ROLE_OWNERS."""

    def __init__(self, make_settings: Any, state_dsn: str) -> None:
        self._make_settings = make_settings
        self._state_dsn = state_dsn
        self.running: list[Runtime] = []

    async def __call__(self, owners: dict[str, Any] | None = None, **overrides: Any) -> Runtime:
        settings = self._make_settings(
            **{
                "approvers": "U0APP",
                "state_url": self._state_dsn,
                "role_owners": json.dumps(owners or {}),
                **overrides,
            }
        )
        runtime = Runtime.build(settings)
        await runtime.start(require_state=False)
        self.running.append(runtime)
        return runtime

    async def stop(self, runtime: Runtime) -> None:
        self.running.remove(runtime)
        await runtime.stop()


@pytest.fixture
async def make_runtime(make_settings: Any, fresh_state_dsn: str) -> AsyncIterator[Runtimes]:
    runtimes = Runtimes(make_settings, fresh_state_dsn)
    yield runtimes
    for runtime in list(runtimes.running):
        await runtimes.stop(runtime)


async def ask(runtime: Runtime, text: str, who: Identity) -> Any:
    return (await runtime.service.handle(text, who)).result


def state_rows(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return list(conn.execute(query, params).fetchall())


def state_exec(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def owned_roles(answer: Any) -> set[tuple[str, str, LinkSource]]:
    assert isinstance(answer, WhoAmI), render_text(answer)
    return {(o.target, o.role, o.source) for o in answer.owned}


def alive(world: PgWorld, pid: int) -> bool:
    row = world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row == (1,)


def state_of(world: PgWorld, pid: int) -> str | None:
    row = world.admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row[0] if row else None


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Busy:
    """A session of ``role`` running ``SELECT pg_sleep(30)`` in a thread until ``end``."""

    def __init__(self, world: PgWorld, role: str) -> None:
        self.world = world
        self.conn = world.connect(role, "busy")
        self.pid = world.pid_of(self.conn)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for(lambda: state_of(world, self.pid) == "active", f"pid {self.pid} to become active")

    def _run(self) -> None:
        try:
            self.conn.execute("SELECT pg_sleep(30)")
        except BaseException as exc:
            self.errors.append(exc)

    def end(self) -> None:
        self.world.admin.execute("SELECT pg_cancel_backend(%s)", (self.pid,))
        self.thread.join(timeout=5)


def idle_in_transaction(world: PgWorld, role: str) -> psycopg.Connection[Any]:
    conn = world.connect(role, "in-tx")
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    pid = world.pid_of(conn)
    wait_for(lambda: state_of(world, pid) == "idle in transaction", f"pid {pid} idle in transaction")
    return conn


async def issue_code(runtime: Runtime, role: str, who: Identity) -> str:
    """``link <role>``: the application_name that proves the login."""
    issued = await ask(runtime, f"link {role}", who)
    assert isinstance(issued, LinkCodeIssued), render_text(issued)
    assert issued.code.user_id == who.user_id and issued.code.role == role
    name = issued.code.application_name
    assert name.startswith(LINK_PREFIX) and len(name) == len(LINK_PREFIX) + 9
    return name


# --- 1. ownership by configuration ---------------------------------------------------------------


async def test_a_configured_owner_sees_only_their_roles(make_runtime: Any, world: PgWorld) -> None:
    bob, carol = world.role("bob"), world.role("carol")
    bob_pid = world.pid_of(world.connect(bob, "psql"))
    carol_pid = world.pid_of(world.connect(carol, "psql"))
    runtime = await make_runtime({"U0OWN": [bob]})

    mine = await ask(runtime, "mine", OWNER)
    assert isinstance(mine, MyRoles), render_text(mine)
    assert [s.role.name for s in mine.roles] == [bob]
    assert [c.pid for c in mine.roles[0].connections] == [bob_pid]
    shown = render_text(mine)
    assert carol not in shown and not re.search(rf"\b{carol_pid}\b", shown), shown

    who = await ask(runtime, "whoami", OWNER)
    assert owned_roles(who) == {("default", bob, LinkSource.CONFIG)}

    stranger = await ask(runtime, "mine", OTHER)
    assert isinstance(stranger, NotAnOwner) and stranger.subcommand == "mine"
    assert isinstance(await ask(runtime, "free", OTHER), NotAnOwner)


async def test_configured_ownership_per_target(make_runtime: Any, world: PgWorld, pg_dsn: str) -> None:
    bob = world.role("bob_t")
    world.connect(bob)
    runtime = await make_runtime({"U0OWN": {"default": [bob]}}, targets=json.dumps({"other": pg_dsn}))
    assert isinstance(await ask(runtime, "mine --db default", OWNER), MyRoles)
    elsewhere = await ask(runtime, "mine --db other", OWNER)
    assert isinstance(elsewhere, NotAnOwner) and elsewhere.target == "other"


async def test_an_owner_with_no_bot_role_may_still_mine_and_free(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_none")
    pid = world.pid_of(world.connect(bob))
    runtime = await make_runtime({"U0OWN": [bob]}, default_role="none")

    who = await ask(runtime, "whoami", OWNER)
    assert isinstance(who, WhoAmI) and who.role is AccessRole.NONE
    # A stranger with no role cannot read anything else …
    assert isinstance(await ask(runtime, f"list {bob}", OTHER), NotAllowed)
    # … but the owner sees and frees their own role.
    mine = await ask(runtime, "mine", OWNER)
    assert isinstance(mine, MyRoles) and [c.pid for c in mine.roles[0].connections] == [pid]
    opened = await ask(runtime, "free", OWNER)
    assert isinstance(opened, RequestOpened), render_text(opened)
    assert opened.request.requester == "U0OWN" and opened.request.pids == [pid]
    assert isinstance(await ask(runtime, "mine", OTHER), NotAnOwner)


# --- 2. links proved by logging in ---------------------------------------------------------------


async def test_the_right_code_on_the_right_role_links(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_proof")
    runtime = await make_runtime()
    assert isinstance(await ask(runtime, "mine", ALICE), NotAnOwner)
    name = await issue_code(runtime, bob, ALICE)

    pending = await ask(runtime, "whoami", ALICE)
    assert owned_roles(pending) == set() and [c.application_name for c in pending.pending] == [name]

    world.connect(bob, name)
    who = await ask(runtime, "whoami", ALICE)
    assert owned_roles(who) == {("default", bob, LinkSource.LOGIN)}
    assert who.pending == ()
    assert isinstance(await ask(runtime, "mine", ALICE), MyRoles)
    rows = state_rows(
        fresh_state_dsn,
        "SELECT actor, requester, target, role_name FROM pgconn.audit WHERE event = 'linked'",
    )
    assert rows == [("U0ALICE", "U0ALICE", "default", bob)]
    links = state_rows(fresh_state_dsn, "SELECT user_id, role_name, source FROM pgconn.role_link")
    assert links == [("U0ALICE", bob, "login")]


async def test_the_link_watcher_confirms_codes_by_itself(
    make_runtime: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bob = world.role("bob_watch")
    runtime = await make_runtime()
    name = await issue_code(runtime, bob, ALICE)
    assert runtime.link_watcher is not None
    assert await runtime.link_watcher.run_once() == []
    world.connect(bob, name)
    confirmed = await runtime.link_watcher.run_once()
    assert [(c.user_id, c.role) for c in confirmed] == [("U0ALICE", bob)]
    assert await runtime.link_watcher.run_once() == []  # once
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == {("default", bob, LinkSource.LOGIN)}
    assert state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.audit WHERE event = 'linked'") == [(1,)]


async def test_two_replicas_seeing_the_same_proof_link_once(
    make_runtime: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bob = world.role("bob_replicas")
    one, two = await make_runtime(), await make_runtime()
    world.connect(bob, await issue_code(one, bob, ALICE))
    assert one.link_watcher is not None and two.link_watcher is not None
    found = await asyncio.gather(one.link_watcher.run_once(), two.link_watcher.run_once(), ask(two, "whoami", ALICE))
    assert len(found[0]) + len(found[1]) <= 1
    assert state_rows(fresh_state_dsn, "SELECT user_id, role_name FROM pgconn.role_link") == [("U0ALICE", bob)]
    assert state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.audit WHERE event = 'linked'") == [(1,)]


async def test_a_wrong_code_links_nothing(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_wrong")
    runtime = await make_runtime()
    name = await issue_code(runtime, bob, ALICE)
    wrong = LINK_PREFIX + ("2222-2222" if not name.endswith("2222-2222") else "3333-3333")
    world.connect(bob, wrong)
    world.connect(bob, name.lower())  # not exactly the code either
    world.connect(bob, name[:-1])
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == set()
    assert await runtime.link_watcher.run_once() == []
    assert isinstance(await ask(runtime, "mine", ALICE), NotAnOwner)
    assert state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.role_link") == [(0,)]


async def test_the_right_code_on_another_roles_session_links_nothing(
    make_runtime: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bob, carol = world.role("bob_other"), world.role("carol_other")
    runtime = await make_runtime()
    name = await issue_code(runtime, bob, ALICE)
    world.connect(carol, name)  # ALICE can log in as carol, not as bob
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == set()
    assert await runtime.link_watcher.run_once() == []
    assert state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.role_link") == [(0,)]
    # The code is still pending for bob, and still works there.
    world.connect(bob, name)
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == {("default", bob, LinkSource.LOGIN)}


async def test_an_expired_code_links_nothing(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_expired")
    runtime = await make_runtime()
    name = await issue_code(runtime, bob, ALICE)
    state_exec(
        fresh_state_dsn,
        "UPDATE pgconn.link_code SET expires_at = now() - interval '1 second' WHERE code = %s",
        (name.removeprefix(LINK_PREFIX),),
    )
    world.connect(bob, name)
    who = await ask(runtime, "whoami", ALICE)
    assert owned_roles(who) == set() and who.pending == ()
    assert await runtime.link_watcher.run_once() == []
    assert state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.role_link") == [(0,)]


async def test_a_code_is_bound_to_who_asked_for_it(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_bound")
    runtime = await make_runtime()
    name = await issue_code(runtime, bob, ALICE)
    world.connect(bob, name)
    # Someone else asking sees nothing of ALICE's code and owns nothing because of it.
    other = await ask(runtime, "whoami", BOB_USER)
    assert owned_roles(other) == set() and other.pending == ()
    assert isinstance(await ask(runtime, "mine", BOB_USER), NotAnOwner)
    assert isinstance(await ask(runtime, "free", BOB_USER), NotAnOwner)
    assert state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.role_link") == [(0,)]
    # The watcher links the code's owner, and only them.
    await runtime.link_watcher.run_once()
    assert state_rows(fresh_state_dsn, "SELECT user_id FROM pgconn.role_link") == [("U0ALICE",)]
    assert owned_roles(await ask(runtime, "whoami", BOB_USER)) == set()


async def test_a_used_code_cannot_be_used_twice(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_twice")
    runtime = await make_runtime()
    name = await issue_code(runtime, bob, ALICE)
    first = world.connect(bob, name)
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == {("default", bob, LinkSource.LOGIN)}
    unlinked = await ask(runtime, f"unlink {bob}", ALICE)
    assert isinstance(unlinked, LinkChanged) and not unlinked.linked
    # The same code, on the same session and on a new one: no second link.
    first.close()
    world.connect(bob, name)
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == set()
    assert await runtime.link_watcher.run_once() == []
    assert state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.role_link") == [(0,)]
    assert state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.audit WHERE event = 'linked'") == [(1,)]


async def test_at_most_three_pending_codes_per_person(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_codes")
    runtime = await make_runtime()
    assert MAX_PENDING_CODES == 3
    names = [await issue_code(runtime, bob, ALICE) for _ in range(3)]
    assert len(set(names)) == 3
    refused = await ask(runtime, f"link {bob}", ALICE)
    assert isinstance(refused, LinkRefused) and refused.issue is LinkIssue.TOO_MANY_CODES
    who = await ask(runtime, "whoami", ALICE)
    assert [c.application_name for c in who.pending] == names
    # Per person: someone else still gets one.
    await issue_code(runtime, bob, BOB_USER)
    # An expired code no longer counts.
    state_exec(
        fresh_state_dsn,
        "UPDATE pgconn.link_code SET expires_at = now() - interval '1 second' WHERE code = %s",
        (names[0].removeprefix(LINK_PREFIX),),
    )
    await issue_code(runtime, bob, ALICE)


async def test_a_superuser_or_protected_role_cannot_be_linked(make_runtime: Any, world: PgWorld) -> None:
    shielded = world.role("shielded")
    runtime = await make_runtime(protected_roles=shielded)
    refused = await ask(runtime, "link postgres", ALICE)
    assert isinstance(refused, LinkRefused) and refused.issue is LinkIssue.PROTECTED, render_text(refused)
    refused = await ask(runtime, f"link {shielded}", ALICE)
    assert isinstance(refused, LinkRefused) and refused.issue is LinkIssue.PROTECTED
    granted = await ask(runtime, "link postgres <@U0ALICE2>", APPROVER)
    assert isinstance(granted, LinkRefused) and granted.issue is LinkIssue.PROTECTED
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == set()


async def test_an_unknown_role_cannot_be_linked(make_runtime: Any, world: PgWorld) -> None:
    runtime = await make_runtime()
    missing = f"pgct_{world.tag}_nobody"
    answer = await ask(runtime, f"link {missing}", ALICE)
    assert isinstance(answer, NoSuchRole) and answer.name == missing
    answer = await ask(runtime, f"link {missing} <@U0ALICE>", APPROVER)
    assert isinstance(answer, NoSuchRole)


# --- 3. approvers' links, unlink, mentions -------------------------------------------------------


async def test_an_approver_links_someone_else(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_grant")
    world.connect(bob)
    runtime = await make_runtime()
    changed = await ask(runtime, f"link {bob} <@U0OTHER>", APPROVER)
    assert isinstance(changed, LinkChanged), render_text(changed)
    assert (changed.user_id, changed.role, changed.linked, changed.by) == ("U0OTHER", bob, True, "U0APP")
    assert owned_roles(await ask(runtime, "whoami", OTHER)) == {("default", bob, LinkSource.GRANTED)}
    assert isinstance(await ask(runtime, "mine", OTHER), MyRoles)
    rows = state_rows(fresh_state_dsn, "SELECT actor, requester, role_name FROM pgconn.audit WHERE event = 'linked'")
    assert rows == [("U0APP", "U0OTHER", bob)]
    # and unlinks them again
    removed = await ask(runtime, f"unlink {bob} <@U0OTHER>", APPROVER)
    assert isinstance(removed, LinkChanged) and not removed.linked
    assert owned_roles(await ask(runtime, "whoami", OTHER)) == set()


async def test_a_non_approver_cannot_link_or_unlink_someone_else(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_nogrant")
    runtime = await make_runtime(requesters="U0OWN")
    refused = await ask(runtime, f"link {bob} <@U0OTHER>", OWNER)
    assert isinstance(refused, LinkRefused) and refused.issue is LinkIssue.NEEDS_APPROVER
    assert owned_roles(await ask(runtime, "whoami", OTHER)) == set()
    await ask(runtime, f"link {bob} <@U0OTHER>", APPROVER)
    refused = await ask(runtime, f"unlink {bob} <@U0OTHER>", OWNER)
    assert isinstance(refused, LinkRefused) and refused.issue is LinkIssue.NEEDS_APPROVER
    assert owned_roles(await ask(runtime, "whoami", OTHER)) == {("default", bob, LinkSource.GRANTED)}


async def test_linking_yourself_by_mention_asks_for_a_proof(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_selfmention")
    runtime = await make_runtime()
    assert isinstance(await ask(runtime, f"link {bob} <@U0ALICE>", ALICE), LinkCodeIssued)
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == set()


async def test_the_owner_unlinks_themselves(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_unlink")
    runtime = await make_runtime()
    world.connect(bob, await issue_code(runtime, bob, ALICE))
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == {("default", bob, LinkSource.LOGIN)}
    removed = await ask(runtime, f"unlink {bob}", ALICE)
    assert isinstance(removed, LinkChanged) and (removed.user_id, removed.linked) == ("U0ALICE", False)
    assert owned_roles(await ask(runtime, "whoami", ALICE)) == set()
    assert isinstance(await ask(runtime, "mine", ALICE), NotAnOwner)
    events = [r[0] for r in state_rows(fresh_state_dsn, "SELECT event FROM pgconn.audit ORDER BY id")]
    assert events == ["linked", "unlinked"]
    again = await ask(runtime, f"unlink {bob}", ALICE)
    assert isinstance(again, LinkRefused) and again.issue is LinkIssue.NOT_LINKED


async def test_configured_ownership_cannot_be_unlinked(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_conf")
    runtime = await make_runtime({"U0OWN": [bob]})
    refused = await ask(runtime, f"unlink {bob}", OWNER)
    assert isinstance(refused, LinkRefused) and refused.issue is LinkIssue.CONFIGURED
    refused = await ask(runtime, f"unlink {bob} <@U0OWN>", APPROVER)
    assert isinstance(refused, LinkRefused) and refused.issue is LinkIssue.CONFIGURED
    assert owned_roles(await ask(runtime, "whoami", OWNER)) == {("default", bob, LinkSource.CONFIG)}


async def test_unlink_audits_how_the_removed_link_was_made(
    make_runtime: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bob = world.role("bob_unlink_audit")
    runtime = await make_runtime()
    await ask(runtime, f"link {bob} <@U0OTHER>", APPROVER)
    removed = await ask(runtime, f"unlink {bob} <@U0OTHER>", APPROVER)
    assert isinstance(removed, LinkChanged) and not removed.linked
    rows = state_rows(
        fresh_state_dsn,
        "SELECT event, actor, requester, detail->'source'->>'value' FROM pgconn.audit ORDER BY id",
    )
    # The link removed was an approver's: the trail must not say it was proved by a login.
    assert rows == [
        ("linked", "U0APP", "U0OTHER", "granted"),
        ("unlinked", "U0APP", "U0OTHER", "granted"),
    ]


@pytest.mark.parametrize("mention", ["<@U0ABC|someone>", "<@U0ABC>", "U0ABC"])
async def test_mention_forms(make_runtime: Any, world: PgWorld, mention: str) -> None:
    bob = world.role("bob_mention")
    runtime = await make_runtime()
    changed = await ask(runtime, f"link {bob} {mention}", APPROVER)
    assert isinstance(changed, LinkChanged) and changed.user_id == "U0ABC", render_text(changed)
    assert owned_roles(await ask(runtime, "whoami", Identity("U0ABC"))) == {("default", bob, LinkSource.GRANTED)}
    removed = await ask(runtime, f"unlink {bob} {mention}", APPROVER)
    assert isinstance(removed, LinkChanged) and removed.user_id == "U0ABC" and not removed.linked


# --- 4. free, PGCONN_SELF_SERVICE=auto -----------------------------------------------------------


async def test_free_auto_ends_idle_sessions_and_leaves_active_ones(
    make_runtime: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bob, carol = world.role("bob_auto"), world.role("carol_auto")
    runtime = await make_runtime({"U0OWN": [bob]}, self_service="auto", default_role="none")
    idle_pid = world.pid_of(world.connect(bob))
    in_tx_pid = world.pid_of(idle_in_transaction(world, bob))
    carol_pid = world.pid_of(world.connect(carol))
    busy = Busy(world, bob)
    try:
        freed = await ask(runtime, "free", OWNER)
        assert isinstance(freed, Freed), render_text(freed)
        assert freed.active_left == 1
        assert freed.request.requester == "U0OWN"
        assert {t.pid: t.outcome for t in freed.request.targets} == {
            idle_pid: TargetOutcome.TERMINATED,
            in_tx_pid: TargetOutcome.TERMINATED,
        }
        assert not alive(world, idle_pid) and not alive(world, in_tx_pid)
        assert state_of(world, busy.pid) == "active"
        assert alive(world, carol_pid)
        events = state_rows(
            fresh_state_dsn, "SELECT event FROM pgconn.audit WHERE request_id = %s ORDER BY id", (freed.request.id,)
        )
        assert [e[0] for e in events] == ["requested", "self_service", "executed"]
    finally:
        busy.end()


async def test_free_auto_is_rate_limited(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob_rate", limit=10)
    runtime = await make_runtime({"U0OWN": [bob]}, self_service="auto")
    assert FREES_PER_MINUTE == 3
    for _ in range(3):
        pid = world.pid_of(world.connect(bob))
        freed = await ask(runtime, "free", OWNER)
        assert isinstance(freed, Freed), render_text(freed)
        assert not alive(world, pid)
    pid = world.pid_of(world.connect(bob))
    fourth = await ask(runtime, "free", OWNER)
    assert isinstance(fourth, TooManyRequests), render_text(fourth)
    assert fourth.per_minute == FREES_PER_MINUTE and fourth.last_minute == 3 and fourth.open_ids == ()
    assert alive(world, pid)
    refusals = state_rows(fresh_state_dsn, "SELECT requester FROM pgconn.audit WHERE event = 'refused'")
    assert refusals == [("U0OWN",)]


async def test_free_with_nothing_idle(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_nothing")
    runtime = await make_runtime({"U0OWN": [bob]}, self_service="auto")
    busy = Busy(world, bob)
    try:
        nothing = await ask(runtime, "free", OWNER)
        assert isinstance(nothing, NothingToFree) and nothing.active_left == 1
        assert state_of(world, busy.pid) == "active"
    finally:
        busy.end()


async def test_free_older_leaves_recent_idle_sessions(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_older")
    runtime = await make_runtime({"U0OWN": [bob]}, self_service="auto")
    pid = world.pid_of(world.connect(bob))
    nothing = await ask(runtime, "free --older 10m", OWNER)
    assert isinstance(nothing, NothingToFree) and nothing.older_than == timedelta(minutes=10)
    assert alive(world, pid)
    freed = await ask(runtime, "free --older 0s", OWNER)
    assert isinstance(freed, Freed), render_text(freed)
    assert not alive(world, pid)


# --- 5. free, PGCONN_SELF_SERVICE=approve --------------------------------------------------------


@pytest.mark.parametrize("bot_role", ["none", "viewer"])
async def test_free_approve_opens_a_request_an_approver_approves(
    make_runtime: Any, world: PgWorld, bot_role: str
) -> None:
    bob = world.role("bob_approve")
    runtime = await make_runtime({"U0OWN": [bob]}, self_service="approve", default_role=bot_role)
    idle_pid = world.pid_of(world.connect(bob))
    in_tx_pid = world.pid_of(idle_in_transaction(world, bob))
    waking = world.connect(bob, "waking")
    waking_pid = world.pid_of(waking)

    opened = await ask(runtime, "free", OWNER)
    assert isinstance(opened, RequestOpened), render_text(opened)
    assert opened.request.requester == "U0OWN"
    assert sorted(opened.request.pids) == sorted([idle_pid, in_tx_pid, waking_pid])
    assert alive(world, idle_pid) and alive(world, in_tx_pid)  # nothing signalled yet

    # The owner may not approve their own request.
    assert not isinstance(await ask(runtime, f"approve {opened.request.id}", OWNER), Decided)

    waking.close()
    busy = Busy(world, bob)  # another session takes its place …
    woke_pid = world.pid_of(world.connect(bob, "woke"))
    try:
        decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
        assert isinstance(decided, Decided), render_text(decided)
        outcomes = {t.pid: t.outcome for t in decided.request.targets}
        assert outcomes[idle_pid] == TargetOutcome.TERMINATED
        assert outcomes[in_tx_pid] == TargetOutcome.TERMINATED
        assert outcomes[waking_pid] in (TargetOutcome.GONE, TargetOutcome.REPLACED)
        assert not alive(world, idle_pid) and not alive(world, in_tx_pid)
        assert state_of(world, busy.pid) == "active" and alive(world, woke_pid)
    finally:
        busy.end()


async def test_free_approve_spares_a_session_that_became_active(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_woke")
    runtime = await make_runtime({"U0OWN": [bob]}, self_service="approve", default_role="none")
    idle_pid = world.pid_of(world.connect(bob))
    sleeper = world.connect(bob, "sleeper")
    sleeper_pid = world.pid_of(sleeper)
    opened = await ask(runtime, "free", OWNER)
    assert isinstance(opened, RequestOpened), render_text(opened)
    assert sorted(opened.request.pids) == sorted([idle_pid, sleeper_pid])

    thread = threading.Thread(target=lambda: _quietly(sleeper, "SELECT pg_sleep(30)"), daemon=True)
    thread.start()
    wait_for(lambda: state_of(world, sleeper_pid) == "active", "the sleeper to become active")
    try:
        decided = await ask(runtime, f"approve {opened.request.id}", APPROVER)
        assert isinstance(decided, Decided), render_text(decided)
        outcomes = {t.pid: t.outcome for t in decided.request.targets}
        assert outcomes == {idle_pid: TargetOutcome.TERMINATED, sleeper_pid: TargetOutcome.CHANGED}
        assert state_of(world, sleeper_pid) == "active"
        assert not alive(world, idle_pid)
    finally:
        world.admin.execute("SELECT pg_cancel_backend(%s)", (sleeper_pid,))
        thread.join(timeout=5)


def _quietly(conn: psycopg.Connection[Any], statement: str) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute(statement)


# --- 6. free, PGCONN_SELF_SERVICE=off ------------------------------------------------------------


async def test_free_off_is_refused(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_off")
    pid = world.pid_of(world.connect(bob))
    runtime = await make_runtime({"U0OWN": [bob]}, self_service="off")
    assert isinstance(await ask(runtime, "free", OWNER), SelfServiceOff)
    assert alive(world, pid)
    mine = await ask(runtime, "mine", OWNER)  # seeing is still allowed
    assert isinstance(mine, MyRoles) and mine.self_service == "off"


# --- 7. links survive a restart ------------------------------------------------------------------


async def test_links_survive_a_restart(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_restart")
    first = await make_runtime()
    world.connect(bob, await issue_code(first, bob, ALICE))
    assert owned_roles(await ask(first, "whoami", ALICE)) == {("default", bob, LinkSource.LOGIN)}
    await ask(first, f"link {bob} <@U0OTHER>", APPROVER)
    carol = world.role("carol_restart")
    pending = await issue_code(first, carol, ALICE)
    await make_runtime.stop(first)

    second = await make_runtime()
    assert owned_roles(await ask(second, "whoami", ALICE)) == {("default", bob, LinkSource.LOGIN)}
    assert owned_roles(await ask(second, "whoami", OTHER)) == {("default", bob, LinkSource.GRANTED)}
    assert isinstance(await ask(second, "mine", ALICE), MyRoles)
    # A code issued before the restart is still good after it.
    world.connect(carol, pending)
    assert owned_roles(await ask(second, "whoami", ALICE)) == {
        ("default", bob, LinkSource.LOGIN),
        ("default", carol, LinkSource.LOGIN),
    }


# --- 8. limit says whether the asker owns the role ----------------------------------------------


async def test_limit_tells_the_owner(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob_limit")
    runtime = await make_runtime({"U0OWN": [bob]})
    mine = await ask(runtime, f"limit {bob}", OWNER)
    assert isinstance(mine, RoleLimit) and mine.asked_by_owner
    theirs = await ask(runtime, f"limit {bob}", OTHER)
    assert isinstance(theirs, RoleLimit) and not theirs.asked_by_owner
    # A linked owner too.
    world.connect(bob, await issue_code(runtime, bob, ALICE))
    await ask(runtime, "whoami", ALICE)
    linked = await ask(runtime, f"limit {bob}", ALICE)
    assert isinstance(linked, RoleLimit) and linked.asked_by_owner


# --- found by an attacker's review ---------------------------------------------------------------


async def test_a_link_does_not_carry_over_to_a_role_made_again_under_its_name(
    make_runtime: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bob = world.role("bob")
    runtime = await make_runtime(self_service="auto")
    world.connect(bob, await issue_code(runtime, bob, OWNER))
    assert await runtime.link_watcher.run_once()
    # Next term: the role is dropped and made again for someone else, who leaves a session idle.
    for conn in list(world.connections):
        conn.close()
    world.admin.execute(f'DROP ROLE "{bob}"')
    world.admin.execute(f'CREATE ROLE "{bob}" LOGIN')
    newcomer = world.pid_of(world.connect(bob, "DBeaver"))

    mine = await ask(runtime, "mine", OWNER)
    assert isinstance(mine, MyRoles) and not mine.roles and mine.missing == (bob,), render_text(mine)
    assert "not the role you linked" in render_text(mine)
    freed = await ask(runtime, "free", OWNER)
    assert not isinstance(freed, Freed), render_text(freed)
    assert alive(world, newcomer)

    # Linking again (a new login proof) makes it theirs.
    world.connect(bob, await issue_code(runtime, bob, OWNER))
    assert await runtime.link_watcher.run_once()
    assert [s.role.name for s in (await ask(runtime, "mine", OWNER)).roles] == [bob]


async def test_concurrent_frees_are_capped_too(make_runtime: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    bob = world.role("bob", limit=None)
    runtime = await make_runtime({"U0OWN": [bob]}, self_service="auto")
    for _ in range(8):
        world.connect(bob, "DBeaver")
    answers = await asyncio.gather(*(ask(runtime, "free", OWNER) for _ in range(8)))
    assert any(isinstance(a, Freed) for a in answers), [render_text(a) for a in answers]
    # However many got past the first look at the count, the store let at most the cap through.
    (opened,) = state_rows(fresh_state_dsn, "SELECT count(*) FROM pgconn.request WHERE requester = 'U0OWN'")
    assert 1 <= opened[0] <= FREES_PER_MINUTE, [type(a).__name__ for a in answers]


async def test_approve_mode_free_is_capped_per_minute(make_runtime: Any, world: PgWorld) -> None:
    bob = world.role("bob", limit=None)
    runtime = await make_runtime({"U0OWN": [bob]})
    world.connect(bob, "DBeaver")
    answers = [await ask(runtime, "free", OWNER) for _ in range(FREES_PER_MINUTE + 1)]
    assert [type(a).__name__ for a in answers[:FREES_PER_MINUTE]] == ["RequestOpened"] * FREES_PER_MINUTE
    assert isinstance(answers[-1], TooManyRequests) and answers[-1].per_minute == FREES_PER_MINUTE


async def test_mine_leaves_out_protected_roles_and_the_proof_is_recorded(
    make_runtime: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bob, ops = world.role("bob"), world.role("ops")
    secret = world.connect(ops, "ops-tool")
    secret.execute("SELECT 'do not show this'")
    runtime = await make_runtime({"U0OWN": [bob, ops]}, protected_roles=ops)
    mine = await ask(runtime, "mine", OWNER)
    assert isinstance(mine, MyRoles) and [s.role.name for s in mine.roles] == [bob] and mine.refused == (ops,)
    assert "do not show this" not in render_text(mine) and "never self-service" in render_text(mine)

    proof = world.connect(bob, await issue_code(runtime, bob, OTHER))
    assert await runtime.link_watcher.run_once()
    rows = state_rows(fresh_state_dsn, "SELECT detail FROM pgconn.audit WHERE event = 'linked'")
    assert rows and f"pid {world.pid_of(proof)}" in json.dumps(rows[-1][0]), rows
