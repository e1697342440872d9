"""Kill/cancel requests, their targets, approvals and the audit trail: the approval flow's data."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.model.activity import RoleFill, SessionAges


class SignalAction(enum.StrEnum):
    TERMINATE = "terminate"
    CANCEL = "cancel"


class KillScope(enum.StrEnum):
    PIDS = "pids"
    USER = "user"
    IDLE = "idle"
    DATABASE = "database"  # drain: refuse new connections to a database, then end its sessions


class RequestStatus(enum.StrEnum):
    POSTING = "posting"  # stored, being posted for approval: nobody can approve it yet
    PENDING = "pending"
    EXECUTING = "executing"
    ESCALATING = "escalating"  # cancelled; waiting for the grace time before terminating what still runs
    EXECUTED = "executed"
    DENIED = "denied"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"  # could not be posted for approval
    INTERRUPTED = "interrupted"  # the bot stopped while executing


FINAL_STATUSES = frozenset(
    {
        RequestStatus.EXECUTED,
        RequestStatus.DENIED,
        RequestStatus.EXPIRED,
        RequestStatus.WITHDRAWN,
        RequestStatus.INTERRUPTED,
    }
)


class TargetOutcome(enum.StrEnum):
    """What became of one target of an approved request."""

    TERMINATED = "terminated"
    CANCELLED = "cancelled"
    ESCALATED = "escalated"  # cancelled, still running the same query after the grace time: terminated
    GONE = "gone"
    REPLACED = "replaced"
    PROTECTED = "protected"
    CHANGED = "changed"  # no longer idle / no longer running the approved query
    FAILED = "failed"
    STILL_RUNNING = "still_running"


class AuditEvent(enum.StrEnum):
    """Every kind of entry in the audit trail (the schema's CHECK constraint has the same set)."""

    REQUESTED = "requested"
    REFUSED = "refused"  # a request refused at once (role, protection, nothing to signal, caps)
    CLICK_REFUSED = "click_refused"  # a click on Approve/Deny by someone who may not
    MORE_REFUSED = "more_refused"  # refusals beyond the per-person rate, summarised
    APPROVAL = "approval"  # one approval of several needed
    APPROVED = "approved"
    DENIED = "denied"
    EXECUTED = "executed"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    INTERRUPTED = "interrupted"
    ESCALATING = "escalating"  # a ladder's cancel step done; terminating what still runs after the grace time
    UNDRAINED = "undrained"  # a drained database accepts connections again (early, or its time was up)
    SELF_SERVICE = "self_service"  # an owner freed their own role's idle sessions (auto): no approver
    LINKED = "linked"  # someone now owns a role (a login proof, or an approver's link)
    UNLINKED = "unlinked"
    ACKNOWLEDGED = "acknowledged"  # someone is on an alert (Acknowledge), or took it over
    SNOOZED = "snoozed"  # an alert's problem is neither re-posted nor escalated until a time
    UNSNOOZED = "unsnoozed"  # a snooze ended early


@dataclass(frozen=True)
class RequestTarget(SessionAges):
    """One backend as the requester saw it; the identity (pid, backend_start, role) is re-checked."""

    pid: int
    backend_start: datetime
    role_oid: int
    role: str
    database: str | None
    application: str | None
    client: str | None
    state: str | None
    state_change: datetime | None
    xact_start: datetime | None
    observed_at: datetime
    blocks: tuple[int, ...] = ()
    query_start: datetime | None = None
    outcome: TargetOutcome | None = None
    note: OutcomeNote | None = None  # why, for outcomes that need saying
    error: str | None = None  # the server's message (failed), or why the connection failed


@dataclass(frozen=True)
class Approval:
    approver: str
    at: datetime


@dataclass(frozen=True)
class SparedSession:
    """A session a drain leaves alone (superuser, protected, the bot's own, not a client), and why
    (an ``Unsignallable`` value)."""

    pid: int
    role: str | None
    why: str


@dataclass(frozen=True)
class SignalRequest:
    id: int
    action: SignalAction
    scope: KillScope
    target: str
    role_name: str | None
    older_than: timedelta | None
    reason: str | None
    command_text: str
    requester: str
    requester_name: str | None
    created_at: datetime
    expires_at: datetime
    now: datetime  # the state database's clock when this was read
    status: RequestStatus
    required_approvals: int
    approvals: tuple[Approval, ...] = ()
    decided_by: str | None = None
    decided_at: datetime | None = None
    finished_at: datetime | None = None
    channel: str | None = None
    message_ts: str | None = None
    targets: tuple[RequestTarget, ...] = ()
    fills: tuple[RoleFill, ...] = ()
    escalate_after: timedelta | None = None  # cancel, then terminate what still runs the same query
    escalate_at: datetime | None = None  # while escalating: when the second step is due
    database_name: str | None = None  # drain: the database
    drain_for: timedelta | None = None  # drain: undrained this long after it was drained
    spared: tuple[SparedSession, ...] = ()  # drain: its protected sessions, when requested

    @property
    def pending(self) -> bool:
        return self.status == RequestStatus.PENDING and self.now < self.expires_at

    @property
    def pids(self) -> list[int]:
        return [t.pid for t in self.targets]

    @property
    def roles(self) -> list[str]:
        return sorted({t.role for t in self.targets})


@dataclass(frozen=True)
class NewRequest:
    action: SignalAction
    scope: KillScope
    target: str
    role_name: str | None
    older_than: timedelta | None
    reason: str | None
    command_text: str
    requester: str
    requester_name: str | None
    required_approvals: int
    ttl_seconds: int
    origin_channel: str | None
    targets: Sequence[RequestTarget]
    fills: Sequence[RoleFill]
    escalate_after: timedelta | None = None
    database_name: str | None = None
    drain_for: timedelta | None = None
    spared: Sequence[SparedSession] = ()


MAX_PIDS_PER_REQUEST = 50
# `drain <database> --for 1h`: a forgotten drain must not become an outage.
DEFAULT_DRAIN = timedelta(hours=1)
MAX_DRAIN = timedelta(hours=24)
MIN_DRAIN = timedelta(minutes=1)
# The ladder's grace time between cancel and terminate (`cancel … --escalate 30s`).
MIN_ESCALATION = timedelta(seconds=1)
MAX_ESCALATION = timedelta(minutes=10)
DEFAULT_ESCALATION = timedelta(seconds=30)

# Requests one person may open in a minute, whatever becomes of them (one that cannot be posted is
# withdrawn at once, so the cap on open ones alone would not bound what reaches the audit).
OPENS_PER_MINUTE = 10


@dataclass(frozen=True)
class Openings:
    """A requester's open requests, and how many they opened in the last minute."""

    open_ids: list[int]
    last_minute: int

    def too_many(self, max_open: int) -> bool:
        """Whether the requester may not open another request now."""
        return len(self.open_ids) >= max_open or self.last_minute >= OPENS_PER_MINUTE


@dataclass(frozen=True)
class Protection:
    """Who is never signalled besides superusers: these roles and their members, and the bot's logins."""

    protected_roles: Sequence[str] = ()
    bot_roles: Sequence[str] = ()


@dataclass(frozen=True)
class Candidate(SessionAges):
    """A backend as found now, with what decides whether it may be signalled."""

    pid: int
    role_oid: int | None
    role: str | None
    database: str | None
    application: str | None
    client: str | None
    state: str | None
    backend_type: str | None
    backend_start: datetime | None
    xact_start: datetime | None
    query_start: datetime | None
    state_change: datetime | None
    observed_at: datetime
    client_backend: bool
    superuser: bool
    own: bool
    superuser_via: str | None  # a superuser role its login role is a member of
    protected_via: str | None  # a protected role (PGCONN_PROTECTED_ROLES) it is a member of
    bot_login: bool  # one of the bot's own login roles (any replica, any of its pools)
    role_limit: int | None
    role_used: int
    blocks: tuple[int, ...]

    def as_target(self) -> RequestTarget:
        assert self.backend_start is not None and self.role_oid is not None and self.role is not None
        return RequestTarget(
            pid=self.pid,
            backend_start=self.backend_start,
            role_oid=self.role_oid,
            role=self.role,
            database=self.database,
            application=self.application,
            client=self.client,
            state=self.state,
            state_change=self.state_change,
            xact_start=self.xact_start,
            observed_at=self.observed_at,
            blocks=self.blocks,
            query_start=self.query_start,
        )


class SignalVerdict(enum.StrEnum):
    """What happened when the bot went to signal one approved target (the facts, before they
    become a TargetOutcome: see ``core.judge.outcome_of``)."""

    SIGNALLED = "signalled"  # the same session; the server sent the signal
    NOT_SIGNALLED = "not_signalled"  # the same session; the server returned false
    GONE = "gone"  # no such backend any more
    REPLACED = "replaced"  # the pid belongs to another session (backend_start or role differ)
    PROTECTED = "protected"  # it became protected (superuser, protected role, the bot's own)
    CHANGED = "changed"  # no longer idle since / no longer running the approved query
    TIMED_OUT = "timed_out"  # the statement timed out waiting for the backend to end
    ERROR = "error"  # the server refused with an error (``error``: its message)
    LOST = "lost"  # the connection failed while signalling it (it may have been signalled)
    NOT_REACHED = "not_reached"  # never signalled: the work failed before its turn


@dataclass(frozen=True)
class SignalAttempt:
    pid: int
    verdict: SignalVerdict
    ended: bool = False  # a terminate whose backend is known to have ended (waited for, or polled)
    error: str | None = None


class OutcomeNote(enum.StrEnum):
    """Why a target's outcome is what it is, where that needs saying (stored in ``detail``)."""

    TIMED_OUT_WAITING = "timed_out_waiting"
    NEW_SESSION = "new_session"
    NOW_PROTECTED = "now_protected"
    QUERY_ENDED = "query_ended"
    ACTIVE_SINCE = "active_since"
    SERVER_DID_NOT_SIGNAL = "server_did_not_signal"
    LOST_WHILE_SIGNALLING = "lost_while_signalling"
    NOT_SIGNALLED = "not_signalled"


@dataclass(frozen=True)
class SignalOutcome:
    """What became of one target: its outcome, why (``note``) and the server's words (``error``)."""

    pid: int
    outcome: TargetOutcome
    note: OutcomeNote | None = None
    error: str | None = None
