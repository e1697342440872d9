"""What alerts say: the channel message, its resolved form, and ``/pgconn alerts``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, assert_never

from bot.model.alerts import Alert, AlertAction, AlertHandled, AlertKind, Shape
from bot.model.durations import format_duration
from bot.model.results import OpenAlerts
from bot.render.document import Document, Table, Tone, db_flag, fill_bar, one_line, slash
from bot.render.history import alert_history_lines
from bot.render.markup import mention, moment, strip

_ICON = {AlertKind.ROLE_LIMIT: "🚫", AlertKind.SERVER_FILL: "📈", AlertKind.TARGET_DOWN: "🔌"}


MAX_NAMED = 5  # databases named in a server-wide alert


def server_name(members: Sequence[str]) -> str:
    """A target, or the server several targets (its databases) share: "the server of a, b and c"."""
    if len(members) == 1:
        return members[0]
    shown = ", ".join(members[:MAX_NAMED])
    return f"the server of {shown}" + (f" and {len(members) - MAX_NAMED} more" if len(members) > MAX_NAMED else "")


def summary(alert: Alert) -> str:
    """What the alert is about, in one line that stays the same while it lasts."""
    d, where = alert.details, server_name(alert.databases)
    match alert.kind:
        case AlertKind.ROLE_LIMIT:
            over = "over" if alert.shape is Shape.OVER_LIMIT else "at"
            return f"{strip(alert.subject)} is {over} its connection limit on {where}"
        case AlertKind.SERVER_FILL if alert.shape is Shape.FULL:
            return f"{where} is full: new connections are refused"
        case AlertKind.SERVER_FILL:
            how = "critically close" if alert.shape is Shape.CRITICALLY_CLOSE else "close"
            return f"{where} is {how} to max_connections"
        case AlertKind.IDLE_IN_TRANSACTION:
            return f"pid {alert.session_pid} ({strip(str(d.get('role') or '?'))}) is idle in transaction on {where}"
        case AlertKind.LONG_QUERY:
            return f"pid {alert.session_pid} ({strip(str(d.get('role') or '?'))}) has a long-running query on {where}"
        case AlertKind.TARGET_DOWN:
            return f"{alert.target} is not answering"
        case _:
            assert_never(alert.kind)


def headline(alert: Alert) -> str:
    d = alert.details
    line = summary(alert)
    match alert.kind:
        case AlertKind.ROLE_LIMIT:
            return f"{line}: {d.get('used')}/{d.get('limit')}"
        case AlertKind.SERVER_FILL if d.get("full"):
            return f"{alert.severity.upper()}: {line}"
        case AlertKind.SERVER_FILL:
            return f"{alert.severity.upper()}: {line} — {round(float(str(d.get('fill', 0))) * 100)}% of usable slots"
        case AlertKind.IDLE_IN_TRANSACTION:
            return f"{line} for {age_text(d.get('state_change'), d.get('observed_at'))}"
        case AlertKind.LONG_QUERY:
            return f"{line}: running for {age_text(d.get('query_start'), d.get('observed_at'))}"
        case AlertKind.TARGET_DOWN:
            return line
        case _:
            assert_never(alert.kind)


def resolution(alert: Alert) -> str:
    """How it cleared."""
    d = alert.resolution_details
    if d is None:  # resolved by a version that kept the words
        return alert.resolution or "the condition has cleared"
    if d.get("unmonitored"):
        return "the target is no longer monitored"
    match alert.kind:
        case AlertKind.ROLE_LIMIT:
            return f"{strip(alert.subject)} is below its connection limit again"
        case AlertKind.SERVER_FILL if d.get("fill") is not None:
            return (
                f"{alert.target} is back to {round(float(str(d['fill'])) * 100)}% "
                f"({d.get('client_backends')} of {d.get('usable_slots')} usable slots)"
            )
        case AlertKind.SERVER_FILL:  # cleared while the bot could not look (a full server that let it in)
            return "the condition has cleared"
        case AlertKind.IDLE_IN_TRANSACTION:
            return f"pid {alert.session_pid} is no longer idle in that transaction"
        case AlertKind.LONG_QUERY:
            return f"pid {alert.session_pid}'s long query has ended"
        case AlertKind.TARGET_DOWN:
            return f"{alert.target} answers again"
        case _:
            assert_never(alert.kind)


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
            doc.lines.extend(alert_history_lines(d.get("history")))
            sessions = list(d.get("sessions") or [])  # type: ignore[call-overload]
            if sessions:
                doc.table = _session_rows(sessions, d.get("observed_at"))
            flag = db_flag(alert.target)
            doc.commands_intro = "Look closer with:"
            doc.commands = [slash(f"stray {strip(alert.subject)}{flag}")]
            owners = [str(o) for o in d.get("owners") or []]  # type: ignore[attr-defined]
            if owners:
                doc.lines.append(
                    f"Owned by {', '.join(mention(o) for o in owners)}: {slash('free' + flag)} ends the role's idle "
                    f"sessions, {slash('mine' + flag)} shows them."
                )
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
    if alert.resolved_at is None:  # who is on it, and the snooze: first
        doc.lines[:0] = handling(alert, explained=True)
    if alert.resolved_at is not None:
        doc.title = f"✅ Resolved after {lasted(alert)} — {headline(alert)}"
        doc.tone = Tone.INFO
        doc.lines.insert(0, f"Resolved {moment(alert.resolved_at)}: {strip(resolution(alert))}.")
        doc.commands = []
        doc.commands_intro = ""
    return doc


def lasted(alert: Alert) -> str:
    end = alert.resolved_at or alert.last_seen_at
    return format_duration(end - alert.opened_at)


def resolved_text(alert: Alert) -> str:
    return f"✅ Resolved after {lasted(alert)}: {strip(resolution(alert))}."


def acked_text(alert: Alert) -> str | None:
    """Who is on it: "@ana is on it since 10:42" (None: nobody said so)."""
    if alert.acked_by is None:
        return None
    since = f" since {moment(alert.acked_at)}" if alert.acked_at is not None else ""
    return f"{mention(alert.acked_by)} is on it{since}"


def snoozed_text(alert: Alert) -> str | None:
    """Its problem's snooze in force: "snoozed until 14:42 by @bob" (None: not snoozed)."""
    if alert.snoozed_until is None:
        return None
    by = f" by {mention(alert.snoozed_by)}" if alert.snoozed_by else ""
    return f"snoozed until {moment(alert.snoozed_until)}{by}"


def handling(alert: Alert, *, explained: bool = False) -> list[str]:
    """Who is on an alert and its snooze, each marked, as far as there is anything to say."""
    lines = []
    if (acked := acked_text(alert)) is not None:
        lines.append(f"👀 {acked}")
    if (snoozed := snoozed_text(alert)) is not None:
        lines.append(f"🔕 {snoozed}" + (": not posted again nor escalated until then" if explained else ""))
    return lines


def kind_text(kind: AlertKind) -> str:
    """What kind of problem an alert is about, in a few words (the audit trail's)."""
    match kind:
        case AlertKind.ROLE_LIMIT:
            return "a role at its connection limit"
        case AlertKind.SERVER_FILL:
            return "a server close to max_connections"
        case AlertKind.IDLE_IN_TRANSACTION:
            return "a session idle in transaction"
        case AlertKind.LONG_QUERY:
            return "a long-running query"
        case AlertKind.TARGET_DOWN:
            return "a target not answering"
        case _:
            assert_never(kind)


def alert_handled_document(result: AlertHandled) -> Document:
    """The answer to Acknowledge, Snooze and Un-snooze (a click's is private: the message itself
    shows who is on it and the snooze)."""
    alert, ref = result.alert, f"alert #{result.alert.id}"
    doc = Document(title="", lines=[headline(alert)])
    match result.action:
        case AlertAction.ACKNOWLEDGE if not result.changed:
            doc.title = f"You were on {ref} already."
        case AlertAction.ACKNOWLEDGE if result.previous:
            doc.title = f"👀 You took {ref} over from {mention(result.previous)}: its message names you now."
        case AlertAction.ACKNOWLEDGE:
            doc.title = f"👀 You are on {ref}: its message names you now."
        case AlertAction.SNOOZE:
            until = f" until {moment(alert.snoozed_until)}" if alert.snoozed_until is not None else ""
            doc.title = f"🔕 {ref.capitalize()} is snoozed{until}."
            doc.lines.append(
                "If its problem clears and comes back meanwhile, it is not posted again; it is not escalated "
                "either. Its resolution is still posted."
            )
            doc.commands_intro = "To end the snooze early:"
            doc.commands = [slash(f"unsnooze {alert.id}")]
        case AlertAction.UNSNOOZE if not result.changed:
            doc.title = f"{ref.capitalize()} was not snoozed."
        case AlertAction.UNSNOOZE:
            doc.title = f"🔔 {ref.capitalize()} is not snoozed any more: its problem is posted and escalated as usual."
        case _:
            assert_never(result.action)
    if alert.resolved_at is not None:
        doc.notes.append(f"It was resolved {moment(alert.resolved_at)}.")
    return doc


def open_alerts_document(result: OpenAlerts) -> Document:
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
            f"#{a.id} · {a.severity} · {headline(a)} · since {moment(a.opened_at)} ({lasted(a)})"
            + "".join(f" · {line}" for line in handling(a))
            for a in result.alerts
        ],
    )


def age_text(since: Any, observed: Any) -> str:
    """``12m 05s`` between two ISO timestamps (as they come back in the snapshot's JSON)."""
    try:
        start = datetime.fromisoformat(since) if isinstance(since, str) else since
        end = datetime.fromisoformat(observed) if isinstance(observed, str) else observed
        return format_duration(end - start)
    except (TypeError, ValueError):
        return "—"
