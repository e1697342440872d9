"""Acknowledge and snooze against the real PostgreSQL: recorded and audited in the state database,
refused below requester, a snoozed problem neither posted again nor pinged (its resolution still
posted), shared by replicas and kept across restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from bot.model.access import Identity
from bot.model.alerts import Alert, AlertAction, AlertHandled, AlertKind
from bot.model.problems import AlertIssue, AlertNotActionable, NotAllowed
from bot.model.results import OpenAlerts
from bot.render.text import render_text
from bot.runtime import Runtime
from tests.conftest import PgWorld

ANA, BOB, VIEWER = Identity("U0ANA"), Identity("U0BOB"), Identity("U0VIEWER")
ALERTS = "C0ALERTS"


@dataclass
class Recorder:
    """The alert channel: what the monitor (and a click) posted, edited and replied."""

    can_post: bool = True
    posts: list[Alert] = field(default_factory=list)
    updates: list[Alert] = field(default_factory=list)
    replies: list[Alert] = field(default_factory=list)

    async def post_alert(self, alert: Alert, channel: str) -> str:
        self.posts.append(alert)
        return f"1700000000.{len(self.posts):06d}"

    async def update_alert(self, alert: Alert) -> None:
        self.updates.append(alert)

    async def reply_resolved(self, alert: Alert) -> None:
        self.replies.append(alert)

    async def delete_message(self, channel: str, ts: str) -> None:
        return None

    def posted_about(self, subject: str) -> list[Alert]:
        return [a for a in self.posts if a.subject == subject]


@pytest.fixture
async def runtimes(make_settings: Any, fresh_state_dsn: str) -> AsyncIterator[Any]:
    started: list[Runtime] = []

    async def start(recorder: Recorder | None = None, **overrides: Any) -> Runtime:
        settings = make_settings(
            **{
                "requesters": "U0ANA,U0BOB",
                "approvers": "U0APP",
                "state_url": fresh_state_dsn,
                "alert_channel": ALERTS,
                # Other sessions on the test server must not raise alerts of their own.
                "alert_utilization_warn": 0.98,
                "alert_utilization_crit": 0.99,
                "alert_idle_in_tx_seconds": 3600,
                "alert_long_query_seconds": 3600,
                **overrides,
            }
        )
        runtime = Runtime.build(settings, alert_announcer=recorder or Recorder())
        await runtime.start(require_state=False)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        await runtime.stop()


async def cycle(runtime: Runtime) -> None:
    assert await runtime.monitor.run_cycle()


async def ask(runtime: Runtime, text: str, who: Identity) -> Any:
    return (await runtime.service.handle(text, who)).result


def rows(dsn: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def audit(dsn: str, *events: str) -> list[dict[str, Any]]:
    return rows(dsn, "SELECT * FROM pgconn.audit WHERE event = ANY(%s) ORDER BY id", list(events))


async def role_alert(runtime: Runtime, recorder: Recorder, role: str) -> Alert:
    await cycle(runtime)
    (alert,) = recorder.posted_about(role)
    assert alert.kind is AlertKind.ROLE_LIMIT
    return alert


async def test_acknowledge_is_recorded_audited_shown_and_taken_over(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str
) -> None:
    recorder = Recorder()
    runtime = await runtimes(recorder)
    role = world.role("acked", limit=1)
    world.connect(role)
    alert = await role_alert(runtime, recorder, role)

    done = await ask(runtime, f"ack {alert.id}", ANA)
    assert isinstance(done, AlertHandled) and done.changed and done.previous is None
    assert done.alert.acked_by == "U0ANA" and done.alert.acked_at is not None
    # The message was edited at once, naming her, and recorded as shown: the monitor edits nothing more.
    assert recorder.updates[-1].acked_by == "U0ANA"
    assert f"You are on alert #{alert.id}" in render_text(done)
    edits = len(recorder.updates)
    await cycle(runtime)
    assert len(recorder.updates) == edits and len(recorder.posts) == 1
    (entry,) = audit(fresh_state_dsn, "acknowledged")
    assert (entry["actor"], entry["target"], entry["role_name"]) == ("U0ANA", "default", role)
    assert entry["detail"]["alert_id"] == alert.id and entry["detail"]["previous"] is None

    again = await ask(runtime, f"ack {alert.id}", ANA)  # the same person: nothing changes
    assert isinstance(again, AlertHandled) and not again.changed
    assert len(audit(fresh_state_dsn, "acknowledged")) == 1

    taken = await ask(runtime, f"ack {alert.id}", BOB)
    assert isinstance(taken, AlertHandled) and taken.previous == "U0ANA" and taken.alert.acked_by == "U0BOB"
    assert "took alert" in render_text(taken) and "from @U0ANA" in render_text(taken)
    _, second = audit(fresh_state_dsn, "acknowledged")
    assert second["actor"] == "U0BOB" and second["detail"]["previous"] == "U0ANA"
    assert recorder.updates[-1].acked_by == "U0BOB"
    listing = render_text(await ask(runtime, "alerts", VIEWER))
    assert "👀 @U0BOB is on it since" in listing


async def test_a_viewer_may_not_acknowledge_or_snooze_and_nothing_is_recorded(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str
) -> None:
    recorder = Recorder()
    runtime = await runtimes(recorder)
    role = world.role("viewed", limit=1)
    world.connect(role)
    alert = await role_alert(runtime, recorder, role)
    for action, choice in ((AlertAction.ACKNOWLEDGE, None), (AlertAction.SNOOZE, "1h"), (AlertAction.UNSNOOZE, None)):
        refused = (await runtime.service.alert_button(action, alert.id, VIEWER, choice=choice)).result
        assert isinstance(refused, NotAllowed), refused
        assert "needs the requester role" in render_text(refused)
    assert rows(fresh_state_dsn, "SELECT acked_by FROM pgconn.alert WHERE id = %s", alert.id) == [{"acked_by": None}]
    assert rows(fresh_state_dsn, "SELECT * FROM pgconn.alert_snooze") == []
    assert audit(fresh_state_dsn, "acknowledged", "snoozed", "unsnoozed", "refused", "click_refused") == []
    assert recorder.updates == []


async def test_a_snoozed_problem_that_clears_and_comes_back_is_not_posted_again(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str
) -> None:
    recorder = Recorder()
    runtime = await runtimes(recorder)
    role = world.role("flappy", limit=2)
    world.connect(role)
    second = world.connect(role)
    alert = await role_alert(runtime, recorder, role)

    snoozed = await ask(runtime, f"snooze {alert.id} --for 4h", ANA)
    assert isinstance(snoozed, AlertHandled) and snoozed.alert.snoozed_until is not None
    assert timedelta(hours=3, minutes=59) < snoozed.alert.snoozed_until - snoozed.alert.opened_at < timedelta(hours=5)
    assert recorder.updates[-1].snoozed  # the message says so at once
    (entry,) = audit(fresh_state_dsn, "snoozed")
    assert entry["actor"] == "U0ANA" and entry["detail"]["alert_id"] == alert.id

    # Worse while snoozed (over its limit now): its message is edited, quietly; nothing new is posted.
    world.admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 1')
    await cycle(runtime)
    assert recorder.updates[-1].severity == "critical" and recorder.updates[-1].id == alert.id
    assert recorder.posted_about(role) == [alert]
    world.admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 2')

    second.close()
    await cycle(runtime)
    (reply,) = recorder.replies  # its resolution is still posted
    assert reply.id == alert.id

    comeback = world.connect(role)
    await cycle(runtime)
    await cycle(runtime)
    assert recorder.posted_about(role) == [alert]  # held: not posted again
    listing = await ask(runtime, "alerts", VIEWER)
    (again,) = [a for a in listing.alerts if a.subject == role]
    assert again.id != alert.id and again.snoozed and again.message_ts is None
    assert "🔕 snoozed until" in render_text(listing)

    comeback.close()
    await cycle(runtime)
    assert len(recorder.replies) == 1  # a held alert that came and went: nothing to reply to

    # The snooze is over (its time passed): the problem is news again.
    world.connect(role)
    with psycopg.connect(fresh_state_dsn, autocommit=True) as state:
        state.execute("UPDATE pgconn.alert_snooze SET until = now() - interval '1 second'")
    await cycle(runtime)
    assert len(recorder.posted_about(role)) == 2


async def test_unsnooze_ends_it_at_once_and_a_held_alert_is_posted(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str
) -> None:
    recorder = Recorder()
    runtime = await runtimes(recorder)
    role = world.role("woken", limit=1)
    conn = world.connect(role)
    alert = await role_alert(runtime, recorder, role)
    assert isinstance(await ask(runtime, f"snooze {alert.id}", BOB), AlertHandled)
    conn.close()
    await cycle(runtime)
    world.connect(role)
    await cycle(runtime)
    (held,) = [a for a in (await ask(runtime, "alerts", VIEWER)).alerts if a.subject == role]
    assert held.snoozed and len(recorder.posted_about(role)) == 1

    woken = await ask(runtime, f"unsnooze {held.id}", ANA)
    assert isinstance(woken, AlertHandled) and woken.changed and not woken.alert.snoozed
    assert "not snoozed any more" in render_text(woken)
    (entry,) = audit(fresh_state_dsn, "unsnoozed")
    assert entry["actor"] == "U0ANA" and entry["detail"]["alert_id"] == held.id
    await cycle(runtime)
    assert [a.id for a in recorder.posted_about(role)] == [alert.id, held.id]

    nothing = await ask(runtime, f"unsnooze {held.id}", ANA)
    assert isinstance(nothing, AlertHandled) and not nothing.changed
    assert len(audit(fresh_state_dsn, "unsnoozed")) == 1


async def test_a_resolved_alert_cannot_be_acknowledged_and_an_unknown_one_is_said_so(
    world: PgWorld, runtimes: Any
) -> None:
    recorder = Recorder()
    runtime = await runtimes(recorder)
    role = world.role("gone", limit=1)
    conn = world.connect(role)
    alert = await role_alert(runtime, recorder, role)
    conn.close()
    await cycle(runtime)
    resolved = await ask(runtime, f"ack {alert.id}", ANA)
    assert resolved == AlertNotActionable(alert.id, AlertIssue.RESOLVED)
    assert await ask(runtime, "ack 999999", ANA) == AlertNotActionable(999999, AlertIssue.NOT_FOUND)


async def test_acks_and_snoozes_are_shared_by_replicas_and_survive_a_restart(
    world: PgWorld, runtimes: Any, fresh_state_dsn: str
) -> None:
    recorder = Recorder()
    first = await runtimes(recorder)
    second = await runtimes(Recorder())
    role = world.role("shared", limit=1)
    world.connect(role)
    alert = await role_alert(first, recorder, role)

    # Clicked on one replica, seen on the other (and in its message, edited by the one clicked).
    assert isinstance(await ask(second, f"ack {alert.id}", ANA), AlertHandled)
    assert isinstance(await ask(second, f"snooze {alert.id} --for 1d", BOB), AlertHandled)
    listing = await ask(first, "alerts", VIEWER)
    assert isinstance(listing, OpenAlerts)
    (seen,) = [a for a in listing.alerts if a.id == alert.id]
    assert seen.acked_by == "U0ANA" and seen.snoozed_by == "U0BOB" and seen.snoozed
    text = render_text(listing)
    assert "👀 @U0ANA is on it since" in text and "🔕 snoozed until" in text and "by @U0BOB" in text

    await first.monitor.stop()  # hands the leader lease over (runtimes started without background work keep it)
    await first.stop()
    await second.stop()
    restarted = Recorder()
    again = await runtimes(restarted)
    (kept,) = [a for a in (await ask(again, "alerts", VIEWER)).alerts if a.id == alert.id]
    assert (kept.acked_by, kept.snoozed_by, kept.snoozed_until) == ("U0ANA", "U0BOB", seen.snoozed_until)
    await cycle(again)  # the new leader has nothing to post or edit: the message shows it all already
    assert restarted.posts == restarted.updates == []
