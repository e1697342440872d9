"""What the service returns. Renderers (Block Kit, plain text) turn these into messages.

Times are the server's (``observed_at`` is ``now()`` on the monitored server), so ages never
depend on the bot's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


@dataclass(frozen=True)
class Connection:
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
    def idle_for(self) -> timedelta | None:
        """How long it has been idle; None while a query runs."""
        if self.state in IDLE_STATES and self.state_change:
            return self.observed_at - self.state_change
        return None

    @property
    def query_age(self) -> timedelta | None:
        return self.observed_at - self.query_start if self.query_start else None

    @property
    def transaction_age(self) -> timedelta | None:
        return self.observed_at - self.xact_start if self.xact_start else None


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
class NoSuchRole(Problem):
    pass


@dataclass(frozen=True)
class InternalError(Problem):
    pass


Result = HelpResult | RoleConnections | RoleLimit | LimitsOverview | StrayConnections | ServerStatus | Problem
