"""What the read-only commands say: help, list, limit, limits, stray, status."""

from __future__ import annotations

from bot.model.durations import format_duration, spell_duration
from bot.model.requests import MAX_PIDS_PER_REQUEST
from bot.model.results import (
    HelpResult,
    LimitsOverview,
    RoleConnections,
    RoleLimit,
    ServerStatus,
    StrayConnections,
)
from bot.render.document import (
    RESTRICTED_NOTE,
    Document,
    Table,
    Tone,
    arg,
    breakdown,
    connection_table,
    db_flag,
    fill_bar,
    limit_phrase,
    on,
    one_line,
)


def help_result_document(result: HelpResult) -> Document:
    if result.topic is not None:
        return Document(
            title=f"/pgconn {result.topic.name}",
            lines=[f"Usage: {result.topic.usage}", result.topic.summary[0].upper() + result.topic.summary[1:] + "."],
        )
    return Document(
        title="pgconn-bot: PostgreSQL connections from Slack",
        lines=[
            "See who is connected, how full a role or the server is, and what looks stray.",
            "kill and cancel never act directly: an approver has to approve each request.",
            "Durations: 90s, 30m, 2h. Every command takes --db TARGET to pick a server.",
        ],
        commands=[entry.example for entry in result.entries if entry.example],
        notes=["Subcommands: " + ", ".join(entry.name for entry in result.entries)],
    )


def role_connections_document(result: RoleConnections) -> Document:
    role, rows = result.role, result.connections
    if not rows:
        return Document(
            title=f"Role {role.name} has no connections{on(result.target)}.",
            lines=[limit_phrase(0, role)] if role.limited else [],
            notes=[] if role.can_login else [f"{role.name} cannot log in (NOLOGIN)."],
        )
    doc = Document(
        title=f"{role.name}: {len(rows)} connection{'s' if len(rows) != 1 else ''}{on(result.target)}",
        lines=[limit_phrase(len(rows), role)] if role.limited else [],
        table=connection_table(rows),
    )
    if len(rows) > 10:
        doc.lines.append(breakdown("states", [c.state or "hidden" for c in rows]))
        doc.lines.append(breakdown("applications", [one_line(c.application, 24) or "(none)" for c in rows]))
    if role.limited and len(rows) >= role.connection_limit:
        doc.tone = Tone.WARNING
        doc.commands_intro = "At the limit. See what looks stray with:"
        doc.commands.append(f"/pgconn stray {arg(role.name)}{db_flag(result.target)}")
    if result.restricted:
        doc.notes.append(RESTRICTED_NOTE)
    return doc


def role_limit_document(result: RoleLimit) -> Document:
    role = result.role
    doc = Document(title=f"{role.name}: {limit_phrase(result.used, role)}{on(result.target)}")
    for db in result.database_limits:
        state = "at its limit" if db.used >= db.limit else f"{max(0, db.limit - db.used)} left"
        doc.lines.append(f"database {db.database} has its own limit: {db.used}/{db.limit} — {state}")
    if result.at_limit:
        doc.tone = Tone.WARNING
        doc.commands_intro = "Look for stray connections with:"
        doc.commands.append(f"/pgconn stray {arg(role.name)}{db_flag(result.target)}")
    if not role.can_login:
        doc.notes.append(f"{role.name} cannot log in (NOLOGIN).")
    return doc


def limits_overview_document(result: LimitsOverview) -> Document:
    percent = round(result.threshold * 100)
    if not result.roles:
        return Document(title=f"No role is at or above {percent}% of its connection limit{on(result.target)}.")
    at_limit = sum(1 for r in result.roles if r.used >= r.limit)
    return Document(
        title=f"Roles at or above {percent}% of their connection limit{on(result.target)}: {len(result.roles)}",
        lines=[f"{at_limit} at or over the limit"] if at_limit else [],
        table=Table(
            ["ROLE", "USED/LIMIT", "FILL"],
            [
                [r.role, f"{r.used}/{r.limit}", "over" if r.limit == 0 else f"{round(r.ratio * 100)}%"]
                for r in result.roles
            ],
        ),
        tone=Tone.WARNING if at_limit else Tone.INFO,
    )


def stray_connections_document(result: StrayConnections) -> Document:
    role, rows = result.role, result.connections
    idle_text = f" idle ≥ {spell_duration(result.min_idle)}" if result.min_idle else " idle"
    if not rows:
        return Document(
            title=f"{role.name}: no connections{idle_text}{on(result.target)}.",
            lines=[f"{result.total_connections} connection(s) in total."],
        )
    doc = Document(
        title=f"{role.name}: {len(rows)} connection{'s' if len(rows) != 1 else ''}{idle_text}"
        f"{on(result.target)}, longest idle first",
        lines=[limit_phrase(result.total_connections, role)] if role.limited else [],
        table=connection_table(rows, idle_first=True),
    )
    doc.commands_intro = "To ask for their termination (an approver must confirm):"
    flag = db_flag(result.target)
    doc.commands.append("/pgconn kill " + " ".join(str(c.pid) for c in rows[:MAX_PIDS_PER_REQUEST]) + flag)
    older = f" --older {spell_duration(result.min_idle)}" if result.min_idle else ""
    doc.commands.append(f"/pgconn kill idle {arg(role.name)}{older}{flag}")
    if result.restricted:
        doc.notes.append(RESTRICTED_NOTE)
    return doc


def server_status_document(result: ServerStatus) -> Document:
    reserved = f"{result.superuser_reserved} reserved for superusers"
    if result.reserved:
        reserved += f", {result.reserved} by reserved_connections"
    doc = Document(
        title=f"{result.health} — {result.target}: {result.client_backends} of {result.usable_slots} "
        f"usable connection slots in use",
        lines=[
            f"{fill_bar(result.fill)}  (warning at {round(result.warn_at * 100)}%, "
            f"critical at {round(result.critical_at * 100)}%)",
            f"max_connections {result.max_connections}, {reserved} · PostgreSQL {result.server_version}",
            "states: " + (" · ".join(f"{s} {n}" for s, n in result.by_state.items()) or "none"),
        ],
        tone={"HEALTHY": Tone.INFO, "WARNING": Tone.WARNING}.get(result.health, Tone.PROBLEM),
    )
    active = result.longest_active
    if active:
        doc.lines.append(
            f"longest active query: pid {active.pid} ({active.role}) running {format_duration(active.query_age)}"
            f": {one_line(active.query)}"
        )
    idle_tx = result.longest_idle_in_transaction
    if idle_tx:
        doc.lines.append(
            f"longest idle in transaction: pid {idle_tx.pid} ({idle_tx.role}), transaction open "
            f"{format_duration(idle_tx.transaction_age)}, idle {format_duration(idle_tx.idle_for)}"
        )
    for label, pairs in (
        ("top roles", result.top_roles),
        ("top clients", result.top_clients),
        ("top applications", result.top_applications),
    ):
        if pairs:
            doc.lines.append(f"{label}: " + " · ".join(f"{name} {count}" for name, count in pairs))
    if result.restricted:
        doc.notes.append(RESTRICTED_NOTE)
    return doc
