"""The monitor's vocabulary: what a snapshot holds, what it finds, and the alerts it keeps."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.model.servers import ServerSlots


class AlertKind(enum.StrEnum):
    ROLE_LIMIT = "role_limit"
    SERVER_FILL = "server_fill"
    IDLE_IN_TRANSACTION = "idle_in_transaction"
    LONG_QUERY = "long_query"
    TARGET_DOWN = "target_down"


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class Shape(enum.StrEnum):
    """What an alert's headline says besides its kind and severity (a change edits the message)."""

    PLAIN = ""
    AT_LIMIT = "at"
    OVER_LIMIT = "over"
    CLOSE = "close"  # the server close to max_connections
    CRITICALLY_CLOSE = "critical"
    FULL = "full"  # the server refuses every new connection


@dataclass(frozen=True)
class Alert:
    """One problem on one target, open until it clears. ``details`` holds what the message shows."""

    id: int
    target: str  # the server's first target (its databases: ``details["databases"]``)
    kind: AlertKind
    subject: str  # what it is about on its target: a role, "pid:start" of a session, or ""
    severity: Severity
    shape: Shape  # what its headline says besides its kind and severity
    details: dict[str, object]
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None  # the words of an alert resolved before resolution_details existed
    channel: str | None = None
    message_ts: str | None = None
    resolution_details: dict[str, object] | None = None
    acked_by: str | None = None  # who is on it (Acknowledge), since ``acked_at``
    acked_at: datetime | None = None
    # The problem's snooze in force when read (snoozes belong to target + kind + subject, not to
    # one alert: a problem that clears and comes back within it is still snoozed).
    snoozed_until: datetime | None = None
    snoozed_by: str | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    @property
    def snoozed(self) -> bool:
        return self.snoozed_until is not None

    @property
    def session_pid(self) -> int | None:
        """The session an idle-in-transaction or long-query alert is about."""
        pid = self.details.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def databases(self) -> list[str]:
        """The targets on the alert's server (its first target alone for alerts of one target)."""
        names = self.details.get("databases")
        return [str(n) for n in names] if isinstance(names, list) and names else [self.target]


class AlertAction(enum.StrEnum):
    """What someone can do about an alert (its buttons, and ``ack``/``snooze``/``unsnooze``)."""

    ACKNOWLEDGE = "acknowledge"
    SNOOZE = "snooze"
    UNSNOOZE = "unsnooze"


# The Snooze menu's choices (a click may choose only these); typed, ``snooze N --for`` takes any
# duration from MIN_SNOOZE to MAX_SNOOZE.
SNOOZE_CHOICES: dict[str, timedelta] = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1)}
DEFAULT_SNOOZE = timedelta(hours=1)
MIN_SNOOZE = timedelta(minutes=1)
MAX_SNOOZE = timedelta(days=7)


@dataclass(frozen=True)
class AlertHandled:
    """What an Acknowledge, Snooze or Un-snooze did to ``alert`` (as it stands now).

    ``previous``: acknowledge — who was on it before (taken over from them); ``changed``: False
    when it was so already (acknowledged by the same person; un-snoozed when not snoozed)."""

    action: AlertAction
    alert: Alert
    previous: str | None = None
    changed: bool = True


@dataclass(frozen=True)
class Finding:
    """A problem seen in this cycle; (kind, subject) identifies it on its target."""

    kind: AlertKind
    subject: str
    severity: Severity
    shape: Shape
    details: dict[str, Any]


@dataclass(frozen=True)
class Clearance:
    """An open alert that no longer holds; ``details``: what the server looked like then."""

    alert_id: int
    details: dict[str, Any]


@dataclass(frozen=True)
class SessionOfNote:
    """A session the snapshot names: of a role at its limit, idle in transaction, or running long."""

    pid: int
    role: str | None = None
    database: str | None = None
    application: str | None = None
    client: str | None = None
    state: str | None = None
    backend_start: datetime | None = None
    xact_start: datetime | None = None
    query_start: datetime | None = None
    state_change: datetime | None = None
    query: str | None = None
    query_length: int | None = None

    def as_details(self) -> dict[str, Any]:
        """The alert's JSON of it (times as ISO text; what is unknown left out)."""
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            if value is not None:
                out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True)
class RoleAtLimit:
    role: str
    limit: int
    used: int
    sessions: tuple[SessionOfNote, ...]  # the first few, oldest state change first


@dataclass(frozen=True)
class Snapshot(ServerSlots):
    """One server's state in one statement (see ``sql.MONITOR_SNAPSHOT``): settings, the client
    backends, and only the sessions and roles over a threshold."""

    target: str
    server_version: str
    max_connections: int
    superuser_reserved: int
    reserved: int
    observed_at: datetime
    client_backends: int
    full_roles: list[RoleAtLimit]
    idle_in_transaction: list[SessionOfNote]
    long_queries: list[SessionOfNote]
    by_state: dict[str, int] = field(default_factory=dict)  # client backends by state (history)
    # role → (used, CONNECTION LIMIT) of the roles at or above half their limit and the watched
    # ones (protected, owned): what history keeps of roles
    role_use: dict[str, tuple[int, int]] = field(default_factory=dict)
