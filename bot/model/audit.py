"""What an audit entry says beyond who did what to which sessions: a typed note per event, kept as
``jsonb`` (``detail``) so the trail can be read, filtered and worded again at any time.

Entries written before notes existed carry their words in ``outcome`` instead."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.model import codec
from bot.model.access import AccessRole, Standing
from bot.model.alerts import AlertKind
from bot.model.drains import DrainIssue, DrainRefused
from bot.model.ownership import LinkSource, SelfService
from bot.model.problems import (
    DecisionIssue,
    DetailsHidden,
    NoSuchRole,
    NotAllowed,
    NothingToDo,
    PidRefusal,
    PidsRefused,
    RoleProtection,
    RoleRefused,
    TooManyRequests,
    Unsignallable,
)
from bot.model.requests import AuditEvent, OutcomeNote, SignalAction, SignalOutcome, TargetOutcome

# What a request can be refused with, as recorded.
RequestRefusal = (
    NotAllowed | NoSuchRole | PidsRefused | RoleRefused | NothingToDo | DetailsHidden | TooManyRequests | DrainRefused
)


@dataclass(frozen=True)
class Reason:
    """requested: the requester's ``--reason``."""

    text: str


@dataclass(frozen=True)
class Refusal:
    """refused: a kill/cancel not requested, and why."""

    problem: RequestRefusal


@dataclass(frozen=True)
class ClickRefusal:
    """click_refused: an Approve/Deny click by someone who may not."""

    approve: bool
    issue: DecisionIssue


@dataclass(frozen=True)
class RefusalsSummarised:
    """more_refused: refusals beyond the per-person rate, counted instead of recorded."""

    count: int
    first: datetime
    last: datetime


@dataclass(frozen=True)
class ApprovalCount:
    """approval: one approval of several needed."""

    counted: int
    required: int


@dataclass(frozen=True)
class PostFailed:
    """withdrawn: the request could not be posted for approval in ``channel`` (Slack's ``reason``)."""

    channel: str
    reason: str


class Closure(enum.StrEnum):
    EXPIRED = "expired"  # nobody decided in time
    NEVER_POSTED = "never_posted"  # the bot stopped before posting it for approval
    STOPPED_EXECUTING = "stopped_executing"  # the bot stopped while executing it


@dataclass(frozen=True)
class Closed:
    """expired, withdrawn, interrupted: a request that ended without (all of) its signals."""

    why: Closure


@dataclass(frozen=True)
class Outcomes:
    """executed: what became of each target."""

    outcomes: tuple[SignalOutcome, ...]
    seconds: float | None = None  # how long it took (a drain)


@dataclass(frozen=True)
class DrainEnded:
    """undrained: the database accepts connections again; ``early``: by someone's undrain."""

    database: str
    early: bool


@dataclass(frozen=True)
class LinkNote:
    """linked, unlinked: whose link to the entry's role, and how it was made (or who removed it)."""

    user: str
    source: LinkSource
    session: str | None = None  # the login that proved it: "pid 4711 from 10.0.0.5"


@dataclass(frozen=True)
class SelfServiceNote:
    """self_service: an owner ended their own role's idle sessions, as PGCONN_SELF_SERVICE allows."""

    mode: SelfService


@dataclass(frozen=True)
class AlertAcknowledged:
    """acknowledged: the actor is on alert ``alert_id`` (``previous``: who was, and no longer is)."""

    alert_id: int
    kind: AlertKind
    subject: str
    previous: str | None = None


@dataclass(frozen=True)
class AlertSnoozed:
    """snoozed: the alert's problem (target, kind, subject) is neither re-posted nor escalated until ``until``."""

    alert_id: int
    kind: AlertKind
    subject: str
    until: datetime


@dataclass(frozen=True)
class AlertUnsnoozed:
    """unsnoozed: the snooze of the alert's problem ended early (it was to last until ``until``)."""

    alert_id: int
    kind: AlertKind
    subject: str
    until: datetime


AuditNote = (
    Reason
    | Refusal
    | ClickRefusal
    | RefusalsSummarised
    | ApprovalCount
    | PostFailed
    | Closed
    | Outcomes
    | LinkNote
    | SelfServiceNote
    | DrainEnded
    | AlertAcknowledged
    | AlertSnoozed
    | AlertUnsnoozed
)

# Every type an audit note may contain (nothing else can be built from what is stored).
NOTE_TYPES: tuple[type, ...] = (
    Reason,
    Refusal,
    ClickRefusal,
    RefusalsSummarised,
    ApprovalCount,
    PostFailed,
    Closed,
    Closure,
    Outcomes,
    SignalOutcome,
    TargetOutcome,
    OutcomeNote,
    DecisionIssue,
    NotAllowed,
    Standing,
    AccessRole,
    NoSuchRole,
    PidsRefused,
    PidRefusal,
    Unsignallable,
    RoleRefused,
    RoleProtection,
    NothingToDo,
    DetailsHidden,
    TooManyRequests,
    LinkNote,
    LinkSource,
    SelfServiceNote,
    SelfService,
    DrainEnded,
    DrainRefused,
    DrainIssue,
    AlertAcknowledged,
    AlertSnoozed,
    AlertUnsnoozed,
    AlertKind,
)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    event: AuditEvent
    request_id: int | None
    action: SignalAction | None
    target: str | None
    role_name: str | None
    pids: tuple[int, ...]
    actor: str | None
    requester: str | None
    approvers: tuple[str, ...]
    outcome: str | None  # the words of an entry written before notes existed
    message_ref: str | None
    origin: str | None = None
    note: AuditNote | None = None


@dataclass(frozen=True)
class NewAuditEntry:
    event: AuditEvent
    request_id: int | None = None
    action: SignalAction | None = None
    target: str | None = None
    role_name: str | None = None
    pids: Sequence[int] = ()
    actor: str | None = None
    requester: str | None = None
    approvers: Sequence[str] = ()
    note: AuditNote | None = None
    message_ref: str | None = None
    origin: str | None = None  # not a Slack action: where it came from (the console and its local user)


# Refusals (anyone can cause them) go out behind everything else, so no flood of them can delay
# a request, an approval or an outcome on its way to the audit channel.
REFUSAL_EVENTS = frozenset({AuditEvent.REFUSED, AuditEvent.CLICK_REFUSED, AuditEvent.MORE_REFUSED})


def note_to_json(note: AuditNote) -> Any:
    return codec.encode(note)


def note_from_json(data: Any) -> AuditNote | None:
    """The note stored in ``detail`` (None for none, or for one this version cannot read)."""
    if data is None:
        return None
    try:
        note = codec.decode(data, NOTE_TYPES)
    except codec.CodecError:
        return None
    return note if isinstance(note, _NOTES) else None


_NOTES = (
    Reason,
    Refusal,
    ClickRefusal,
    RefusalsSummarised,
    ApprovalCount,
    PostFailed,
    Closed,
    Outcomes,
    LinkNote,
    SelfServiceNote,
    DrainEnded,
    AlertAcknowledged,
    AlertSnoozed,
    AlertUnsnoozed,
)


@dataclass(frozen=True)
class Delivery:
    entry: AuditEntry
    attempts: int
    request_ref: str | None  # "channel/ts" of the request's message


@dataclass(frozen=True)
class Undeliverable:
    parked: int
    since: datetime | None
    error: str | None
