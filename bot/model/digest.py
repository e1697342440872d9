"""The daily digest: what happened in the last 24 hours, in one message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta


@dataclass(frozen=True)
class RoleAtLimit:
    """A role that hit its CONNECTION LIMIT: how often (alerts opened), for how long in all, and
    the applications its sessions came from (the leak hints)."""

    target: str
    role: str
    times: int
    duration: timedelta
    applications: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class AlertSpan:
    kind: str
    count: int
    longest: timedelta


@dataclass(frozen=True)
class Digest:
    day: date
    since: datetime
    until: datetime
    roles_at_limit: tuple[RoleAtLimit, ...] = ()
    requests: dict[str, int] = field(default_factory=dict)  # by status: executed, denied, expired, …
    sessions_ended: int = 0
    alerts: tuple[AlertSpan, ...] = ()
    peak_fill: float | None = None
    peak_at: datetime | None = None


def due_day(now: datetime, at: time) -> date | None:
    """The day whose digest is due at ``now`` (UTC): today once ``at`` has passed, else none.
    A replica that starts late in the day catches up today's (once: the day is claimed)."""
    today = now.date()
    return today if now.time() >= at else None


def window(day: date, at: time) -> tuple[datetime, datetime]:
    """The 24 hours a day's digest covers: up to that day's digest time."""
    until = datetime.combine(day, at, tzinfo=UTC)
    return until - timedelta(days=1), until
