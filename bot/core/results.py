"""What the service returns. Renderers (Block Kit, plain text) turn these into messages.

Times are the server's (``observed_at`` is ``now()`` on the monitored server), so ages never
depend on the bot's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


class _Ages:
    """How long a backend has been idle / in its transaction, as of ``observed_at`` (the server's now)."""

    state: str | None
    state_change: datetime | None
    xact_start: datetime | None
    observed_at: datetime

    @property
    def idle_for(self) -> timedelta | None:
        """How long it has been idle; None while a query runs."""
        if self.state in IDLE_STATES and self.state_change:
            return self.observed_at - self.state_change
        return None

    @property
    def transaction_age(self) -> timedelta | None:
        return self.observed_at - self.xact_start if self.xact_start else None


@dataclass(frozen=True)
class Connection(_Ages):
    pid: int
    role: str | None
    database: str | None
    application: str | None
    client_addr: str | None
    client_port: int | None
    state: str | None
    backend_start: datetime | None
    xact_start: datetime | None
    query_start: datetime | None
    state_change: datetime | None
    wait_event: str | None
    query: str | None
    observed_at: datetime
    query_length: int | None = None  # of the whole statement (``query`` is a preview)

    @property
    def client(self) -> str:
        if self.client_addr:
            return self.client_addr
        if self.client_port == -1:
            return "local socket"
        return "—"

    @property
    def connected_for(self) -> timedelta | None:
        return self.observed_at - self.backend_start if self.backend_start else None

    @property
    def query_age(self) -> timedelta | None:
        return self.observed_at - self.query_start if self.query_start else None


@dataclass(frozen=True)
class RoleInfo:
    name: str
    connection_limit: int  # -1 = no limit
    superuser: bool
    can_login: bool

    @property
    def limited(self) -> bool:
        return self.connection_limit >= 0 and not self.superuser


@dataclass(frozen=True)
class HelpResult:
    topic: str | None = None


@dataclass(frozen=True)
class RoleConnections:
    target: str
    role: RoleInfo
    connections: list[Connection]
    restricted: bool = False  # the bot's database role cannot see other sessions' details


@dataclass(frozen=True)
class DatabaseLimit:
    database: str
    used: int
    limit: int


@dataclass(frozen=True)
class RoleLimit:
    target: str
    role: RoleInfo
    used: int
    database_limits: list[DatabaseLimit] = field(default_factory=list)

    @property
    def left(self) -> int | None:
        return max(0, self.role.connection_limit - self.used) if self.role.limited else None

    @property
    def at_limit(self) -> bool:
        return self.role.limited and self.used >= self.role.connection_limit


@dataclass(frozen=True)
class RoleFill:
    role: str
    used: int
    limit: int

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit > 0 else float("inf")


@dataclass(frozen=True)
class LimitsOverview:
    target: str
    roles: list[RoleFill]
    threshold: float


@dataclass(frozen=True)
class StrayConnections:
    target: str
    role: RoleInfo
    min_idle: timedelta | None
    connections: list[Connection]  # longest idle first
    total_connections: int
    restricted: bool = False


class Health:
    HEALTHY = "HEALTHY"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class ServerStatus:
    target: str
    server_version: str
    max_connections: int
    superuser_reserved: int
    reserved: int
    client_backends: int
    by_state: dict[str, int]
    longest_active: Connection | None
    longest_idle_in_transaction: Connection | None
    top_roles: list[tuple[str, int]]
    top_clients: list[tuple[str, int]]
    top_applications: list[tuple[str, int]]
    warn_at: float
    critical_at: float
    restricted: bool = False
    observed_at: datetime | None = None

    @property
    def usable_slots(self) -> int:
        return max(1, self.max_connections - self.superuser_reserved - self.reserved)

    @property
    def fill(self) -> float:
        return self.client_backends / self.usable_slots

    @property
    def health(self) -> str:
        if self.fill >= self.critical_at:
            return Health.CRITICAL
        if self.fill >= self.warn_at:
            return Health.WARNING
        return Health.HEALTHY


# --- approval requests ----------------------------------------------------------------------


class RequestStatus:
    POSTING = "posting"  # stored, being posted for approval: nobody can approve it yet
    PENDING = "pending"
    EXECUTING = "executing"
    EXECUTED = "executed"
    DENIED = "denied"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"  # could not be posted for approval
    INTERRUPTED = "interrupted"  # the bot stopped while executing

    FINAL = (EXECUTED, DENIED, EXPIRED, WITHDRAWN, INTERRUPTED)


class TargetOutcome:
    TERMINATED = "terminated"
    CANCELLED = "cancelled"
    GONE = "gone"
    REPLACED = "replaced"
    PROTECTED = "protected"
    CHANGED = "changed"  # no longer idle / no longer running the approved query
    FAILED = "failed"
    STILL_RUNNING = "still_running"


OUTCOME_LABELS = {
    TargetOutcome.TERMINATED: "terminated",
    TargetOutcome.CANCELLED: "cancelled",
    TargetOutcome.GONE: "already gone",
    TargetOutcome.REPLACED: "replaced by another session, not signalled",
    TargetOutcome.PROTECTED: "protected now, not signalled",
    TargetOutcome.CHANGED: "changed since the request, not signalled",
    TargetOutcome.FAILED: "failed",
    TargetOutcome.STILL_RUNNING: "signalled, still running",
}


@dataclass(frozen=True)
class RequestTarget(_Ages):
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
    outcome: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Approval:
    approver: str
    at: datetime


@dataclass(frozen=True)
class SignalRequest:
    id: int
    action: str  # terminate | cancel
    scope: str  # pids | user | idle
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
    status: str
    required_approvals: int
    approvals: tuple[Approval, ...] = ()
    decided_by: str | None = None
    decided_at: datetime | None = None
    finished_at: datetime | None = None
    channel: str | None = None
    message_ts: str | None = None
    targets: tuple[RequestTarget, ...] = ()
    fills: tuple[RoleFill, ...] = ()

    @property
    def pending(self) -> bool:
        return self.status == RequestStatus.PENDING and self.now < self.expires_at

    @property
    def pids(self) -> list[int]:
        return [t.pid for t in self.targets]

    @property
    def roles(self) -> list[str]:
        return sorted({t.role for t in self.targets})

    @property
    def verb(self) -> str:
        return "terminate" if self.action == "terminate" else "cancel the running query of"


@dataclass(frozen=True)
class RequestOpened:
    """Answer to the requester: the request exists and where approvers will see it."""

    request: SignalRequest
    posted_in: str | None  # channel id, None when not posted (console)
    console: bool = False
    unrecorded: bool = False  # posted, but the bot could not record it: approvable only from the message


@dataclass(frozen=True)
class Decided:
    """A click or ``approve``/``deny`` that changed a request."""

    request: SignalRequest
    effect: str  # approval_recorded | executed | denied
    approvals_counted: int | None = None  # approval_recorded: those that count (approvers still)


@dataclass(frozen=True)
class PendingRequests:
    requests: list[SignalRequest]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    event: str
    request_id: int | None
    action: str | None
    target: str | None
    role_name: str | None
    pids: tuple[int, ...]
    actor: str | None
    requester: str | None
    approvers: tuple[str, ...]
    outcome: str | None
    message_ref: str | None
    origin: str | None = None


@dataclass(frozen=True)
class AuditTrail:
    entries: list[AuditEntry]  # newest first
    asked: int


# --- alerts ---------------------------------------------------------------------------------


class AlertKind:
    ROLE_LIMIT = "role_limit"
    SERVER_FILL = "server_fill"
    IDLE_IN_TRANSACTION = "idle_in_transaction"
    LONG_QUERY = "long_query"
    TARGET_DOWN = "target_down"


@dataclass(frozen=True)
class Alert:
    """One problem on one target, open until it clears. ``details`` holds what the message shows."""

    id: int
    target: str
    kind: str
    subject: str
    severity: str  # warning | critical
    summary: str
    details: dict[str, object]
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None
    channel: str | None = None
    message_ts: str | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class OpenAlerts:
    alerts: list[Alert]
    monitoring: bool  # whether a monitor runs in this process's configuration


@dataclass(frozen=True)
class HomeView:
    """The App Home tab: what this person can do, and for approvers what waits for them."""

    user_id: str
    role: str  # none | viewer | requester | approver
    pending: list[SignalRequest]
    alerts: list[Alert]
    monitoring: bool
    note: str | None = None  # the outcome of a click made on the tab itself


# --- answers that are not data -------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Something the user should read and act on; never a stack trace."""

    message: str
    usage: str | None = None


@dataclass(frozen=True)
class Refused(Problem):
    pass


@dataclass(frozen=True)
class UnknownTarget(Problem):
    pass


@dataclass(frozen=True)
class TargetUnreachable(Problem):
    pass


@dataclass(frozen=True)
class TargetFull(Problem):
    """The server (or the bot's role, or the database) has no connection slot left for the bot."""


@dataclass(frozen=True)
class NoSuchRole(Problem):
    pass


@dataclass(frozen=True)
class InternalError(Problem):
    pass


@dataclass(frozen=True)
class StateUnavailable(Problem):
    pass


@dataclass(frozen=True)
class NothingToSignal(Problem):
    """A kill/cancel refused at once: nothing matched, or a target is protected."""


@dataclass(frozen=True)
class DecisionRefused(Problem):
    """A click that changed nothing, with why (not an approver, own request, already decided…)."""


Result = (
    HelpResult
    | RoleConnections
    | RoleLimit
    | LimitsOverview
    | StrayConnections
    | ServerStatus
    | RequestOpened
    | Decided
    | PendingRequests
    | AuditTrail
    | OpenAlerts
    | Problem
)
