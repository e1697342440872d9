"""The daily digest against the real state database: posted once a day across replicas, at its
time, also by a replica that starts late; the numbers it gives."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg
import pytest

from bot.core.digest import DailyDigest
from bot.db.digest import DigestStore
from bot.db.state import StateStore
from bot.model.digest import Digest, due_day, window
from bot.render.blocks import digest_message
from tests.e2e.conftest import message_text


class Posted:
    can_post = True

    def __init__(self, fail: bool = False) -> None:
        self.digests: list[tuple[str, Digest]] = []
        self.fail = fail

    async def post_digest(self, channel: str, digest: Digest) -> str:
        if self.fail:
            raise RuntimeError("slack said no")
        self.digests.append((channel, digest))
        return f"1700000000.{len(self.digests):06d}"


@pytest.fixture
async def state(fresh_state_dsn: str) -> Any:
    store = StateStore(fresh_state_dsn)
    await store.open()
    await store.migrate()
    yield store
    await store.close()


def at(hour: int, minute: int = 0) -> datetime:
    return datetime.now(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)


def test_when_a_digest_is_due() -> None:
    eight = time(8, 0)
    assert due_day(at(7, 59), eight) is None
    assert due_day(at(8, 0), eight) == at(8).date()
    assert due_day(at(23, 30), eight) == at(8).date()  # a replica starting late catches up
    since, until = window(at(8).date(), eight)
    assert until - since == timedelta(days=1) and until.time() == eight


async def test_posted_once_a_day_by_one_of_two_replicas(state: StateStore, fresh_state_dsn: str) -> None:
    slack_a, slack_b = Posted(), Posted()
    now = at(9)
    a = DailyDigest(DigestStore(state, uuid.uuid4()), slack_a, channel="C0DIGEST", at=time(8), clock=lambda: now)
    b = DailyDigest(DigestStore(state, uuid.uuid4()), slack_b, channel="C0DIGEST", at=time(8), clock=lambda: now)
    early = DailyDigest(DigestStore(state, uuid.uuid4()), Posted(), channel="C0DIGEST", at=time(8), clock=lambda: at(7))
    assert not await early.run_once()
    results = await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
    assert results.count(True) == 1 and len(slack_a.digests) + len(slack_b.digests) == 1
    # A replica that starts later that day (a restart) does not post it again.
    late = DailyDigest(DigestStore(state, uuid.uuid4()), Posted(), channel="C0DIGEST", at=time(8), clock=lambda: at(23))
    assert not await late.run_once()
    with psycopg.connect(fresh_state_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgconn.digest WHERE posted_at IS NOT NULL").fetchone() == (1,)


async def test_a_digest_slack_refused_is_tried_again_and_a_lapsed_claim_is_taken_over(
    state: StateStore, fresh_state_dsn: str
) -> None:
    now = at(9)
    refused = DailyDigest(
        DigestStore(state, uuid.uuid4()), Posted(fail=True), channel="C0D", at=time(8), clock=lambda: now
    )
    assert not await refused.run_once()
    slack = Posted()
    retry = DailyDigest(DigestStore(state, uuid.uuid4()), slack, channel="C0D", at=time(8), clock=lambda: now)
    assert await retry.run_once() and len(slack.digests) == 1
    # A replica that claimed tomorrow's and died before posting: its claim lapses after 10 minutes.
    tomorrow = now + timedelta(days=1)
    dead = DigestStore(state, uuid.uuid4())
    assert await dead.claim(tomorrow.date())
    other = Posted()
    taker = DailyDigest(DigestStore(state, uuid.uuid4()), other, channel="C0D", at=time(8), clock=lambda: tomorrow)
    assert not await taker.run_once()  # not yet: the claim is fresh
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgconn.digest SET claimed_at = now() - interval '11 minutes' WHERE posted_at IS NULL")
    assert await taker.run_once() and len(other.digests) == 1


async def test_what_the_digest_says(state: StateStore, fresh_state_dsn: str) -> None:
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pgconn.alert (target, kind, subject, severity, shape, details, opened_at, resolved_at)
               VALUES ('default', 'role_limit', 'bob', 'warning', 'at',
                       '{"sessions": [{"application": "DBeaver"}, {"application": "DBeaver"},
                                      {"application": "psql"}]}',
                       now() - interval '3 hours', now() - interval '2 hours'),
                      ('default', 'role_limit', 'bob', 'warning', 'at', '{"sessions": []}',
                       now() - interval '1 hour', NULL),
                      ('default', 'server_fill', '', 'warning', 'close', '{"fill": 0.83}',
                       now() - interval '30 minutes', now() - interval '20 minutes')"""
        )
    store = DigestStore(state, uuid.uuid4())
    until = datetime.now(UTC) + timedelta(minutes=1)
    digest = await store.gather(until.date(), until - timedelta(days=1), until)
    (bob,) = digest.roles_at_limit
    assert (bob.role, bob.times) == ("bob", 2) and bob.applications[0] == ("DBeaver", 2)
    assert timedelta(hours=1, minutes=59) < bob.duration < timedelta(hours=2, minutes=2)
    assert digest.peak_fill == pytest.approx(0.83)
    text = message_text({"text": "", "blocks": digest_message(digest).blocks})
    assert "bob: 2 times" in text and "from DBeaver 2, psql 1" in text and "Peak server fill: 83%" in text
    assert "No kill or cancel requests" in text


async def test_the_peak_fill_comes_from_the_history_when_kept(state: StateStore, fresh_state_dsn: str) -> None:
    with psycopg.connect(fresh_state_dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pgconn.history (target, at, covers, client_backends, usable_slots)
               VALUES ('default', now() - interval '2 hours', 60, 90, 100),
                      ('default', now() - interval '1 hour', 60, 40, 100)"""
        )
    until = datetime.now(UTC) + timedelta(minutes=1)
    digest = await DigestStore(state, uuid.uuid4()).gather(until.date(), until - timedelta(days=1), until)
    assert digest.peak_fill == pytest.approx(0.9)
