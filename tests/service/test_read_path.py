"""The core against the real PostgreSQL: list, limit, limits, stray, status, targets."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from bot.core.policy import NoGroupDirectory, Policy
from bot.core.service import CommandService, Thresholds
from bot.db.catalog import TargetCatalog
from bot.db.targets import TargetPools
from bot.model.access import AccessRole, Identity
from bot.model.problems import NoSuchRole, TargetUnreachable, UnknownTarget
from bot.model.results import LimitsOverview, RoleConnections, RoleLimit, ServerStatus, StrayConnections
from bot.render.problems import problem_text
from bot.render.text import render_text
from tests.conftest import PgWorld

ME = Identity("U0VIEWER")


def service_over(pools: TargetPools) -> CommandService:
    """The core as every test here uses it: everyone is a viewer."""
    policy = Policy(viewers=(), requesters=(), approvers=(), default_role=AccessRole.VIEWER, groups=NoGroupDirectory())
    return CommandService(catalog=TargetCatalog(pools), policy=policy, thresholds=Thresholds(0.7, 0.9))


@pytest.fixture
async def make_service(pg_dsn: str) -> AsyncIterator[Callable[..., Any]]:
    opened: list[TargetPools] = []

    async def make(targets: dict[str, str] | None = None, timeout: float = 2.0) -> CommandService:
        pools = TargetPools({"default": pg_dsn, **(targets or {})}, command_timeout=timeout)
        await pools.open()
        opened.append(pools)
        return service_over(pools)

    yield make
    for pools in opened:
        await pools.close()


async def run(service: CommandService, text: str) -> Any:
    return (await service.handle(text, ME)).result


async def test_list_shows_each_connection_in_start_order(world: PgWorld, make_service: Any) -> None:
    bob = world.role("bob", limit=5)
    conns = [world.connect(bob, app) for app in ("DBeaver", "pgAdmin 4", "psql", "DBeaver", "DataGrip")]
    service = await make_service()

    result = await run(service, f"list {bob}")

    assert isinstance(result, RoleConnections)
    assert [c.pid for c in result.connections] == [world.pid_of(c) for c in conns]
    assert [c.application for c in result.connections] == [
        "DBeaver",
        "pgAdmin 4",
        "psql",
        "DBeaver",
        "DataGrip",
    ]
    first = result.connections[0]
    assert first.database == "postgres" and first.client == "127.0.0.1" and first.state == "idle"
    assert first.connected_for is not None and first.idle_for is not None
    assert result.role.connection_limit == 5 and not result.restricted


async def test_unknown_role_is_told_apart_from_a_role_without_connections(world: PgWorld, make_service: Any) -> None:
    quiet = world.role("quiet")
    service = await make_service()

    unknown = await run(service, f"list {quiet}_nobody")
    empty = await run(service, f"list {quiet}")
    suggestion = await run(service, f"limit {quiet.upper()}")

    assert isinstance(unknown, NoSuchRole) and "no role named" in render_text(unknown)
    assert isinstance(empty, RoleConnections) and empty.connections == []
    assert isinstance(suggestion, NoSuchRole) and f"did you mean '{quiet}'" in render_text(suggestion)


async def test_the_bots_own_backends_are_counted_everywhere_listed_marked_and_never_proposed(
    world: PgWorld, pg_dsn: str
) -> None:
    bot_role = world.role("bot", limit=None)
    world.admin.execute(f"GRANT pg_monitor TO {bot_role}")
    pools = TargetPools({"default": world.dsn_for(bot_role)}, command_timeout=2.0)
    await pools.open()
    try:
        service = service_over(pools)
        student = world.role("student")
        spoof = world.connect(student, "pgconn-bot")  # the bot's application_name, not its login
        by_hand = world.connect(bot_role, "psql")  # the bot's login, not its application_name

        # The bot's pool may still grow between two commands (a connection opened on demand):
        # asked again until the bot's own connections hold still, the answers must agree.
        deadline = time.monotonic() + 5
        while True:
            own = await run(service, f"list {bot_role}")
            limit = await run(service, f"limit {bot_role}")
            status = await run(service, "status")
            stray = await run(service, f"stray {bot_role}")
            again = await run(service, f"list {bot_role}")
            assert isinstance(own, RoleConnections) and isinstance(again, RoleConnections)
            if [c.pid for c in own.connections] == [c.pid for c in again.connections]:
                break
            assert time.monotonic() < deadline, "the bot's own connections never held still"
        theirs = await run(service, f"list {student}")
        spoof_stray = await run(service, f"stray {student}")
    finally:
        await pools.close()

    assert isinstance(limit, RoleLimit)
    assert isinstance(status, ServerStatus) and isinstance(stray, StrayConnections)
    # list, limit and status agree on the count: the bot's own take the role's slots too
    assert len(own.connections) == limit.used >= 2
    marked = [c.pid for c in own.connections if c.own]
    assert marked and world.pid_of(by_hand) not in marked
    assert {c.pid for c in own.connections} - set(marked) == {world.pid_of(by_hand)}
    assert status.own_connections == len(marked)
    text = render_text(own)
    assert f"{marked[0]} (this bot)" in text and f"{world.pid_of(by_hand)} (this bot)" not in text
    # stray never proposes the bot's own, but counts them in the total
    assert [c.pid for c in stray.connections] == [world.pid_of(by_hand)]
    assert stray.total_connections == limit.used
    # a session merely named like the bot is listed and proposed like any other
    assert isinstance(theirs, RoleConnections)
    assert [(c.pid, c.own) for c in theirs.connections] == [(world.pid_of(spoof), False)]
    assert isinstance(spoof_stray, StrayConnections)
    assert [c.pid for c in spoof_stray.connections] == [world.pid_of(spoof)]


async def test_connection_limit_0_is_reported_as_logins_disabled(world: PgWorld, make_service: Any) -> None:
    locked = world.role("locked", limit=0)
    service = await make_service()

    limit = await run(service, f"limit {locked}")
    listed = await run(service, f"list {locked}")
    limits = await run(service, "limits")

    assert isinstance(limit, RoleLimit) and limit.role.logins_disabled
    assert f"{locked}: 0/0 — logins disabled for this role" in render_text(limit)
    assert "/pgconn stray" not in render_text(limit)
    assert isinstance(listed, RoleConnections) and "logins disabled for this role" in render_text(listed)
    assert isinstance(limits, LimitsOverview)
    assert [(r.role, r.used, r.limit) for r in limits.roles if r.role == locked] == [(locked, 0, 0)]
    assert limits.roles[0].logins_disabled  # lockouts come first
    assert "logins disabled" in render_text(limits)


async def test_limits_lists_databases_at_their_own_limit_or_closed(world: PgWorld, make_service: Any) -> None:
    course = world.database("course", limit=2)
    frozen = world.database("frozen", limit=0)
    closed = world.database("closed")
    roomy = world.database("roomy", limit=10)
    world.admin.execute(f"ALTER DATABASE {closed} ALLOW_CONNECTIONS false")
    bob = world.role("bob", limit=None)
    world.connect(bob, database=course)
    world.connect(bob, database=course)
    world.connect(bob, database=roomy)
    service = await make_service()

    limits = await run(service, "limits")
    limit = await run(service, f"limit {bob}")

    assert isinstance(limits, LimitsOverview)
    ours = {
        d.database: (d.used, d.limit, d.allows_connections) for d in limits.databases if d.database in world.databases
    }
    assert ours == {course: (2, 2, True), frozen: (0, 0, True), closed: (0, -1, False)}
    text = render_text(limits)
    assert f"database {course} has its own limit: 2/2 — at its limit" in text
    assert f"database {frozen}: 0/0 — logins disabled for this database" in text
    assert f"database {closed}: logins disabled for this database" in text
    assert "template0" not in text  # closed by design, never worth a line
    assert isinstance(limit, RoleLimit)
    assert f"database {course} has its own limit: 2/2 — at its limit" in render_text(limit)


async def test_limit_reports_used_over_limit_and_what_it_means(world: PgWorld, make_service: Any) -> None:
    full, half, free, boss = (
        world.role("full", limit=5),
        world.role("half", limit=5),
        world.role("free", limit=None),
        world.role("boss", limit=2, superuser=True),
    )
    for _ in range(5):
        world.connect(full)
    for _ in range(3):
        world.connect(half)
    world.connect(boss)
    service = await make_service()

    at_limit = await run(service, f"limit {full}")
    partly = await run(service, f"limit {half}")
    unlimited = await run(service, f"limit {free}")
    superuser = await run(service, f"limit {boss}")

    assert isinstance(at_limit, RoleLimit) and (at_limit.used, at_limit.at_limit) == (5, True)
    assert isinstance(partly, RoleLimit) and (partly.used, partly.left, partly.at_limit) == (3, 2, False)
    assert isinstance(unlimited, RoleLimit) and not unlimited.role.limited and unlimited.left is None
    assert isinstance(superuser, RoleLimit) and not superuser.role.limited and superuser.used == 1


async def test_limit_shows_the_databases_own_connection_limit(world: PgWorld, make_service: Any) -> None:
    course = world.database("course", limit=3)
    bob = world.role("bob")
    world.connect(bob, database=course)
    world.connect(bob, database=course)
    service = await make_service()

    result = await run(service, f"limit {bob}")

    assert isinstance(result, RoleLimit)
    assert [(d.database, d.used, d.limit) for d in result.database_limits] == [(course, 2, 3)]


async def test_limits_lists_roles_at_or_near_their_limit_fullest_first(world: PgWorld, make_service: Any) -> None:
    four, five, one, ten = (
        world.role("four", limit=5),
        world.role("five", limit=5),
        world.role("one", limit=5),
        world.role("ten", limit=10),
    )
    for role, count in ((four, 4), (five, 5), (one, 1), (ten, 8)):
        for _ in range(count):
            world.connect(role)
    service = await make_service()

    result = await run(service, "limits")

    assert isinstance(result, LimitsOverview)
    ours = [(r.role, r.used, r.limit) for r in result.roles if r.role.startswith(f"pgct_{world.tag}")]
    # equal fill (80%): more connections first
    assert ours == [(five, 5, 5), (ten, 8, 10), (four, 4, 5)]


async def test_stray_lists_idle_sessions_longest_idle_first(world: PgWorld, make_service: Any) -> None:
    bob = world.role("bob")
    oldest, middle, newest = (world.connect(bob, name) for name in ("a", "b", "c"))
    for conn in (oldest, middle, newest):  # state_change order = idle order
        conn.execute("SELECT 1")
    middle.execute("BEGIN")
    middle.execute("SELECT 1")  # idle in transaction, and now the most recently changed
    busy = world.connect(bob, "busy")
    sleeper = threading.Thread(target=_sleep_until_cancelled, args=(busy,))
    sleeper.start()
    service = await make_service()
    try:
        await _wait_until(lambda: _state_of(world, world.pid_of(busy)) == "active")

        result = await run(service, f"stray {bob}")
        later = await run(service, f"stray {bob} --idle 1h")
    finally:
        world.admin.execute("SELECT pg_cancel_backend(%s)", (world.pid_of(busy),))
        sleeper.join(5)

    assert isinstance(result, StrayConnections)
    assert [c.pid for c in result.connections] == [world.pid_of(c) for c in (oldest, newest, middle)]
    assert result.connections[2].state == "idle in transaction"
    assert result.total_connections == 4
    assert isinstance(later, StrayConnections) and later.connections == []


async def test_stray_idle_threshold_keeps_only_sessions_idle_that_long(world: PgWorld, make_service: Any) -> None:
    bob = world.role("bob")
    old = world.connect(bob, "old")
    await _wait_until(lambda: _idle_seconds(world, world.pid_of(old)) >= 1.0, timeout=5)
    world.connect(bob, "new")
    service = await make_service()

    result = await run(service, f"stray {bob} --idle 1s")

    assert isinstance(result, StrayConnections)
    assert [c.pid for c in result.connections] == [world.pid_of(old)]


async def test_status_counts_client_backends_against_usable_slots(world: PgWorld, make_service: Any) -> None:
    bob = world.role("bob", limit=None)
    idle_tx = world.connect(bob, "leaky-app")
    idle_tx.execute("BEGIN")
    idle_tx.execute("SELECT 1")
    for _ in range(3):
        world.connect(bob, "leaky-app")
    service = await make_service()

    result = await run(service, "status")
    expected = world.admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchone()
    settings = world.admin.execute(
        "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
    ).fetchone()

    assert isinstance(result, ServerStatus)
    assert expected is not None and settings is not None
    # the admin connection used for counting is one more than the bot saw
    assert result.client_backends in (expected[0] - 1, expected[0])
    assert result.max_connections == settings[0] and result.superuser_reserved == settings[1]
    assert result.usable_slots == settings[0] - settings[1] - result.reserved
    assert result.by_state.get("idle in transaction", 0) >= 1
    assert (bob, 4) in result.top_roles
    assert result.longest_idle_in_transaction is not None
    assert result.health in ("HEALTHY", "WARNING", "CRITICAL")


async def test_unknown_target_lists_the_known_ones(make_service: Any) -> None:
    service = await make_service({"reporting": "postgresql://postgres@127.0.0.1:1/postgres"})

    result = await run(service, "status --db nope")

    assert isinstance(result, UnknownTarget)
    assert "nope" in render_text(result) and "default" in render_text(result) and "reporting" in render_text(result)


async def test_a_refusing_target_is_reported_fast_and_others_keep_working(make_service: Any) -> None:
    service = await make_service({"dead": "postgresql://postgres@127.0.0.1:1/postgres"})

    started = time.monotonic()
    dead = await run(service, "status --db dead")
    elapsed = time.monotonic() - started
    alive = await run(service, "status")

    assert isinstance(dead, TargetUnreachable)
    assert problem_text(dead).startswith("target dead is unreachable: ")
    assert "refused" in render_text(dead).lower()
    assert elapsed < 2.0
    assert isinstance(alive, ServerStatus)


async def test_a_silent_target_is_reported_within_the_budget(make_service: Any) -> None:
    server = await asyncio.start_server(_never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        service = await make_service({"silent": f"postgresql://postgres@127.0.0.1:{port}/postgres"}, timeout=1.5)
        started = time.monotonic()
        result = await run(service, "list bob --db silent")
        elapsed = time.monotonic() - started
    finally:
        server.close()

    assert isinstance(result, TargetUnreachable)
    assert "target silent is unreachable" in render_text(result)
    assert elapsed < 3.0


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read()  # hold the connection open, answer nothing
    finally:
        writer.close()


def _sleep_until_cancelled(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.errors.QueryCanceled):
        conn.execute("SELECT pg_sleep(30)")


def _state_of(world: PgWorld, pid: int) -> str | None:
    row = world.admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row[0] if row else None


def _idle_seconds(world: PgWorld, pid: int) -> float:
    row = world.admin.execute(
        "SELECT extract(epoch FROM now() - state_change)::float8 FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


async def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_without_pg_monitor_counts_stay_true_and_the_answer_says_details_are_hidden(
    world: PgWorld,
) -> None:
    weak_bot = world.role("weakbot", limit=None)  # no pg_monitor: other sessions' details are hidden
    pools = TargetPools({"default": world.dsn_for(weak_bot)}, command_timeout=2.0)
    await pools.open()
    try:
        service = service_over(pools)
        bob = world.role("bob", limit=5)
        conns = [world.connect(bob) for _ in range(5)]

        listed = await run(service, f"list {bob}")
        limit = await run(service, f"limit {bob}")
    finally:
        await pools.close()

    assert isinstance(listed, RoleConnections) and listed.restricted
    assert sorted(c.pid for c in listed.connections) == sorted(world.pid_of(c) for c in conns)
    assert isinstance(limit, RoleLimit) and limit.used == 5 and limit.at_limit


async def test_a_target_that_goes_silent_after_connecting_is_reported_within_the_budget(
    make_service: Any, pg_dsn: str
) -> None:
    proxy = _FreezableProxy()
    port = await proxy.start()
    try:
        service = await make_service({"flaky": f"postgresql://postgres@127.0.0.1:{port}/postgres"}, timeout=1.5)
        assert isinstance(await run(service, "status --db flaky"), ServerStatus)
        proxy.frozen = True
        started = time.monotonic()
        result = await run(service, "status --db flaky")
        elapsed = time.monotonic() - started
        healthy = await run(service, "status")
    finally:
        proxy.close()

    assert isinstance(result, TargetUnreachable) and "target flaky is unreachable" in render_text(result)
    assert elapsed < 2.5
    assert isinstance(healthy, ServerStatus)


class _FreezableProxy:
    """A loopback TCP proxy to the test server that can stop forwarding (a hung network)."""

    def __init__(self) -> None:
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.frozen:
                continue  # swallow: the peer waits forever
            writer.write(data)
            await writer.drain()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server:
            self._server.close()
