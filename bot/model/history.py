"""Monitor history: what one cycle keeps of a server, how it thins as it ages, and what a period of
it comes to — the marks of a sparkline, the peak, the spans at the limit and the gaps.

One row per server per monitor cycle (``Sample``): client backends, usable slots, counts by state,
and per-role counts for the roles that matter (at or above half their CONNECTION LIMIT, and the
watched ones: protected and owned roles). Rows thin as they age (``TIERS``): per cycle for a day,
per 5 minutes for a week, per hour after; a thinned row keeps the peaks of the rows it replaces.
Everything here is a pure function, tested as tables (``tests/unit/test_history.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from bot.model.alerts import Snapshot

# Rows older than the age are merged into buckets of that many seconds (the coarser tier first).
TIERS: tuple[tuple[timedelta, int], ...] = ((timedelta(days=7), 3600), (timedelta(days=1), 300))
# Two samples further apart than this many times what the first stands for: nothing was recorded
# in between (the monitor was off, or could not look). One slow cycle is not a gap.
GAP_FACTOR = 2.5
WIDTH = 48  # marks in a `history` or `status` line
ALERT_WIDTH = 24  # a role-at-limit alert's last 24 hours: a mark an hour
DEFAULT_SINCE = timedelta(hours=24)
MIN_SINCE = timedelta(minutes=1)
ALERT_SINCE = timedelta(hours=24)
# An alert's line is read again at most this often while the alert lasts (it is refreshed every
# cycle, but a mark is an hour).
ALERT_LINE_FRESH = timedelta(minutes=5)
DEFAULT_RETENTION = timedelta(days=14)
DEFAULT_COVERS = 60.0  # what a sample stands for when the monitor runs only when asked


@dataclass(frozen=True)
class RoleCount:
    used: int
    limit: int  # its CONNECTION LIMIT then (-1: none)


@dataclass(frozen=True)
class Sample:
    """One row of history: a cycle's snapshot of a server, or the peaks of the rows it thinned."""

    target: str  # the server's first target (as its alerts)
    at: datetime  # when it was observed (a thinned row: its bucket's start)
    covers: float  # the seconds it stands for (the monitor interval; 300 or 3600 once thinned)
    client_backends: int
    usable_slots: int
    by_state: Mapping[str, int] = field(default_factory=dict)
    roles: Mapping[str, RoleCount] = field(default_factory=dict)
    samples: int = 1  # how many cycles it stands for


def sample_of(snapshot: Snapshot, covers: float) -> Sample:
    """What a cycle keeps of a snapshot (``covers``: the monitor interval)."""
    return Sample(
        target=snapshot.target,
        at=snapshot.observed_at,
        covers=covers if covers > 0 else DEFAULT_COVERS,
        client_backends=snapshot.client_backends,
        usable_slots=snapshot.usable_slots,
        by_state=dict(snapshot.by_state),
        roles={role: RoleCount(used, limit) for role, (used, limit) in snapshot.role_use.items()},
    )


# --- thinning as it ages ---------------------------------------------------------------------------


def resolution_for(age: timedelta) -> int:
    """The seconds a row of that age stands for once thinned (0: as the monitor recorded it)."""
    for older_than, resolution in TIERS:
        if age >= older_than:
            return resolution
    return 0


def bucket_of(at: datetime, resolution: int) -> datetime:
    """The start of the ``resolution``-second bucket ``at`` falls in (aligned to the epoch, UTC)."""
    return datetime.fromtimestamp(math.floor(at.timestamp() / resolution) * resolution, UTC)


def thinning_plan(now: datetime) -> list[tuple[datetime, int]]:
    """(cutoff, resolution) for each tier, coarsest first: rows before the cutoff that are finer
    than the resolution are merged into its buckets. Cutoffs fall on bucket boundaries, so a
    bucket is always merged whole."""
    return [(bucket_of(now - age, resolution), resolution) for age, resolution in TIERS]


def merge(rows: Sequence[Sample], resolution: int) -> list[Sample]:
    """Rows merged into one per server and ``resolution``-second bucket: the peaks (client
    backends, each state, each role's count; the role's latest limit), the cycles added up."""
    groups: dict[tuple[str, datetime], list[Sample]] = {}
    for row in sorted(rows, key=lambda r: r.at):
        groups.setdefault((row.target, bucket_of(row.at, resolution)), []).append(row)
    merged = []
    for (target, bucket), group in groups.items():
        by_state: dict[str, int] = {}
        roles: dict[str, RoleCount] = {}
        for row in group:
            for state, count in row.by_state.items():
                by_state[state] = max(count, by_state.get(state, count))
            for role, use in row.roles.items():
                before = roles.get(role)
                roles[role] = RoleCount(max(use.used, before.used if before else use.used), use.limit)
        merged.append(
            Sample(
                target=target,
                at=bucket,
                covers=max(float(resolution), *(row.covers for row in group)),
                client_backends=max(row.client_backends for row in group),
                usable_slots=group[-1].usable_slots,
                by_state=by_state,
                roles=roles,
                samples=sum(row.samples for row in group),
            )
        )
    return sorted(merged, key=lambda r: (r.at, r.target))


# --- a period of it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One sample, of the server (client backends) or of a role (its connections)."""

    at: datetime
    covers: float
    value: int
    limit: int | None  # at or above it counts as at the limit (usable slots for the server)
    recorded: bool = True  # False: the role used less than half its limit then (not kept; drawn as 0)


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return max(timedelta(0), self.end - self.start)


@dataclass(frozen=True)
class Line:
    """A period in marks: each the peak of the samples in it, None where nothing was recorded."""

    start: datetime
    step: float  # seconds a mark stands for
    values: tuple[int | None, ...]

    @property
    def low(self) -> int | None:
        return min((v for v in self.values if v is not None), default=None)

    @property
    def high(self) -> int | None:
        return max((v for v in self.values if v is not None), default=None)

    @property
    def has_gaps(self) -> bool:
        return any(v is None for v in self.values)


def points_of(samples: Sequence[Sample], role: str | None) -> list[Point]:
    """The server's client backends (``role`` None) or a role's connections, oldest first."""
    points = []
    for s in sorted(samples, key=lambda s: s.at):
        if role is None:
            points.append(Point(s.at, s.covers, s.client_backends, s.usable_slots))
        elif (count := s.roles.get(role)) is not None:
            points.append(Point(s.at, s.covers, count.used, count.limit if count.limit > 0 else None))
        else:
            points.append(Point(s.at, s.covers, 0, None, recorded=False))
    return points


def _covers(point: Point) -> float:
    return max(point.covers, 1.0)


def _apart(earlier: Point, later: datetime) -> bool:
    """Nothing recorded between ``earlier`` and ``later``: a gap."""
    return (later - earlier.at).total_seconds() > GAP_FACTOR * _covers(earlier)


def _end_of(point: Point) -> datetime:
    return point.at + timedelta(seconds=_covers(point))


def gaps(points: Sequence[Point], end: datetime) -> list[Span]:
    """When nothing was recorded, between the first point and ``end`` (a monitor that is off now
    leaves a gap up to ``end``)."""
    found = [Span(_end_of(a), b.at) for a, b in pairwise(points) if _apart(a, b.at)]
    if points and _apart(points[-1], end):
        found.append(Span(_end_of(points[-1]), end))
    return found


def at_limit(points: Sequence[Point], end: datetime) -> list[Span]:
    """When the value was at or over its limit: from the first such sample to the first one
    below it (or what the last one stands for; a gap ends a span too)."""
    spans: list[Span] = []
    start: datetime | None = None
    last: Point | None = None
    for point in points:
        full = point.limit is not None and point.value >= point.limit
        if start is not None and last is not None and (not full or _apart(last, point.at)):
            spans.append(Span(start, point.at if not _apart(last, point.at) else min(end, _end_of(last))))
            start = None
        if full and start is None:
            start = point.at
        last = point
    if start is not None and last is not None:
        spans.append(Span(start, max(start, min(end, _end_of(last)))))
    return spans


def line(points: Sequence[Point], start: datetime, end: datetime, width: int) -> Line:
    """At most ``width`` marks from ``start`` to ``end``, never finer than the finest sample: each
    mark the peak of its samples; a mark without one shows the sample before it while that still
    stands (one missed cycle is no gap), else None (a gap)."""
    if not points:
        return Line(start, 0.0, ())
    span = max(0.0, (end - start).total_seconds())
    finest = min(_covers(p) for p in points)
    marks = max(1, min(width, math.ceil(span / finest)))
    step = span / marks if span >= finest else finest
    values: list[int | None] = [None] * marks
    for point in points:
        if point.at < start:
            continue
        index = min(marks - 1, int((point.at - start).total_seconds() // step))
        now = values[index]
        values[index] = point.value if now is None else max(now, point.value)
    latest: Point | None = None
    ordered = sorted(points, key=lambda p: p.at)
    j = 0
    for index in range(marks):
        mark_start = start + timedelta(seconds=index * step)
        mark_end = start + timedelta(seconds=(index + 1) * step)
        while j < len(ordered) and ordered[j].at < mark_end:
            latest = ordered[j]
            j += 1
        if values[index] is None and latest is not None and not _apart(latest, mark_start):
            values[index] = latest.value
    return Line(start, step, tuple(values))


@dataclass(frozen=True)
class HistoryReport:
    """A period of a server's (or a role's) history, as ``history`` and ``status`` show it."""

    target: str
    role: str | None
    since: timedelta
    now: datetime
    line: Line
    samples: int  # rows in the period
    peak: int | None = None
    peak_at: datetime | None = None  # the latest time it was reached
    limit: int | None = None  # the latest limit seen (usable slots for the server)
    at_limit: tuple[Span, ...] = ()
    gaps: tuple[Span, ...] = ()
    first_at: datetime | None = None  # the first sample in the period
    unrecorded: int = 0  # a role's samples under half its limit (not kept: drawn as 0)
    monitoring: bool = True  # a monitor runs in this configuration
    retention: timedelta = DEFAULT_RETENTION  # PGCONN_HISTORY_RETENTION (0: nothing is recorded)

    @property
    def recorded(self) -> bool:
        """Anything was recorded of it in the period (a role: at least once at half its limit)."""
        return self.peak is not None


def summarise(
    samples: Sequence[Sample],
    *,
    target: str,
    role: str | None,
    since: timedelta,
    now: datetime,
    width: int = WIDTH,
    monitoring: bool = True,
    retention: timedelta = DEFAULT_RETENTION,
) -> HistoryReport:
    """What ``history [role] --since`` shows: a line from the first sample in the period (or the
    period's start) to ``now``, its peak, the spans at the limit, the gaps."""
    window = now - since
    points = [p for p in points_of(samples, role) if p.at >= window]
    base = HistoryReport(target, role, since, now, Line(window, 0.0, ()), 0, monitoring=monitoring, retention=retention)
    if not points:
        return base
    kept = [p for p in points if p.recorded]
    peak = max(kept, key=lambda p: (p.value, p.at), default=None)
    limits = [p.limit for p in kept if p.limit is not None]
    start = max(window, points[0].at)
    return HistoryReport(
        target=target,
        role=role,
        since=since,
        now=now,
        line=line(points, start, now, width),
        samples=len(points),
        peak=peak.value if peak else None,
        peak_at=peak.at if peak else None,
        limit=limits[-1] if limits else None,
        at_limit=tuple(at_limit(points, now)),
        gaps=tuple(gaps(points, now)),
        first_at=points[0].at,
        unrecorded=len(points) - len(kept),
        monitoring=monitoring,
        retention=retention,
    )


# --- a role-at-limit alert's last 24 hours, kept in its details ----------------------------------


def alert_line(samples: Sequence[Sample], role: str, now: datetime) -> dict[str, Any]:
    """A role's last 24 hours as an alert keeps it: ALERT_WIDTH marks (an hour each), None where
    nothing was recorded (before history began, too), as JSON."""
    start = now - ALERT_SINCE
    points = [p for p in points_of(samples, role) if p.at >= start]
    drawn = line(points, start, now, ALERT_WIDTH) if points else Line(start, 0.0, ())
    return {
        "start": drawn.start.isoformat(),
        "step": round(drawn.step, 3),
        "values": list(drawn.values),
        "at": now.isoformat(),
        "unrecorded": any(not p.recorded for p in points),
    }


def line_from_details(value: object) -> Line | None:
    """An alert's kept line, if its details hold a well-formed one."""
    if not isinstance(value, dict):
        return None
    try:
        values = value["values"]
        if not isinstance(values, list) or not all(v is None or isinstance(v, int) for v in values):
            return None
        return Line(datetime.fromisoformat(str(value["start"])), float(value["step"]), tuple(values))
    except (KeyError, TypeError, ValueError):
        return None


def line_is_fresh(value: object, now: datetime) -> bool:
    """Whether an alert's kept line was read recently enough to keep (ALERT_LINE_FRESH)."""
    if not isinstance(value, dict) or line_from_details(value) is None:
        return False
    try:
        read_at = datetime.fromisoformat(str(value["at"]))
    except (KeyError, TypeError, ValueError):
        return False
    return timedelta(0) <= now - read_at < ALERT_LINE_FRESH
