"""Why the bot could not do what was asked, as data: render words each kind once (see
``render.problems``), and the audit records the refusals as they are."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from bot.model.access import AccessRole, Standing
from bot.model.requests import SignalRequest
from bot.model.servers import Fill, Fullness


@dataclass(frozen=True)
class Problem:
    """Something the user should read and act on; never a stack trace."""


@dataclass(frozen=True)
class BadInput(Problem):
    """Text that is not a command: what was wrong (the grammar's words) and how to say it."""

    message: str
    usage: str


@dataclass(frozen=True)
class NotAllowed(Problem):
    """The asker's role is below what the subcommand needs."""

    subcommand: str
    needed: AccessRole
    standing: Standing


@dataclass(frozen=True)
class UnknownTarget(Problem):
    name: str
    known: list[str]


@dataclass(frozen=True)
class TargetUnreachable(Problem):
    target: str
    reason: str  # libpq's, passwords removed


@dataclass(frozen=True)
class TargetFull(Problem):
    """The server (or the bot's role, or the database) has no connection slot left for the bot."""

    target: str
    full: Fullness
    reason: str
    fill: Fill | None  # what the bot saw when it last got in


@dataclass(frozen=True)
class NoSuchRole(Problem):
    name: str
    suggestions: tuple[str, ...]
    target: str


@dataclass(frozen=True)
class InternalError(Problem):
    """Something the bot did not expect; the log has the traceback under ``reference``.
    ``subcommand``: what was running (None: the answer could not be laid out)."""

    reference: str
    subcommand: str | None = None


@dataclass(frozen=True)
class StateUnavailable(Problem):
    """The subcommand needs the state database: not answering, (``configured=False``) not
    part of this mode at all, or (``created=False``) not created yet: nothing was ever recorded."""

    subcommand: str
    configured: bool = True
    created: bool = True


class AlertIssue(enum.StrEnum):
    NOT_FOUND = "not_found"  # no such alert, or the state database is down
    RESOLVED = "resolved"
    NO_REQUEST = "no_request"  # its kind has nothing to clean up


@dataclass(frozen=True)
class AlertNotActionable(Problem):
    """The button on an alert, when there is nothing it can request."""

    alert_id: int
    issue: AlertIssue


@dataclass(frozen=True)
class ForeignButton(Problem):
    """A click whose payload does not name one of the bot's requests or alerts."""

    kind: str  # request | alert


# Why a kill/cancel was not requested (each is also what the audit records of the refusal).


class Unsignallable(enum.StrEnum):
    """Why one session may not be signalled, as found when the request is made."""

    NOT_FOUND = "not_found"  # no such session (it may have ended)
    OTHER_SESSION = "other_session"  # the pid belongs to another session than the alert's
    NOT_IDLE_IN_IT = "not_idle_in_it"  # no longer idle in the transaction the alert was about
    QUERY_ENDED = "query_ended"  # no longer running the query the alert was about
    OWN = "own"  # one of the bot's own connections
    NOT_CLIENT = "not_client"  # a server process (``detail``: its backend_type)
    SUPERUSER = "superuser"
    SUPERUSER_MEMBER = "superuser_member"  # a member of a superuser role (``via``)
    PROTECTED_ROLE = "protected_role"  # PGCONN_PROTECTED_ROLES
    PROTECTED_MEMBER = "protected_member"  # a member of a protected role (``via``)
    NO_QUERY = "no_query"  # cancel, but it runs no query (``detail``: its state)
    HIDDEN = "hidden"  # the bot cannot see its details (no pg_monitor)


@dataclass(frozen=True)
class PidRefusal:
    pid: int
    why: Unsignallable
    role: str | None = None
    via: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class PidsRefused(Problem):
    """Some of the pids asked for may not be signalled: nothing was requested."""

    refusals: tuple[PidRefusal, ...]
    target: str


class RoleProtection(enum.StrEnum):
    SUPERUSER = "superuser"
    PROTECTED = "protected"  # PGCONN_PROTECTED_ROLES


@dataclass(frozen=True)
class RoleRefused(Problem):
    """``kill user|idle <role>`` of a role whose sessions are protected."""

    role: str
    why: RoleProtection


@dataclass(frozen=True)
class NothingToDo(Problem):
    """``kill user|idle <role>`` found no session to signal."""

    role: str
    idle: bool
    older_than: timedelta | None
    target: str


@dataclass(frozen=True)
class DetailsHidden(Problem):
    """The bot cannot see the sessions' details (no pg_monitor): it will not guess."""


@dataclass(frozen=True)
class TooManyRequests(Problem):
    """The requester has as many requests open as one person may (``open_ids``), or opened as
    many as one may in a minute (``last_minute`` ≥ ``per_minute``)."""

    open_ids: tuple[int, ...]
    limit: int
    last_minute: int
    per_minute: int


class DecisionIssue(enum.StrEnum):
    """Why a click on Approve/Deny (or ``approve N``) changed nothing."""

    NO_SUCH_REQUEST = "no_such_request"
    NOT_APPROVER = "not_approver"
    STILL_POSTING = "still_posting"  # not approvable until its message is posted
    ALREADY_DECIDED = "already_decided"
    EXPIRED = "expired"
    OWN_REQUEST = "own_request"
    ALREADY_APPROVED = "already_approved"


@dataclass(frozen=True)
class DecisionRefused(Problem):
    """A click that changed nothing, and why. ``request``: as it stands (already decided,
    expired); ``more_needed``: approvals still missing (already approved)."""

    request_id: int
    issue: DecisionIssue
    approve: bool = True
    standing: Standing | None = None
    request: SignalRequest | None = None
    more_needed: int = 0


@dataclass(frozen=True)
class RequestWithdrawn(Problem):
    """The request could not be posted for approval (``reason``: Slack's), so it was withdrawn."""

    request_id: int
    reason: str


ProblemResult = (
    BadInput
    | NotAllowed
    | UnknownTarget
    | TargetUnreachable
    | TargetFull
    | NoSuchRole
    | InternalError
    | StateUnavailable
    | AlertNotActionable
    | ForeignButton
    | PidsRefused
    | RoleRefused
    | NothingToDo
    | DetailsHidden
    | TooManyRequests
    | DecisionRefused
    | RequestWithdrawn
)
