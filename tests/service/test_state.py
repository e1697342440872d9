"""The bot's own state database: migrations from earlier versions, and nothing others can stall."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot.core.monitor import leader_lease
from bot.db.alerts import AlertStore
from bot.db.requests import RequestStore
from bot.db.sql import state as bot_sql
from bot.db.sql.state import STATE_MIGRATIONS
from bot.db.state import StateStore
from bot.model.audit import NewAuditEntry, Outcomes
from bot.model.requests import AuditEvent, SignalOutcome, TargetOutcome
from tests.conftest import PgWorld

SECRET_SQL = "  update accounts set password = 'hunter2'"

LATEST = STATE_MIGRATIONS[-1][0]


async def _migrated(dsn: str, upto: int | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> list[int]:
    if upto is not None and monkeypatch is not None:
        monkeypatch.setattr(bot_sql, "STATE_MIGRATIONS", [m for m in bot_sql.STATE_MIGRATIONS if m[0] <= upto])
    store = StateStore(dsn)
    await store.open()
    try:
        return await store.migrate()
    finally:
        await store.close()
        if monkeypatch is not None:
            monkeypatch.undo()


async def test_a_version_2_database_with_data_migrates_and_keeps_it(
    fresh_state_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await _migrated(fresh_state_dsn, upto=2, monkeypatch=monkeypatch) == [1, 2]
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pgconn.request (expires_at, requester, action, scope, target, command_text,
                                           required_approvals)
               VALUES (now() + interval '1 hour', 'U0REQ', 'terminate', 'pids', 'default', 'kill 1', 1)"""
        )
        conn.execute("INSERT INTO pgconn.audit (event, request_id, actor) VALUES ('requested', 1, 'U0REQ')")
        conn.execute("INSERT INTO pgconn.audit_outbox (audit_id, channel) VALUES (1, 'C0AUDIT')")
        conn.execute(
            """INSERT INTO pgconn.alert (target, kind, subject, severity, summary, details)
               VALUES ('default', 'long_query', '1:1', 'warning', 'pid 1 has a long-running query',
                       %s::jsonb)""",
            (json.dumps({"pid": 1, "query": SECRET_SQL}),),
        )
        conn.execute(
            """INSERT INTO pgconn.alert (target, kind, subject, severity, summary, shown_state, message_ts)
               VALUES ('default', 'role_limit', 'bob', 'critical', 'bob is over its connection limit on default',
                       'critical:bob is over its connection limit on default', '1.1')"""
        )

    assert await _migrated(fresh_state_dsn) == list(range(3, LATEST + 1))
    with psycopg.connect(fresh_state_dsn) as conn:
        assert conn.execute("SELECT status FROM pgconn.request").fetchone() == ("pending",)
        assert conn.execute("SELECT lane, parked_at FROM pgconn.audit_outbox").fetchone() == (0, None)
        (details,) = conn.execute("SELECT details FROM pgconn.alert WHERE kind = 'long_query'").fetchone()  # type: ignore[misc]
        shapes = conn.execute("SELECT kind, shape, shown_state FROM pgconn.alert ORDER BY id").fetchall()
    assert details == {"pid": 1, "query": f"UPDATE … ({len(SECRET_SQL)} chars)"}  # the stored SQL text is gone
    # Alerts keep data, not words: the shape their summary had; a posted message is not edited for it.
    assert shapes == [("long_query", "", None), ("role_limit", "over", "critical:over")]
    assert await _migrated(fresh_state_dsn) == []  # and again: nothing left to do


async def test_a_read_only_auditor_of_the_trail_is_fine(fresh_state_dsn: str, world: PgWorld) -> None:
    await _migrated(fresh_state_dsn)
    auditor = world.role("auditor", limit=None)
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pgconn TO {}").format(sql.Identifier(auditor)))
        conn.execute(sql.SQL("GRANT SELECT ON pgconn.audit TO {}").format(sql.Identifier(auditor)))
    try:
        assert await _migrated(fresh_state_dsn) == []  # started normally
    finally:
        with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(auditor)))


async def test_locks_anyone_can_take_never_stall_the_bot(fresh_state_dsn: str, world: PgWorld) -> None:
    student = world.role("locker", limit=None)
    database = psycopg.conninfo.conninfo_to_dict(fresh_state_dsn)["dbname"]
    locker = world.connect(student, database=database)
    # Every advisory lock an earlier version used (migration, monitor leader, requester gate).
    for key in ("1507393541", "1507393542", "1507393543", "1507393544, pg_catalog.hashtext('U0REQ')"):
        locker.execute(f"SELECT pg_catalog.pg_advisory_lock({key})")  # type: ignore[arg-type]

    assert await _migrated(fresh_state_dsn) == list(range(1, LATEST + 1))
    store = StateStore(fresh_state_dsn)
    await store.open()
    try:
        alerts = AlertStore(store)
        me, other = uuid.uuid4(), uuid.uuid4()
        assert await alerts.hold_leadership(me, leader_lease(60))
        assert not await alerts.hold_leadership(other, leader_lease(60))  # one leader at a time
        await alerts.release_leadership(me)
        assert await alerts.hold_leadership(other, leader_lease(60))  # handed over at once
    finally:
        await store.close()


@pytest.mark.parametrize(("interval", "lease"), [(60, 24), (10, 15), (5, 7.5), (0.2, 3)])
def test_a_hung_leader_is_replaced_within_two_intervals_and_30_seconds(interval: float, lease: float) -> None:
    # Replaced when the lease runs out, plus at most a sixth of it (how often the others try).
    assert leader_lease(interval) == lease
    assert lease * 7 / 6 <= min(2 * interval, 30) or lease == 3


async def test_what_is_done_is_trimmed_and_the_audit_is_kept(fresh_state_dsn: str) -> None:
    await _migrated(fresh_state_dsn)
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pgconn.request (created_at, expires_at, requester, action, scope, target, command_text,
                                           required_approvals, status, finished_at)
               SELECT now() - make_interval(days => d), now() - make_interval(days => d), 'U0REQ', 'terminate',
                      'pids', 'default', 'kill 1', 1, s, now() - make_interval(days => d)
                 FROM (VALUES (100, 'executed'), (95, 'denied'), (91, 'expired'), (10, 'executed'), (100, 'pending'))
                      AS v(d, s)"""
        )
        conn.execute(
            """INSERT INTO pgconn.request_target (request_id, pid, backend_start, role_oid, role_name, observed_at)
               SELECT id, 1, now(), 10, 'bob', now() FROM pgconn.request"""
        )
        conn.execute("INSERT INTO pgconn.approval (request_id, approver) SELECT id, 'U0APP' FROM pgconn.request")
        conn.execute("INSERT INTO pgconn.audit (event, request_id) SELECT 'requested', id FROM pgconn.request")
        conn.execute(
            """INSERT INTO pgconn.audit_outbox (audit_id, channel, delivered_at)
               SELECT id, 'C0AUDIT', CASE WHEN id % 2 = 0 THEN now() - interval '2 days' END FROM pgconn.audit"""
        )
        conn.execute(
            """INSERT INTO pgconn.alert (target, kind, subject, severity, shape, resolved_at, reply_posted)
               VALUES ('default', 'role_limit', 'old', 'warning', 'at', now() - interval '100 days', true),
                      ('default', 'role_limit', 'new', 'warning', 'at', now() - interval '1 day', true),
                      ('default', 'role_limit', 'open', 'warning', 'at', NULL, false)"""
        )

    store = StateStore(fresh_state_dsn)
    await store.open()
    try:
        trimmed = await RequestStore(store, audit_channel="C0AUDIT").trim(90 * 86400, batch=2)
    finally:
        await store.close()
    assert trimmed == {"outbox": 2, "requests": 3, "alerts": 1, "gates": 0, "replicas": 0}
    with psycopg.connect(fresh_state_dsn) as conn:
        statuses = sorted(r[0] for r in conn.execute("SELECT status FROM pgconn.request"))
        assert statuses == ["executed", "pending"]  # the recent one, and the open one
        assert conn.execute("SELECT count(*) FROM pgconn.request_target").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM pgconn.audit").fetchone() == (5,)  # complete, always
        assert conn.execute("SELECT count(*) FROM pgconn.audit_outbox").fetchone() == (3,)  # undelivered stay
        assert sorted(r[0] for r in conn.execute("SELECT subject FROM pgconn.alert")) == ["new", "open"]


async def test_a_lease_counts_only_while_its_holder_is_alive(fresh_state_dsn: str) -> None:
    await _migrated(fresh_state_dsn)
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pgconn.audit (event, actor) VALUES ('requested', 'U0REQ'), ('approved', 'U0APP')")
        conn.execute("INSERT INTO pgconn.audit_outbox (audit_id, channel) SELECT id, 'C0AUDIT' FROM pgconn.audit")
    store = StateStore(fresh_state_dsn)
    await store.open()
    try:
        one = RequestStore(store, audit_channel="C0AUDIT")
        other = RequestStore(store, audit_channel="C0AUDIT")
        await one.heartbeat()
        claimed = await one.claim_delivery(30)
        assert claimed is not None and claimed.entry.id == 1
        await other.heartbeat()
        assert await other.claim_delivery(30) is None  # leased by a replica that is alive: it waits

        await one.goodbye()  # stopped (or silent for long enough): its lease is free at once
        taken = await other.claim_delivery(30)
        assert taken is not None and taken.entry.id == 1
        with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:  # a crashed replica: gone silent
            conn.execute("UPDATE pgconn.replica SET seen_at = now() - interval '1 minute'")
        await one.heartbeat()
        again = await one.claim_delivery(30)
        assert again is not None and again.entry.id == 1
    finally:
        await store.close()


async def test_a_starting_replica_retries_what_waits_but_not_what_slack_asked_to_wait_for(
    fresh_state_dsn: str,
) -> None:
    await _migrated(fresh_state_dsn)
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pgconn.audit (event, actor) SELECT 'requested', 'U0REQ' FROM generate_series(1, 4)")
        conn.execute(
            "INSERT INTO pgconn.audit_outbox (audit_id, channel, next_attempt, last_error, parked_at) VALUES"
            " (1, 'C0AUDIT', now() + interval '1 hour', 'channel_not_found', now()),"  # parked
            " (2, 'C0AUDIT', now() + interval '1 hour', 'internal_error', NULL),"  # backing off
            " (3, 'C0AUDIT', now() + interval '1 hour', 'ratelimited', NULL),"  # Slack said: wait
            " (4, 'C0AUDIT', now() + interval '1 hour', 'internal_error', NULL)"  # being posted elsewhere
        )
    store = StateStore(fresh_state_dsn)
    await store.open()
    try:
        posting = RequestStore(store, audit_channel="C0AUDIT")
        await posting.heartbeat()
        with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE pgconn.audit_outbox SET leased_by = %s, leased_until = now() + interval '30 seconds'"
                " WHERE audit_id = 4",
                (posting.replica,),
            )
        starting = RequestStore(store, audit_channel="C0AUDIT")
        assert await starting.retry_waiting() == 2
    finally:
        await store.close()
    with psycopg.connect(fresh_state_dsn) as conn:
        due = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT audit_id, next_attempt <= now() AND parked_at IS NULL FROM pgconn.audit_outbox"
            )
        }
    assert due == {1: True, 2: True, 3: False, 4: False}


async def test_a_click_racing_a_message_update_leaves_the_message_to_update_again(fresh_state_dsn: str) -> None:
    """The update recorded what it read; an approval committed while it waited for the row changes
    what the message must show, so the message stays marked for another update."""
    await _migrated(fresh_state_dsn)
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO pgconn.request (expires_at, requester, action, scope, target, command_text,"
            " required_approvals, channel, message_ts) VALUES (now() + interval '1 hour', 'U0REQ', 'terminate',"
            " 'pids', 'default', 'kill 1', 2, 'C0APPROVE', '1.000001') RETURNING id"
        ).fetchone()
    assert row is not None
    request_id = row[0]
    store = StateStore(fresh_state_dsn)
    await store.open()
    click = psycopg.connect(fresh_state_dsn)
    try:
        requests = RequestStore(store, audit_channel=None)
        owner = uuid.uuid4()
        claimed = await requests.claim_message_sync(request_id, owner, 30)
        assert claimed is not None
        _, _, version = claimed
        click.execute("INSERT INTO pgconn.approval (request_id, approver) VALUES (%s, 'U0APP')", (request_id,))
        recording = asyncio.create_task(requests.message_shown(request_id, owner, "pending:0", version))
        with psycopg.connect(fresh_state_dsn, autocommit=True) as watcher:  # the update waits for the click
            await _waiting_for_a_lock(watcher, "shown_state")
        click.commit()
        assert await recording
    finally:
        click.close()
        await store.close()
    with psycopg.connect(fresh_state_dsn) as conn:
        assert conn.execute("SELECT message_dirty FROM pgconn.request WHERE id = %s", (request_id,)).fetchone() == (
            True,
        )


async def _waiting_for_a_lock(conn: psycopg.Connection[Any], statement: str) -> None:
    waiting = "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
    async with asyncio.timeout(10):
        while not conn.execute(waiting, (f"%{statement}%",)).fetchone():  # noqa: ASYNC110 - another session
            await asyncio.sleep(0.02)


async def test_what_a_note_carries_into_the_trail_is_cleaned_and_capped(fresh_state_dsn: str) -> None:
    await _migrated(fresh_state_dsn)
    store = StateStore(fresh_state_dsn)
    await store.open()
    try:
        requests = RequestStore(store, audit_channel=None)
        forged = "denied\n:white_check_mark: executed #1 by <@U0BOSS>\u202e" + "x" * 5000
        outcomes = Outcomes(tuple(SignalOutcome(pid, TargetOutcome.FAILED, error=forged) for pid in range(1, 200)))
        await requests.append_audit(NewAuditEntry(event=AuditEvent.EXECUTED, actor="U0APP", note=outcomes))
        (entry,) = await requests.recent_audit(1)
    finally:
        await store.close()
    assert isinstance(entry.note, Outcomes) and len(entry.note.outcomes) == 100
    error = entry.note.outcomes[0].error or ""
    assert "\n" not in error and "\u202e" not in error and len(error) <= 600
