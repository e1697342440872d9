"""Sessions and roles as the bot reads them from a monitored server.

Times are the server's (``observed_at`` is ``now()`` on the monitored server), so ages never
depend on the bot's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


class SessionAges:
    """How long a backend has been idle / in its transaction, as of ``observed_at`` (the server's now)."""

    state: str | None
    state_change: datetime | None
    xact_start: datetime | None
    observed_at: datetime

    @property
    def idle(self) -> bool:
        """Idle, idle in transaction, or idle in an aborted transaction (see IDLE_STATES)."""
        return self.state in IDLE_STATES

    @property
    def idle_in_transaction(self) -> bool:
        return self.state is not None and self.state.startswith("idle in transaction")

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
class Connection(SessionAges):
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
    # One of the bot's own connections (its login role AND its application_name, or the very
    # connection asking): counted like any other, never signalled.
    own: bool = False

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
    oid: int = 0  # the server's identity for the role (a role dropped and made again has another)

    @property
    def limited(self) -> bool:
        return self.connection_limit >= 0 and not self.superuser

    @property
    def logins_disabled(self) -> bool:
        """CONNECTION LIMIT 0: nobody may log in as this role (superusers are never limited)."""
        return self.connection_limit == 0 and not self.superuser


@dataclass(frozen=True)
class DatabaseLimit:
    """A database's own limit (pg_database.datconnlimit, -1 = none) and whether it accepts
    connections at all (datallowconn); ``used``: every client backend in it."""

    database: str
    used: int
    limit: int
    allows_connections: bool = True

    @property
    def logins_disabled(self) -> bool:
        return not self.allows_connections or self.limit == 0

    @property
    def at_limit(self) -> bool:
        return self.limit >= 0 and self.used >= self.limit


@dataclass(frozen=True)
class RoleFill:
    role: str
    used: int
    limit: int

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit > 0 else float("inf")

    @property
    def logins_disabled(self) -> bool:
        """CONNECTION LIMIT 0 (-1 is no limit)."""
        return self.limit == 0


@dataclass(frozen=True)
class RoleNotFound:
    """No role of that name; ``suggestions``: names close to it."""

    name: str
    suggestions: list[str]


@dataclass(frozen=True)
class ServerActivity:
    """A server's connection settings and every client backend on it (the bot's own among
    them, marked ``own``)."""

    server_version: str
    max_connections: int
    superuser_reserved: int
    reserved: int
    observed_at: datetime
    backends: list[Connection]
