"""The cancel-then-terminate ladder (``cancel <pid> --escalate 30s``): its grammar, what its second
step makes of each signalling attempt, and how a request reads while escalating and after."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.commands import BY_NAME, ParseError, RequestSignal
from bot.core.judge import escalation_outcome
from bot.core.parser import parse_command
from bot.core.service import command_for_alert
from bot.model.alerts import Alert, AlertKind, Severity, Shape
from bot.model.audit import AuditEntry, Outcomes
from bot.model.requests import (
    DEFAULT_ESCALATION,
    MAX_ESCALATION,
    MIN_ESCALATION,
    Approval,
    AuditEvent,
    KillScope,
    OutcomeNote,
    RequestStatus,
    RequestTarget,
    SignalAction,
    SignalAttempt,
    SignalOutcome,
    SignalRequest,
    SignalVerdict,
    TargetOutcome,
)
from bot.model.results import Decided
from bot.render.blocks import alert_message, request_message
from bot.render.markup import mention
from bot.render.requests import audit_line, status_line, what
from bot.render.text import render_text

NOW = datetime(2026, 11, 21, 10, 42, tzinfo=UTC)
V = SignalVerdict


# --- the grammar --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pids", "grace"),
    [
        ("cancel 1 --escalate 30s", (1,), timedelta(seconds=30)),
        ("cancel 4711 4712 --escalate 1m30s", (4711, 4712), timedelta(seconds=90)),
        ("cancel --escalate=2s 4711", (4711,), timedelta(seconds=2)),
        ("cancel 1 --escalate 1s", (1,), MIN_ESCALATION),  # the bounds are included
        ("cancel 1 --escalate 10m", (1,), MAX_ESCALATION),
    ],
)
def test_cancel_with_escalate_asks_for_the_ladder(text: str, pids: tuple[int, ...], grace: timedelta) -> None:
    assert parse_command(text) == RequestSignal(action=SignalAction.CANCEL, pids=pids, escalate_after=grace)


def test_cancel_without_escalate_is_a_plain_cancel() -> None:
    command = parse_command("cancel 1 --reason 'runaway join'")
    assert isinstance(command, RequestSignal) and command.escalate_after is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cancel 1 --escalate 0s", "--escalate takes a grace time from 1s to 10m"),
        ("cancel 1 --escalate 11m", "--escalate takes a grace time from 1s to 10m"),
        ("cancel 1 --escalate 10m1s", "--escalate takes a grace time from 1s to 10m"),
        ("cancel 1 --escalate 1h", "--escalate takes a grace time from 1s to 10m"),
        ("cancel 1 --escalate soon", "--escalate: 'soon' is not a duration"),
        ("cancel 1 --escalate 30", "--escalate: '30' needs a unit"),
        ("cancel 1 --escalate", "--escalate needs a value"),
        ("cancel 1 --escalate 30s --escalate 1m", "--escalate is given twice"),
    ],
)
def test_a_bad_grace_time_is_a_parse_error_that_says_why(text: str, message: str) -> None:
    result = parse_command(text)
    assert isinstance(result, ParseError), result
    assert message in result.message, result.message
    assert result.usage == BY_NAME["cancel"].usage
    assert "--escalate 30s" in result.usage  # the usage shows how to say it


@pytest.mark.parametrize(
    "text", ["kill 1 --escalate 30s", "kill user bob --escalate 30s", "kill idle bob --escalate 1m"]
)
def test_kill_does_not_take_escalate(text: str) -> None:
    result = parse_command(text)
    assert isinstance(result, ParseError), result
    assert "kill does not take --escalate" in result.message
    assert result.usage == BY_NAME["kill"].usage


def test_cancel_help_mentions_the_ladder() -> None:
    spec = BY_NAME["cancel"]
    assert "--escalate" in spec.usage and "terminated" in spec.summary


# --- the second step, as a table -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "outcome"),
    [
        # Still on the same query after the grace time: terminated (and known to have ended).
        (SignalAttempt(7, V.SIGNALLED, ended=True), SignalOutcome(7, TargetOutcome.ESCALATED)),
        (SignalAttempt(7, V.NOT_SIGNALLED, ended=True), SignalOutcome(7, TargetOutcome.ESCALATED)),
        (SignalAttempt(7, V.TIMED_OUT, ended=True), SignalOutcome(7, TargetOutcome.ESCALATED)),
        # Signalled, but not seen to end: as a plain terminate says it.
        (SignalAttempt(7, V.SIGNALLED), SignalOutcome(7, TargetOutcome.STILL_RUNNING)),
        (SignalAttempt(7, V.NOT_SIGNALLED), SignalOutcome(7, TargetOutcome.STILL_RUNNING)),
        (
            SignalAttempt(7, V.TIMED_OUT),
            SignalOutcome(7, TargetOutcome.STILL_RUNNING, OutcomeNote.TIMED_OUT_WAITING),
        ),
        # The cancel worked (another query, or idle now) or it left: never terminated.
        (SignalAttempt(7, V.CHANGED), SignalOutcome(7, TargetOutcome.CANCELLED)),
        (SignalAttempt(7, V.GONE), SignalOutcome(7, TargetOutcome.CANCELLED)),
        # Not the session approved any more, or protected now: left alone, said so.
        (SignalAttempt(7, V.REPLACED), SignalOutcome(7, TargetOutcome.REPLACED, OutcomeNote.NEW_SESSION)),
        (SignalAttempt(7, V.PROTECTED), SignalOutcome(7, TargetOutcome.PROTECTED, OutcomeNote.NOW_PROTECTED)),
        # Failures keep the server's words.
        (
            SignalAttempt(7, V.ERROR, error="permission denied"),
            SignalOutcome(7, TargetOutcome.FAILED, error="permission denied"),
        ),
        (
            SignalAttempt(7, V.LOST, error="server closed"),
            SignalOutcome(7, TargetOutcome.FAILED, OutcomeNote.LOST_WHILE_SIGNALLING, "server closed"),
        ),
        (
            SignalAttempt(7, V.NOT_REACHED, error="full"),
            SignalOutcome(7, TargetOutcome.FAILED, OutcomeNote.NOT_SIGNALLED, "full"),
        ),
    ],
)
def test_what_the_second_step_comes_to(attempt: SignalAttempt, outcome: SignalOutcome) -> None:
    assert escalation_outcome(attempt) == outcome


def test_every_verdict_has_a_second_step_outcome() -> None:
    for verdict in SignalVerdict:
        for ended in (False, True):
            result = escalation_outcome(SignalAttempt(7, verdict, ended=ended))
            assert result.pid == 7 and result.outcome in TargetOutcome
            assert result.outcome is not TargetOutcome.TERMINATED  # a ladder's terminate is "escalated"


# --- how it reads --------------------------------------------------------------------------------


def target(pid: int, outcome: TargetOutcome | None = None) -> RequestTarget:
    return RequestTarget(
        pid=pid,
        backend_start=NOW - timedelta(hours=1),
        role_oid=16384,
        role="bob",
        database="course",
        application="psql",
        client="10.0.0.7",
        state="active",
        state_change=NOW - timedelta(minutes=20),
        xact_start=NOW - timedelta(minutes=20),
        query_start=NOW - timedelta(minutes=20),
        observed_at=NOW,
        outcome=outcome,
    )


def ladder(**changes: object) -> SignalRequest:
    base = SignalRequest(
        id=31,
        action=SignalAction.CANCEL,
        scope=KillScope.PIDS,
        target="default",
        role_name=None,
        older_than=None,
        reason="runaway join",
        command_text="cancel 4711 4712 --escalate 2s",
        requester="U0REQ",
        requester_name="ta",
        created_at=NOW - timedelta(minutes=1),
        expires_at=NOW + timedelta(hours=1),
        now=NOW,
        status=RequestStatus.ESCALATING,
        required_approvals=1,
        approvals=(Approval("U0APP", NOW - timedelta(seconds=1)),),
        decided_by="U0APP",
        decided_at=NOW - timedelta(seconds=1),
        channel="C0APPROVE",
        message_ts="1700000000.000100",
        targets=(target(4711, TargetOutcome.CANCELLED), target(4712, TargetOutcome.CANCELLED)),
        escalate_after=timedelta(seconds=2),
        escalate_at=NOW + timedelta(seconds=2),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_what_the_approver_agrees_to_names_the_grace_time() -> None:
    pending = ladder(status=RequestStatus.PENDING, approvals=(), decided_by=None, decided_at=None, escalate_at=None)
    assert what(pending) == (
        "cancel the running query of 2 sessions: pids 4711, 4712 (bob), "
        "then terminate any still running that query after 2s"
    )
    assert "then terminate" not in what(replace(pending, escalate_after=None))
    message = request_message(pending)
    confirm = json.dumps(message.blocks)
    assert "then terminate any still running that query after 2s" in confirm


def test_while_escalating_it_says_when_and_carries_no_buttons() -> None:
    waiting = ladder(escalate_at=NOW + timedelta(seconds=25), escalate_after=timedelta(seconds=30))
    line = status_line(waiting)
    assert mention("U0APP") in line and "2 cancelled" in line, line
    assert "escalating in 25s" in line and "still running then is terminated" in line, line
    message = request_message(waiting)
    assert not [b for b in message.blocks if b["type"] == "actions"]  # decided: no Approve/Deny
    assert "escalating in 25s" in message.text
    due = ladder(escalate_at=NOW - timedelta(seconds=3))  # due (or overdue): never a negative time
    assert "escalating in a moment" in status_line(due)
    assert "escalating in a moment" in status_line(ladder(escalate_at=NOW + timedelta(milliseconds=400)))


def test_after_the_ladder_it_says_what_became_of_each() -> None:
    done = ladder(
        status=RequestStatus.EXECUTED,
        escalate_at=NOW - timedelta(seconds=1),
        finished_at=NOW,
        targets=(target(4711, TargetOutcome.ESCALATED), target(4712, TargetOutcome.CANCELLED)),
    )
    line = status_line(done)
    assert "done: 1 cancelled, then terminated after 2s, 1 cancelled." in line, line
    assert "escalating" not in line
    text = render_text(Decided(done, "executed"))
    assert "cancelled, then terminated after 2s" in text, text
    message = request_message(done)
    assert not [b for b in message.blocks if b["type"] == "actions"]
    assert "cancelled, then terminated after 2s" in message.text
    both = replace(done, targets=(target(4711, TargetOutcome.ESCALATED), target(4712, TargetOutcome.ESCALATED)))
    assert "done: 2 cancelled, then terminated after 2s." in status_line(both)
    after_3s = replace(done, escalate_after=timedelta(seconds=3))
    assert "cancelled, then terminated after 3s" in status_line(after_3s)


def test_the_ladders_audit_entries_read_well() -> None:
    entry = AuditEntry(
        id=1,
        at=NOW,
        event=AuditEvent.ESCALATING,
        request_id=31,
        action=SignalAction.CANCEL,
        target="default",
        role_name="bob",
        pids=(4711, 4712),
        actor="U0APP",
        requester="U0REQ",
        approvers=("U0APP",),
        outcome=None,
        message_ref=None,
        note=Outcomes((SignalOutcome(4711, TargetOutcome.CANCELLED), SignalOutcome(4712, TargetOutcome.CANCELLED))),
    )
    line = audit_line(entry)
    assert "#31" in line and "escalating" in line and "4711 cancelled, 4712 cancelled" in line, line
    executed = replace(
        entry,
        event=AuditEvent.EXECUTED,
        note=Outcomes((SignalOutcome(4711, TargetOutcome.ESCALATED), SignalOutcome(4712, TargetOutcome.CANCELLED))),
    )
    assert "4711 cancelled, then terminated, 4712 cancelled" in audit_line(executed)


# --- the long-query alert's button ---------------------------------------------------------------


def long_query_alert() -> Alert:
    started = NOW - timedelta(hours=1)
    return Alert(
        id=5,
        target="default",
        kind=AlertKind.LONG_QUERY,
        subject=f"4711:{int(started.timestamp())}",
        severity=Severity.WARNING,
        shape=Shape.PLAIN,
        details={"pid": 4711, "backend_start": started.isoformat(), "query_start": started.isoformat()},
        opened_at=NOW,
        last_seen_at=NOW,
    )


def test_the_long_query_button_asks_for_the_ladder() -> None:
    command = command_for_alert(long_query_alert(), "alert #5")
    assert isinstance(command, RequestSignal)
    assert command.action is SignalAction.CANCEL and command.pids == (4711,)
    assert command.escalate_after == DEFAULT_ESCALATION == timedelta(seconds=30)
    assert command.expected_marks == ((4711, NOW - timedelta(hours=1)),)
    idle_tx = replace(long_query_alert(), kind=AlertKind.IDLE_IN_TRANSACTION, details={"pid": 4711})
    other = command_for_alert(idle_tx, "alert #5")
    assert isinstance(other, RequestSignal) and other.escalate_after is None  # a terminate: no ladder
    button = json.dumps(alert_message(long_query_alert()).blocks)
    assert "Request cancel (then terminate after 30s)" in button
