"""The approval flow's rules, as pure functions: no I/O, so each is a table of cases in the tests.

- ``unsignallable``: may this session be signalled at all (asked when the request is made)?
- ``judge``: what a click on Approve/Deny does to a request (the store applies the verdict under
  the request's row lock).
- ``outcome_of``: what the facts of signalling one target mean for it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from bot.model.access import AccessRole
from bot.model.problems import DecisionIssue, PidRefusal, Unsignallable
from bot.model.requests import (
    Candidate,
    OutcomeNote,
    RequestStatus,
    SignalAction,
    SignalAttempt,
    SignalOutcome,
    SignalRequest,
    SignalVerdict,
    TargetOutcome,
)

# --- may this session be signalled? ---------------------------------------------------------


def protection_of(found: Candidate, protected_roles: Collection[str]) -> PidRefusal | None:
    """Why this backend may never be signalled, or None. The signalling statement checks the same."""
    pid, role = found.pid, found.role
    if found.own or found.bot_login:
        return PidRefusal(pid, Unsignallable.OWN)
    if not found.client_backend:
        return PidRefusal(pid, Unsignallable.NOT_CLIENT, detail=found.backend_type)
    if found.superuser:
        return PidRefusal(pid, Unsignallable.SUPERUSER, role)
    if found.superuser_via:
        return PidRefusal(pid, Unsignallable.SUPERUSER_MEMBER, role, found.superuser_via)
    if role in protected_roles:
        return PidRefusal(pid, Unsignallable.PROTECTED_ROLE, role)
    if found.protected_via:
        return PidRefusal(pid, Unsignallable.PROTECTED_MEMBER, role, found.protected_via)
    return None


def unsignallable(
    pid: int,
    found: Candidate | None,
    protected_roles: Collection[str],
    *,
    cancel: bool = False,
    idle: bool = False,
    expected_start: datetime | None = None,
    mark: datetime | None = None,
) -> PidRefusal | None:
    """Why ``pid`` (found now as ``found``) may not be asked for, or None.

    ``idle``: it must be idle (in the transaction ``mark`` started, for an alert); ``cancel``: it
    must be running a query (the query ``mark`` started, for an alert); ``expected_start``: it must
    still be the session the alert was about."""
    if found is None:
        return PidRefusal(pid, Unsignallable.NOT_FOUND)
    if expected_start is not None and found.backend_start != expected_start:
        return PidRefusal(pid, Unsignallable.OTHER_SESSION)
    if idle and (not found.idle or (mark is not None and found.xact_start != mark)):
        return PidRefusal(pid, Unsignallable.NOT_IDLE_IN_IT)
    if cancel and mark is not None and found.query_start != mark:
        return PidRefusal(pid, Unsignallable.QUERY_ENDED)
    if (protected := protection_of(found, protected_roles)) is not None:
        return protected
    if cancel and found.state != "active":
        return PidRefusal(pid, Unsignallable.NO_QUERY, detail=found.state)
    if found.backend_start is None or found.role_oid is None:
        return PidRefusal(pid, Unsignallable.HIDDEN)
    return None


# --- what a click does ---------------------------------------------------------------------


@dataclass(frozen=True)
class Refuse:
    """Nothing changes. ``audit``: the refusal is recorded (once per person and request)."""

    issue: DecisionIssue
    audit: bool = False


@dataclass(frozen=True)
class Expire:
    """It expired unanswered: recorded as expired now, and the clicker is told so."""


@dataclass(frozen=True)
class Deny:
    pass


@dataclass(frozen=True)
class RecordApproval:
    """One more approval, not yet enough: ``counted`` of the required count now."""

    counted: int


@dataclass(frozen=True)
class Execute:
    """The approval that completes it: executing from now on."""


Verdict = Refuse | Expire | Deny | RecordApproval | Execute


@dataclass(frozen=True)
class Clicker:
    user_id: str
    role: AccessRole


def judge(
    request: SignalRequest,
    clicker: Clicker,
    *,
    approve: bool,
    still_approvers: Collection[str],
    allow_self_approval: bool,
) -> Verdict:
    """What a click on Approve (``approve``) or Deny does. ``still_approvers``: those who approved
    earlier and are approvers still (only their approvals count); ``request.now`` is the state
    database's clock."""
    if clicker.role < AccessRole.APPROVER:
        return Refuse(DecisionIssue.NOT_APPROVER, audit=True)
    if request.status is RequestStatus.POSTING:
        # Only a click on the posted message itself makes it approvable (see ADOPT_MESSAGE).
        return Refuse(DecisionIssue.STILL_POSTING)
    if request.status is not RequestStatus.PENDING:
        return Refuse(DecisionIssue.ALREADY_DECIDED)
    if request.now >= request.expires_at:
        return Expire()
    if not approve:
        return Deny()
    if clicker.user_id == request.requester and not allow_self_approval:
        return Refuse(DecisionIssue.OWN_REQUEST, audit=True)
    if any(a.approver == clicker.user_id for a in request.approvals):
        return Refuse(DecisionIssue.ALREADY_APPROVED)
    counted = counted_approvals(request, still_approvers) + 1
    return RecordApproval(counted) if counted < request.required_approvals else Execute()


def counted_approvals(request: SignalRequest, still_approvers: Collection[str]) -> int:
    """Approvals that count: by those who are approvers still."""
    return sum(1 for a in request.approvals if a.approver in still_approvers)


# --- what signalling one target came to ----------------------------------------------------


def escalation_outcome(attempt: SignalAttempt) -> SignalOutcome:
    """The ladder's second step for a target that was cancelled: terminated because it still ran
    the same query, or left connected because the cancel worked (or it went away)."""
    pid = attempt.pid
    match attempt.verdict:
        case SignalVerdict.CHANGED | SignalVerdict.GONE:
            return SignalOutcome(pid, TargetOutcome.CANCELLED)
        case SignalVerdict.SIGNALLED | SignalVerdict.NOT_SIGNALLED | SignalVerdict.TIMED_OUT if attempt.ended:
            return SignalOutcome(pid, TargetOutcome.ESCALATED)
        case _:
            return outcome_of(attempt, SignalAction.TERMINATE)


def outcome_of(attempt: SignalAttempt, action: SignalAction) -> SignalOutcome:
    """The outcome of one approved target, from what the signalling statement found."""
    pid, error = attempt.pid, attempt.error
    ended = TargetOutcome.TERMINATED if attempt.ended else None
    match attempt.verdict:
        case SignalVerdict.GONE:
            return SignalOutcome(pid, TargetOutcome.GONE)
        case SignalVerdict.REPLACED:
            return SignalOutcome(pid, TargetOutcome.REPLACED, OutcomeNote.NEW_SESSION)
        case SignalVerdict.PROTECTED:
            return SignalOutcome(pid, TargetOutcome.PROTECTED, OutcomeNote.NOW_PROTECTED)
        case SignalVerdict.CHANGED:
            note = OutcomeNote.QUERY_ENDED if action is SignalAction.CANCEL else OutcomeNote.ACTIVE_SINCE
            return SignalOutcome(pid, TargetOutcome.CHANGED, note)
        case SignalVerdict.ERROR:
            return SignalOutcome(pid, TargetOutcome.FAILED, error=error)
        case SignalVerdict.LOST:
            return SignalOutcome(pid, TargetOutcome.FAILED, OutcomeNote.LOST_WHILE_SIGNALLING, error)
        case SignalVerdict.NOT_REACHED:
            return SignalOutcome(pid, TargetOutcome.FAILED, OutcomeNote.NOT_SIGNALLED, error)
        case SignalVerdict.TIMED_OUT:
            return (
                SignalOutcome(pid, ended)
                if ended
                else SignalOutcome(pid, TargetOutcome.STILL_RUNNING, OutcomeNote.TIMED_OUT_WAITING)
            )
        case SignalVerdict.SIGNALLED if action is SignalAction.CANCEL:
            return SignalOutcome(pid, TargetOutcome.CANCELLED)
        case SignalVerdict.NOT_SIGNALLED if action is SignalAction.CANCEL:
            return SignalOutcome(pid, TargetOutcome.FAILED, OutcomeNote.SERVER_DID_NOT_SIGNAL)
        case SignalVerdict.SIGNALLED | SignalVerdict.NOT_SIGNALLED:
            return SignalOutcome(pid, ended or TargetOutcome.STILL_RUNNING)
        case _:
            assert_never(attempt.verdict)
