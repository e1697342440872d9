"""What alerts say: the channel message, its resolved form, and ``/pgconn alerts``."""

from __future__ import annotations

from typing import Any

from bot.core.durations import format_duration
from bot.core.markup import moment, strip
from bot.core.monitor import age_text
from bot.core.results import Alert, AlertKind, OpenAlerts
from bot.render.document import Document, Table, Tone, fill_bar, one_line, to_document

_ICON = {AlertKind.ROLE_LIMIT: "🚫", AlertKind.SERVER_FILL: "📈", AlertKind.TARGET_DOWN: "🔌"}


def headline(alert: Alert) -> str:
    d = alert.details
    summary = strip(alert.summary)
    match alert.kind:
        case AlertKind.ROLE_LIMIT:
            return f"{summary}: {d.get('used')}/{d.get('limit')}"
        case AlertKind.SERVER_FILL if d.get("full"):
            return f"{alert.severity.upper()}: {summary}"
        case AlertKind.SERVER_FILL:
            return f"{alert.severity.upper()}: {summary} — {round(float(str(d.get('fill', 0))) * 100)}% of usable slots"
        case AlertKind.IDLE_IN_TRANSACTION:
            return f"{summary} for {age_text(d.get('state_change'), d.get('observed_at'))}"
        case AlertKind.LONG_QUERY:
            return f"{summary}: running for {age_text(d.get('query_start'), d.get('observed_at'))}"
    return summary


def _session_rows(sessions: list[dict[str, Any]], observed: Any) -> Table:
    rows = [
        [
            str(s.get("pid")),
            s.get("state") or "—",
            strip(one_line(s.get("application"), 24)) or "(none)",
            s.get("client") or "local",
            age_text(s.get("state_change"), observed) if s.get("state") != "active" else "active",
        ]
        for s in sessions
    ]
    return Table(["PID", "STATE", "APPLICATION", "CLIENT", "IDLE"], rows)


def alert_document(alert: Alert) -> Document:
    d = alert.details
    doc = Document(title=f"{_ICON.get(alert.kind, '⚠️')} {headline(alert)}", tone=Tone.WARNING)
    if alert.severity == "critical":
        doc.tone = Tone.PROBLEM
    match alert.kind:
        case AlertKind.ROLE_LIMIT:
            doc.lines.append(f"New connections for {strip(alert.subject)} are refused until some close.")
            sessions = list(d.get("sessions") or [])  # type: ignore[call-overload]
            if sessions:
                doc.table = _session_rows(sessions, d.get("observed_at"))
            flag = "" if alert.target == "default" else f" --db {alert.target}"
            doc.commands_intro = "Look closer with:"
            doc.commands = [f"/pgconn stray {strip(alert.subject)}{flag}"]
        case AlertKind.SERVER_FILL if d.get("full"):
            doc.lines.append(f"The bot cannot get in either: {strip(str(d.get('reason') or ''))}")
            if d.get("client_backends") is not None:
                doc.lines.append(
                    f"Last seen: {d.get('client_backends')} client backends of {d.get('usable_slots')} usable slots "
                    f"(max_connections {d.get('max_connections')}). The bot keeps trying and takes the first free slot."
                )
        case AlertKind.SERVER_FILL:
            doc.lines.append(
                f"{fill_bar(float(str(d.get('fill', 0))))}  {d.get('client_backends')} client backends, "
                f"{d.get('usable_slots')} usable slots (max_connections {d.get('max_connections')})"
            )
        case AlertKind.IDLE_IN_TRANSACTION | AlertKind.LONG_QUERY:
            since = d.get("xact_start") if alert.kind == AlertKind.IDLE_IN_TRANSACTION else d.get("query_start")
            label = "transaction open for" if alert.kind == AlertKind.IDLE_IN_TRANSACTION else "query started"
            doc.lines.append(
                f"{label} {age_text(since, d.get('observed_at'))} · database {strip(str(d.get('database') or '—'))}"
                f" · application {strip(one_line(str(d.get('application') or ''), 40)) or '(none)'}"
                f" · client {d.get('client') or 'local'}"
            )
            if d.get("query"):
                last = "last statement" if alert.kind == AlertKind.IDLE_IN_TRANSACTION else "query"
                doc.lines.append(f"{last}: {one_line(str(d['query']), 160)}")
        case AlertKind.TARGET_DOWN:
            doc.lines.append(f"reason: {strip(str(d.get('reason') or 'unknown'))}")
    doc.notes.append(f"Alert #{alert.id} on {alert.target} · since {moment(alert.opened_at)}")
    if alert.resolved_at is not None:
        doc.title = f"✅ Resolved after {lasted(alert)} — {headline(alert)}"
        doc.tone = Tone.INFO
        doc.lines.insert(0, f"Resolved {moment(alert.resolved_at)}: {strip(alert.resolution or '')}.")
        doc.commands = []
        doc.commands_intro = ""
    return doc


def lasted(alert: Alert) -> str:
    end = alert.resolved_at or alert.last_seen_at
    return format_duration(end - alert.opened_at)


def resolved_text(alert: Alert) -> str:
    return f"✅ Resolved after {lasted(alert)}: {strip(alert.resolution or 'the condition has cleared')}."


@to_document.register
def _(result: OpenAlerts) -> Document:
    if not result.alerts:
        title = (
            "No open alerts."
            if result.monitoring
            else "No open alerts (the monitor is off: PGCONN_MONITOR_INTERVAL=0)."
        )
        return Document(title=title)
    return Document(
        title=f"{len(result.alerts)} open alert{'s' if len(result.alerts) != 1 else ''}",
        lines=[
            f"#{a.id} · {a.severity} · {headline(a)} · since {moment(a.opened_at)} ({lasted(a)})" for a in result.alerts
        ],
    )
