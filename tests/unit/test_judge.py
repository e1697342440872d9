"""The approval flow's rules as tables: what a click does, who may be signalled, what an attempt means."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.judge import (
    Clicker,
    Deny,
    Execute,
    Expire,
    RecordApproval,
    Refuse,
    Verdict,
    judge,
    outcome_of,
    unsignallable,
)
from bot.model.access import AccessRole
from bot.model.problems import DecisionIssue, Unsignallable
from bot.model.requests import (
    Approval,
    Candidate,
    KillScope,
    OutcomeNote,
    RequestStatus,
    SignalAction,
    SignalAttempt,
    SignalOutcome,
    SignalRequest,
    SignalVerdict,
    TargetOutcome,
)

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
REQUESTER, APPROVER, OTHER = "U0REQ", "U0APP", "U0APP2"


def request(**changes: object) -> SignalRequest:
    base = SignalRequest(
        id=7,
        action=SignalAction.TERMINATE,
        scope=KillScope.PIDS,
        target="default",
        role_name=None,
        older_than=None,
        reason=None,
        command_text="kill 4711",
        requester=REQUESTER,
        requester_name=None,
        created_at=NOW - timedelta(minutes=5),
        expires_at=NOW + timedelta(hours=1),
        now=NOW,
        status=RequestStatus.PENDING,
        required_approvals=1,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def two_needed(*approvers: str) -> SignalRequest:
    return request(required_approvals=2, approvals=tuple(Approval(a, NOW) for a in approvers))


@pytest.mark.parametrize(
    ("case", "req", "clicker", "approve", "still", "self_ok", "verdict"),
    [
        ("a viewer approves", request(), Clicker(OTHER, AccessRole.VIEWER), True, (), False,
         Refuse(DecisionIssue.NOT_APPROVER, audit=True)),
        ("a requester denies", request(), Clicker(OTHER, AccessRole.REQUESTER), False, (), False,
         Refuse(DecisionIssue.NOT_APPROVER, audit=True)),
        ("nobody may approve before it is posted", request(status=RequestStatus.POSTING),
         Clicker(APPROVER, AccessRole.APPROVER), True, (), False, Refuse(DecisionIssue.STILL_POSTING)),
        ("already executed", request(status=RequestStatus.EXECUTED), Clicker(APPROVER, AccessRole.APPROVER), True,
         (), False, Refuse(DecisionIssue.ALREADY_DECIDED)),
        ("already denied, denied again", request(status=RequestStatus.DENIED),
         Clicker(APPROVER, AccessRole.APPROVER), False, (), False, Refuse(DecisionIssue.ALREADY_DECIDED)),
        ("executing: a second click", request(status=RequestStatus.EXECUTING),
         Clicker(OTHER, AccessRole.APPROVER), True, (), False, Refuse(DecisionIssue.ALREADY_DECIDED)),
        ("past its time", request(now=NOW + timedelta(hours=2)), Clicker(APPROVER, AccessRole.APPROVER), True, (),
         False, Expire()),
        ("past its time, denied", request(now=NOW + timedelta(hours=2)), Clicker(APPROVER, AccessRole.APPROVER),
         False, (), False, Expire()),
        ("denied", request(), Clicker(APPROVER, AccessRole.APPROVER), False, (), False, Deny()),
        ("the requester denies their own", request(), Clicker(REQUESTER, AccessRole.APPROVER), False, (), False,
         Deny()),
        ("the requester approves their own", request(), Clicker(REQUESTER, AccessRole.APPROVER), True, (), False,
         Refuse(DecisionIssue.OWN_REQUEST, audit=True)),
        ("own request, self-approval allowed", request(), Clicker(REQUESTER, AccessRole.APPROVER), True, (), True,
         Execute()),
        ("one of one", request(), Clicker(APPROVER, AccessRole.APPROVER), True, (), False, Execute()),
        ("first of two", two_needed(), Clicker(APPROVER, AccessRole.APPROVER), True, (), False, RecordApproval(1)),
        ("second of two", two_needed(APPROVER), Clicker(OTHER, AccessRole.APPROVER), True, (APPROVER,), False,
         Execute()),
        ("second of two, the first is no approver any more", two_needed(APPROVER),
         Clicker(OTHER, AccessRole.APPROVER), True, (), False, RecordApproval(1)),
        ("the same approver twice", two_needed(APPROVER), Clicker(APPROVER, AccessRole.APPROVER), True,
         (APPROVER,), False, Refuse(DecisionIssue.ALREADY_APPROVED)),
    ],
)  # fmt: skip
def test_what_a_click_does(
    case: str,
    req: SignalRequest,
    clicker: Clicker,
    approve: bool,
    still: tuple[str, ...],
    self_ok: bool,
    verdict: Verdict,
) -> None:
    assert judge(req, clicker, approve=approve, still_approvers=still, allow_self_approval=self_ok) == verdict, case


def candidate(pid: int = 4711, **changes: object) -> Candidate:
    base = Candidate(
        pid=pid,
        role_oid=16384,
        role="bob",
        database="course",
        application="psql",
        client="10.0.0.7",
        state="idle",
        backend_type="client backend",
        backend_start=NOW - timedelta(hours=1),
        xact_start=None,
        query_start=NOW - timedelta(minutes=50),
        state_change=NOW - timedelta(minutes=40),
        observed_at=NOW,
        client_backend=True,
        superuser=False,
        own=False,
        superuser_via=None,
        protected_via=None,
        bot_login=False,
        role_limit=5,
        role_used=5,
        blocks=(),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


START = NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("case", "found", "options", "why"),
    [
        ("an ordinary idle session", candidate(), {}, None),
        ("gone", None, {}, Unsignallable.NOT_FOUND),
        ("the bot's own connection", candidate(own=True), {}, Unsignallable.OWN),
        ("another connection of the bot's logins", candidate(bot_login=True), {}, Unsignallable.OWN),
        ("the checkpointer", candidate(client_backend=False, backend_type="checkpointer"), {},
         Unsignallable.NOT_CLIENT),
        ("a superuser", candidate(superuser=True), {}, Unsignallable.SUPERUSER),
        ("a member of a superuser role", candidate(superuser_via="admins"), {}, Unsignallable.SUPERUSER_MEMBER),
        ("a protected role", candidate(role="grader"), {}, Unsignallable.PROTECTED_ROLE),
        ("a member of a protected role", candidate(protected_via="grader"), {}, Unsignallable.PROTECTED_MEMBER),
        ("details hidden (no pg_monitor)", candidate(backend_start=None), {}, Unsignallable.HIDDEN),
        ("cancel an idle session", candidate(), {"cancel": True}, Unsignallable.NO_QUERY),
        ("cancel a running query", candidate(state="active"), {"cancel": True}, None),
        ("the alert's session, still", candidate(), {"expected_start": START}, None),
        ("the alert's pid, another session now", candidate(), {"expected_start": START - timedelta(days=1)},
         Unsignallable.OTHER_SESSION),
        ("idle in the alert's transaction", candidate(state="idle in transaction", xact_start=START),
         {"idle": True, "mark": START}, None),
        ("woke up since the alert", candidate(state="active", xact_start=START), {"idle": True, "mark": START},
         Unsignallable.NOT_IDLE_IN_IT),
        ("in another transaction since", candidate(state="idle in transaction", xact_start=NOW),
         {"idle": True, "mark": START}, Unsignallable.NOT_IDLE_IN_IT),
        ("the alert's query ended", candidate(state="active", query_start=NOW), {"cancel": True, "mark": START},
         Unsignallable.QUERY_ENDED),
        ("protection comes before the state", candidate(superuser=True), {"cancel": True}, Unsignallable.SUPERUSER),
    ],
)  # fmt: skip
def test_who_may_be_asked_for(case: str, found: Candidate | None, options: dict[str, object], why: object) -> None:
    refusal = unsignallable(4711, found, ("grader",), **options)  # type: ignore[arg-type]
    assert (refusal.why if refusal else None) == why, case


T, C = SignalAction.TERMINATE, SignalAction.CANCEL
V = SignalVerdict


@pytest.mark.parametrize(
    ("attempt", "action", "outcome"),
    [
        (SignalAttempt(1, V.SIGNALLED, ended=True), T, SignalOutcome(1, TargetOutcome.TERMINATED)),
        (SignalAttempt(1, V.SIGNALLED), T, SignalOutcome(1, TargetOutcome.STILL_RUNNING)),
        (SignalAttempt(1, V.NOT_SIGNALLED, ended=True), T, SignalOutcome(1, TargetOutcome.TERMINATED)),
        (SignalAttempt(1, V.NOT_SIGNALLED), T, SignalOutcome(1, TargetOutcome.STILL_RUNNING)),
        (SignalAttempt(1, V.SIGNALLED), C, SignalOutcome(1, TargetOutcome.CANCELLED)),
        (SignalAttempt(1, V.NOT_SIGNALLED), C,
         SignalOutcome(1, TargetOutcome.FAILED, OutcomeNote.SERVER_DID_NOT_SIGNAL)),
        (SignalAttempt(1, V.GONE), T, SignalOutcome(1, TargetOutcome.GONE)),
        (SignalAttempt(1, V.REPLACED), C, SignalOutcome(1, TargetOutcome.REPLACED, OutcomeNote.NEW_SESSION)),
        (SignalAttempt(1, V.PROTECTED), T, SignalOutcome(1, TargetOutcome.PROTECTED, OutcomeNote.NOW_PROTECTED)),
        (SignalAttempt(1, V.CHANGED), T, SignalOutcome(1, TargetOutcome.CHANGED, OutcomeNote.ACTIVE_SINCE)),
        (SignalAttempt(1, V.CHANGED), C, SignalOutcome(1, TargetOutcome.CHANGED, OutcomeNote.QUERY_ENDED)),
        (SignalAttempt(1, V.TIMED_OUT), T,
         SignalOutcome(1, TargetOutcome.STILL_RUNNING, OutcomeNote.TIMED_OUT_WAITING)),
        (SignalAttempt(1, V.TIMED_OUT, ended=True), T, SignalOutcome(1, TargetOutcome.TERMINATED)),
        (SignalAttempt(1, V.ERROR, error="permission denied"), T,
         SignalOutcome(1, TargetOutcome.FAILED, error="permission denied")),
        (SignalAttempt(1, V.LOST, error="server closed"), T,
         SignalOutcome(1, TargetOutcome.FAILED, OutcomeNote.LOST_WHILE_SIGNALLING, "server closed")),
        (SignalAttempt(1, V.NOT_REACHED, error="full"), C,
         SignalOutcome(1, TargetOutcome.FAILED, OutcomeNote.NOT_SIGNALLED, "full")),
    ],
)  # fmt: skip
def test_what_an_attempt_comes_to(attempt: SignalAttempt, action: SignalAction, outcome: SignalOutcome) -> None:
    assert outcome_of(attempt, action) == outcome


def test_every_verdict_has_an_outcome() -> None:
    for verdict in SignalVerdict:
        for action in SignalAction:
            assert isinstance(outcome_of(SignalAttempt(1, verdict, error="x"), action), SignalOutcome)
