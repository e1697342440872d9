"""What the monitor's history says: the sparkline, ``history``, and the lines ``status`` and a
role-at-limit alert show of it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

from bot.model.durations import format_duration, spell_duration
from bot.model.history import HistoryReport, Span, line_from_details
from bot.render.document import Document, Tone, arg, db_flag, on, plural, slash
from bot.render.markup import moment, strip

SPARKS = "▁▂▃▄▅▆▇█"
GAP = "·"  # nothing recorded then
MAX_SPANS = 5
LATE_START = timedelta(minutes=5)  # history that begins this long after the period's start says so

THINNING = "a sample per monitor cycle for a day, per 5 minutes for a week, per hour after"


def sparkline(values: Sequence[float | None], low: float | None = None, high: float | None = None) -> str:
    """One mark per value between ``low`` and ``high`` (default: the values' own min and max);
    None is a gap (``·``). A flat line sits at the bottom when it is 0, in the middle otherwise."""
    known = [v for v in values if v is not None]
    if not known:
        return GAP * len(values)
    lo = min(known) if low is None else low
    hi = max(known) if high is None else high
    marks = []
    for value in values:
        if value is None:
            marks.append(GAP)
        elif hi <= lo:
            marks.append(SPARKS[0] if value <= 0 else SPARKS[3])
        else:
            level = math.floor((value - lo) * (len(SPARKS) - 1) / (hi - lo) + 0.5)  # half up
            marks.append(SPARKS[max(0, min(len(SPARKS) - 1, level))])
    return "".join(marks)


def _spans(spans: Sequence[Span]) -> str:
    shown = ", ".join(f"{moment(s.start)} for {format_duration(s.length)}" for s in spans[:MAX_SPANS])
    return shown + (f" and {len(spans) - MAX_SPANS} more" if len(spans) > MAX_SPANS else "")


def _total(spans: Sequence[Span]) -> str:
    return format_duration(sum((s.length for s in spans), timedelta(0)))


def period(since: timedelta) -> str:
    """``24h`` (not ``1d``) up to two days, else as typed (``7d``, ``90m``)."""
    hours, rest = divmod(int(since.total_seconds()), 3600)
    return f"{hours}h" if not rest and 0 < hours <= 48 else spell_duration(since)


def _range(low: int | None, high: int | None) -> str:
    return f"{low}" if low == high else f"{low}–{high}"


def _who(report: HistoryReport) -> str:
    return strip(report.role) if report.role is not None else "the server"


def history_document(report: HistoryReport) -> Document:
    last = period(report.since)
    who, where = _who(report), on(report.target)
    kept = f"kept {spell_duration(report.retention)} (PGCONN_HISTORY_RETENTION)"
    if not report.retention:
        return Document(
            title=f"No history{where}: PGCONN_HISTORY_RETENTION=0 keeps none.",
            lines=[
                "Set it to how long to keep the monitor's samples (the default is 14d) to see connections over time."
            ],
        )
    if not report.samples:
        return Document(
            title=f"No history yet for {who}{where} in the last {last}.",
            lines=[
                "History is what the monitor of pgconn-bot serve or socket records: one sample of each server "
                "per cycle (PGCONN_MONITOR_INTERVAL)"
                + ("." if report.monitoring else "; the monitor is off here (PGCONN_MONITOR_INTERVAL=0).")
            ],
            notes=[f"History: {THINNING}; {kept}."],
        )
    if not report.recorded:
        return Document(
            title=f"No history for {who}{where} in the last {last}: it never used half of its CONNECTION LIMIT then.",
            lines=[
                "History keeps a role while it uses at least half of its CONNECTION LIMIT, or when it is protected or "
                "owned (PGCONN_PROTECTED_ROLES, PGCONN_ROLE_OWNERS)."
            ],
            commands_intro="Now:",
            commands=[slash(f"limit {arg(report.role or '')}{db_flag(report.target)}")],
            notes=[f"History: {THINNING}; {kept}."],
        )
    unit = "connections" if report.role is not None else "client backends"
    limit = report.limit
    of = f"/{limit}" if report.role is not None and limit is not None else ""
    title = f"{who}{where}, last {last}: peak {report.peak}{of} {unit}"
    if report.peak_at is not None:
        title += f" at {moment(report.peak_at)}"
    line = report.line
    bounds = f"limit {limit}" if report.role is not None else f"of {limit} usable slots"
    lines = [
        sparkline(line.values, line.low, line.high),
        (
            f"scale: {SPARKS[0]} {line.low} … {SPARKS[-1]} {line.high} {unit}"
            if line.low != line.high
            else f"flat at {line.low} {unit}"
        )
        + (f" ({bounds})" if limit is not None else "")
        + f" · a mark is {format_duration(timedelta(seconds=line.step))} · from {moment(line.start)}",
    ]
    first = report.first_at
    if first is not None and first - (report.now - report.since) > LATE_START:
        lines.append(f"History begins {moment(first)}: nothing was recorded before.")
    what = "at or over its limit" if report.role is not None else "full (every usable slot taken)"
    if report.at_limit:
        spans = report.at_limit
        lines.append(f"{what}: {plural(len(spans), 'time')}, {_total(spans)} in all — {_spans(spans)}")
    elif limit is not None:
        lines.append(f"never {what} in this period")
    if report.gaps:
        lines.append(
            f"{plural(len(report.gaps), 'gap')} ({GAP} in the line): nothing recorded — the monitor was off or could "
            f"not look — {_spans(report.gaps)}"
        )
    if report.unrecorded:
        lines.append(
            f"{SPARKS[0]} also stands for the {plural(report.unrecorded, 'sample')} when {who} used less than half "
            "of its limit (those counts are not kept)."
        )
    doc = Document(
        title=title,
        lines=lines,
        notes=[f"History: {THINNING}; {kept}."],
        tone=Tone.WARNING if report.at_limit else Tone.INFO,
    )
    if report.role is not None:
        flag = db_flag(report.target)
        doc.commands_intro = "Now:"
        doc.commands = [slash(f"limit {arg(report.role)}{flag}"), slash(f"stray {arg(report.role)}{flag}")]
    return doc


def status_history_lines(report: HistoryReport | None) -> list[str]:
    """The server's last 24 hours in one line of ``status`` (nothing when none is recorded)."""
    if report is None or not report.recorded:
        return []
    line = report.line
    gaps = f"; {plural(len(report.gaps), 'gap')} ({GAP})" if report.gaps else ""
    peak = f", peak {report.peak} at {moment(report.peak_at)}" if report.peak_at is not None else ""
    return [
        f"last {period(report.since)}: {sparkline(line.values, line.low, line.high)}  "
        f"({_range(line.low, line.high)} client backends{peak}{gaps})"
    ]


def alert_history_lines(kept: object) -> list[str]:
    """A role-at-limit alert's last 24 hours (kept in its details when the monitor raised it)."""
    line = line_from_details(kept)
    if line is None or line.high is None:
        return []
    notes = [f"a mark is {format_duration(timedelta(seconds=line.step))}"]
    if line.has_gaps:
        notes.append(f"{GAP}: nothing recorded")
    if isinstance(kept, dict) and kept.get("unrecorded"):
        notes.append(f"{SPARKS[0]} also: under half its limit")
    return [
        f"last 24h: {sparkline(line.values, line.low, line.high)}  ({_range(line.low, line.high)} connections; "
        + "; ".join(notes)
        + ")"
    ]
