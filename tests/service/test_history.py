"""Monitor history against the real PostgreSQL: one row per server per cycle with the roles that
matter, thinned as it ages and trimmed after PGCONN_HISTORY_RETENTION by the housekeeper,
`history` with data, without and with gaps, the sparkline of `status` and of a role-at-limit
alert, and the leader's fence."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bot.db.history import HistoryStore
from bot.model.access import Identity
from bot.model.history import HistoryReport, RoleCount, Sample, merge
from bot.model.results import ServerStatus
from bot.render.history import GAP, SPARKS
from bot.render.text import CONSOLE, render_text
from bot.runtime import Runtime
from tests.conftest import PgWorld

VIEWER = Identity("U0VIEWER")


@pytest.fixture
async def runtimes(make_settings: Any, fresh_state_dsn: str) -> AsyncIterator[Any]:
    started: list[Runtime] = []

    async def start(**overrides: Any) -> Runtime:
        settings = make_settings(**{"state_url": fresh_state_dsn, **overrides})
        runtime = Runtime.build(settings)
        await runtime.start(require_state=False)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        await runtime.stop()


async def ask(runtime: Runtime, text: str) -> Any:
    return (await runtime.service.handle(text, VIEWER)).result


def rows(dsn: str, where: str = "true", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(f"SELECT * FROM pgconn.history WHERE {where} ORDER BY at, target", params).fetchall()


def state_now(dsn: str) -> datetime:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def put(dsn: str, samples: list[Sample]) -> None:
    """History rows written straight into the state database (as if recorded long ago)."""
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(
            "INSERT INTO pgconn.history (target, at, covers, samples, client_backends, usable_slots, by_state, roles)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    s.target,
                    s.at,
                    s.covers,
                    s.samples,
                    s.client_backends,
                    s.usable_slots,
                    Jsonb(dict(s.by_state)),
                    Jsonb({r: [c.used, c.limit] for r, c in s.roles.items()}),
                )
                for s in samples
            ],
        )


def sample(at: datetime, backends: int, roles: dict[str, tuple[int, int]] | None = None) -> Sample:
    return Sample(
        target="default",
        at=at,
        covers=60,
        client_backends=backends,
        usable_slots=97,
        by_state={"idle": backends - 1, "active": 1},
        roles={role: RoleCount(*pair) for role, pair in (roles or {}).items()},
    )


async def test_each_cycle_keeps_one_row_per_server_with_the_roles_that_matter(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str
) -> None:
    half, low, full, guard = (
        world.role("half", limit=4),
        world.role("low", limit=10),
        world.role("full", limit=2),
        world.role("guard", limit=None),
    )
    for role, sessions in ((half, 2), (low, 1), (full, 2), (guard, 1)):
        for _ in range(sessions):
            world.connect(role, "DBeaver")
    reporting = world.database("reporting")
    runtime = await runtimes(protected_roles=guard, targets=json.dumps({"reporting": world.dsn_for(None, reporting)}))
    for _ in range(3):
        assert await runtime.monitor.run_cycle()

    kept = rows(fresh_state_dsn)
    assert len(kept) == 3 and {r["target"] for r in kept} == {"default"}  # one per server (two targets on it)
    last = kept[-1]
    assert last["roles"][half] == [2, 4] and last["roles"][full] == [2, 2]  # at half their limit or more
    assert last["roles"][guard] == [1, -1]  # protected: kept whatever its fill
    assert low not in last["roles"]  # under half its limit: not kept
    assert last["client_backends"] >= 6 and sum(last["by_state"].values()) == last["client_backends"]
    assert last["usable_slots"] > 0 and last["covers"] == 60  # a monitor driven by hand: a minute each

    # The alert of the role at its limit carries its last 24 hours.
    with psycopg.connect(fresh_state_dsn) as conn:
        (details,) = conn.execute(
            "SELECT details FROM pgconn.alert WHERE kind = 'role_limit' AND subject = %s", (full,)
        ).fetchone() or (None,)
    assert details is not None and details["history"]["values"][-1] == 2, details

    # `history` for a role and for the server, through the other target's name too.
    answer = await ask(runtime, f"history {full} --db reporting")
    assert isinstance(answer, HistoryReport) and answer.peak == 2 and answer.limit == 2 and answer.at_limit
    text = render_text(answer, CONSOLE)
    assert f"{full} on reporting, last 24h: peak 2/2 connections" in text and "at or over its limit: 1 time" in text
    server = await ask(runtime, "history")
    assert isinstance(server, HistoryReport) and server.samples == 3 and server.peak == last["client_backends"]


async def test_status_shows_the_servers_last_24_hours(world: PgWorld, runtimes: Any) -> None:
    runtime = await runtimes()
    before = await ask(runtime, "status")
    assert isinstance(before, ServerStatus) and "last 24h" not in render_text(before)  # nothing recorded yet
    role = world.role("busy", limit=None)
    for cycle in range(3):
        world.connect(role, f"app{cycle}")
        assert await runtime.monitor.run_cycle()
    status = await ask(runtime, "status")
    assert isinstance(status, ServerStatus) and status.history is not None and status.history.samples == 3
    (line,) = [line for line in render_text(status, CONSOLE).splitlines() if line.startswith("last 24h: ")]
    assert any(mark in line for mark in SPARKS) and "client backends, peak" in line


async def test_history_with_no_data_and_with_gaps(runtimes: Any, fresh_state_dsn: str) -> None:
    runtime = await runtimes()
    empty = await ask(runtime, "history bob")
    assert isinstance(empty, HistoryReport) and empty.samples == 0
    assert "No history yet for bob in the last 24h" in render_text(empty, CONSOLE)

    now = state_now(fresh_state_dsn)
    minute = timedelta(minutes=1)
    earlier = [sample(now - 180 * minute + k * minute, 20, {"bob": (5 if 10 <= k < 40 else 3, 5)}) for k in range(60)]
    later = [sample(now - 30 * minute + k * minute, 25, {"bob": (4, 5)}) for k in range(30)]  # after 90 minutes off
    put(fresh_state_dsn, earlier + later)

    answer = await ask(runtime, "history bob --since 4h")
    assert isinstance(answer, HistoryReport) and answer.samples == 90 and (answer.peak, answer.limit) == (5, 5)
    assert len(answer.gaps) == 1 and answer.gaps[0].length > timedelta(minutes=85)
    assert len(answer.at_limit) == 1 and answer.at_limit[0].length == timedelta(minutes=30)
    text = render_text(answer, CONSOLE)
    assert GAP in text.splitlines()[1] and "1 gap" in text and "nothing recorded" in text
    assert "at or over its limit: 1 time, 30m 00s in all" in text
    assert "History begins" in text  # the period asked for is longer than what there is

    server = await ask(runtime, "history --since 2h")
    assert isinstance(server, HistoryReport) and server.role is None and server.peak == 25
    nobody = await ask(runtime, "history carol")
    assert isinstance(nobody, HistoryReport) and nobody.samples == 90 and not nobody.recorded
    assert "never used half of its CONNECTION LIMIT" in render_text(nobody, CONSOLE)


async def test_old_history_is_thinned_and_what_is_past_the_retention_goes(runtimes: Any, fresh_state_dsn: str) -> None:
    runtime = await runtimes(history_retention="14d")
    now = state_now(fresh_state_dsn)
    minute = timedelta(minutes=1)

    def aligned(age: timedelta, resolution: int) -> datetime:
        at = now - age
        return datetime.fromtimestamp(at.timestamp() // resolution * resolution, UTC)

    two_days = aligned(timedelta(days=2), 300)  # per 5 minutes
    ten_days = aligned(timedelta(days=10), 3600)  # per hour
    recent = [sample(now - k * minute, 5) for k in range(1, 4)]  # kept as recorded
    day_old = [sample(two_days + k * minute, 10 + k, {"bob": (k, 9)}) for k in range(10)]
    week_old = [sample(ten_days + k * minute, 30 + k % 60, {"bob": (1, 9)}) for k in range(120)]
    too_old = [sample(now - timedelta(days=15, minutes=k), 1) for k in range(5)]
    put(fresh_state_dsn, recent + day_old + week_old + too_old)

    trimmed = await runtime.housekeeper.trim(now=True)
    assert trimmed is not None and trimmed["history"] == 5
    assert trimmed["history merged"] == (10 - 2) + (120 - 2)

    hours = rows(fresh_state_dsn, "covers = 3600")
    assert [(r["at"], r["samples"], r["client_backends"]) for r in hours] == [
        (ten_days, 60, 89),
        (ten_days + 60 * minute, 60, 89),
    ]
    fives = rows(fresh_state_dsn, "covers = 300")
    assert [(r["at"], r["samples"], r["client_backends"], r["roles"]["bob"]) for r in fives] == [
        (two_days, 5, 14, [4, 9]),
        (two_days + 5 * minute, 5, 19, [9, 9]),
    ]
    # The database merges as the model says.
    expected = merge(day_old, 300)
    assert [(dict(s.by_state), dict(s.roles)) for s in expected] == [
        (r["by_state"], {"bob": RoleCount(*r["roles"]["bob"])}) for r in fives
    ]
    assert len(rows(fresh_state_dsn, "covers = 60")) == 3  # the last day stays as recorded

    again = await runtime.housekeeper.trim(now=True)  # nothing more to do
    assert again is not None and (again["history"], again["history merged"]) == (0, 0)

    # Thinned history still draws a line (hourly marks), without gaps between its rows.
    answer = await ask(runtime, "history bob --since 11d")
    assert isinstance(answer, HistoryReport) and answer.peak == 9
    assert not [g for g in answer.gaps if g.end < now - timedelta(days=3)], answer.gaps


async def test_history_retention_0_keeps_none(world: PgWorld, runtimes: Any, fresh_state_dsn: str) -> None:
    now = state_now(fresh_state_dsn)
    runtime = await runtimes(history_retention="0")
    put(fresh_state_dsn, [sample(now - timedelta(minutes=5), 3)])
    assert await runtime.monitor.run_cycle()
    assert len(rows(fresh_state_dsn)) == 1  # the cycle recorded nothing
    trimmed = await runtime.housekeeper.trim(now=True)
    assert trimmed is not None and trimmed["history"] == 1 and rows(fresh_state_dsn) == []
    answer = await ask(runtime, "history")
    assert "PGCONN_HISTORY_RETENTION=0 keeps none" in render_text(answer, CONSOLE)
    status = await ask(runtime, "status")
    assert isinstance(status, ServerStatus) and status.history is None


async def test_a_replica_that_no_longer_leads_writes_no_history(runtimes: Any, fresh_state_dsn: str) -> None:
    runtime = await runtimes()
    assert await runtime.monitor.run_cycle()  # this one leads
    store = HistoryStore(runtime.state)
    written = await store.record(sample(state_now(fresh_state_dsn), 3), fence=(uuid.uuid4(), 1))
    assert written is False and len(rows(fresh_state_dsn)) == 1  # only the leader's own cycle
