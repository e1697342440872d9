"""What the service returns. Renderers (Block Kit, plain text) turn these into messages.

Times are the server's (``observed_at`` is ``now()`` on the monitored server), so ages never
depend on the bot's clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.model.activity import Connection, DatabaseLimit, RoleFill, RoleInfo
from bot.model.alerts import Alert, AlertHandled
from bot.model.audit import AuditEntry
from bot.model.drains import Drain, DrainProblem, DrainResult
from bot.model.history import HistoryReport
from bot.model.ownership import OwnedRole, OwnershipProblem, OwnershipResult, SelfService
from bot.model.problems import ProblemResult
from bot.model.requests import SignalRequest
from bot.model.servers import ServerSlots


@dataclass(frozen=True)
class HelpEntry:
    """One subcommand as ``help`` shows it (from its spec)."""

    name: str
    usage: str
    summary: str
    example: str | None = None


@dataclass(frozen=True)
class HelpResult:
    entries: list[HelpEntry]
    topic: HelpEntry | None = None  # ``help <subcommand>``
    unknown: str | None = None  # ``help <word>`` where the word names no subcommand (shortened)


@dataclass(frozen=True)
class RoleConnections:
    target: str
    role: RoleInfo
    connections: list[Connection]  # every one the role has, the bot's own included (marked ``own``)
    restricted: bool = False  # the bot's database role cannot see other sessions' details


@dataclass(frozen=True)
class RoleLimit:
    target: str
    role: RoleInfo
    used: int
    database_limits: list[DatabaseLimit] = field(default_factory=list)
    asked_by_owner: bool = False  # the asker owns the role: `free` is theirs to use

    @property
    def left(self) -> int | None:
        return max(0, self.role.connection_limit - self.used) if self.role.limited else None

    @property
    def at_limit(self) -> bool:
        return self.role.limited and self.used >= self.role.connection_limit


@dataclass(frozen=True)
class LimitsOverview:
    target: str
    roles: list[RoleFill]
    threshold: float
    databases: list[DatabaseLimit] = field(default_factory=list)  # at their own limit, or closed


@dataclass(frozen=True)
class StrayConnections:
    target: str
    role: RoleInfo
    min_idle: timedelta | None
    connections: list[Connection]  # longest idle first
    total_connections: int
    restricted: bool = False


class Health(enum.StrEnum):
    HEALTHY = "HEALTHY"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class ServerStatus(ServerSlots):
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
    own_connections: int = 0  # of ``client_backends``, the bot's own (counted, never signalled)
    drains: tuple[Drain, ...] = ()  # databases drained now (refusing new connections), until when
    history: HistoryReport | None = None  # the server's last 24 hours, from the monitor's history

    @property
    def health(self) -> Health:
        if self.fill >= self.critical_at:
            return Health.CRITICAL
        if self.fill >= self.warn_at:
            return Health.WARNING
        return Health.HEALTHY


# --- approval requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestOpened:
    """Answer to the requester: the request exists and where approvers will see it."""

    request: SignalRequest
    posted_in: str | None  # channel id, None when not posted (console)
    console: bool = False
    unrecorded: bool = False  # posted, but the bot could not record it: approvable only from the message
    withdrawn_after: timedelta | None = None  # unrecorded: withdrawn if nobody clicks within this


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
class AuditTrail:
    entries: list[AuditEntry]  # newest first
    asked: int


# --- alerts ---------------------------------------------------------------------------------


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
    owned: tuple[OwnedRole, ...] = ()  # database roles this person owns (self-service)
    self_service: SelfService = SelfService.OFF


# Everything a command can answer: render has a document for each (checked by mypy: assert_never).
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
    | HistoryReport
    | AlertHandled
    | OwnershipResult
    | DrainResult
    | ProblemResult
    | OwnershipProblem
    | DrainProblem
)
