"""What the read-only commands say: help, list, limit, limits, stray, status."""

from __future__ import annotations

from bot.model.activity import RoleFill
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
    OWN_MARK,
    RESTRICTED_NOTE,
    Document,
    Table,
    Tone,
    arg,
    as_typed,
    breakdown,
    connection_table,
    database_limit_phrase,
    db_flag,
    fill_bar,
    limit_phrase,
    on,
    one_line,
    plural,
    slash,
)
from bot.render.drains import drain_lines
from bot.render.history import status_history_lines


def help_result_document(result: HelpResult) -> Document:
    names = ", ".join(entry.name for entry in result.entries)
    if result.unknown is not None:
        return Document(
            title=f"No command named {result.unknown!r}.",
            lines=[f"The commands: {names}.", f"{slash('help <subcommand>')} says what one does."],
            tone=Tone.WARNING,
        )
    if result.topic is not None:
        return Document(
            title=slash(result.topic.name),
            lines=[
                f"Usage: {as_typed(result.topic.usage)}",
                result.topic.summary[0].upper() + result.topic.summary[1:] + ".",
            ],
        )
    return Document(
        title="pgconn-bot: PostgreSQL connections from Slack",
        lines=[
            "See who is connected, how full a role or the server is, and what looks stray.",
            "kill and cancel never act directly: an approver has to approve each request.",
            "Durations: 90s, 30m (or 30min), 2h, 1d, 1h30m. Every command takes --db TARGET to pick a server.",
        ],
        commands=[as_typed(entry.example) for entry in result.entries if entry.example],
        notes=[f"Subcommands: {names}"],
    )


def role_connections_document(result: RoleConnections) -> Document:
    role, rows = result.role, result.connections
    if not rows:
        return Document(
            title=f"Role {role.name} has no connections{on(result.target)}.",
            lines=[limit_phrase(0, role)] if role.limited else [],
            notes=[] if role.can_login else [f"{role.name} cannot log in (NOLOGIN)."],
            tone=Tone.WARNING if role.logins_disabled else Tone.INFO,
        )
    doc = Document(
        title=f"{role.name}: {plural(len(rows), 'connection')}{on(result.target)}",
        lines=[limit_phrase(len(rows), role)] if role.limited else [],
        table=connection_table(rows),
    )
    if own := sum(1 for c in rows if c.own):
        doc.lines.append(
            f"{plural(own, 'connection')} marked {OWN_MARK}: pgconn-bot's own, counted like any other, never signalled."
        )
    if len(rows) > 10:
        doc.lines.append(breakdown("states", [c.state or "hidden" for c in rows]))
        doc.lines.append(breakdown("applications", [one_line(c.application, 24) or "(none)" for c in rows]))
    if role.logins_disabled:
        doc.tone = Tone.WARNING
    elif role.limited and len(rows) >= role.connection_limit:
        doc.tone = Tone.WARNING
        doc.commands_intro = "At the limit. See what looks stray with:"
        doc.commands.append(slash(f"stray {arg(role.name)}{db_flag(result.target)}"))
    if result.restricted:
        doc.notes.append(RESTRICTED_NOTE)
    return doc


def role_limit_document(result: RoleLimit) -> Document:
    role = result.role
    doc = Document(title=f"{role.name}: {limit_phrase(result.used, role)}{on(result.target)}")
    doc.lines.extend(database_limit_phrase(db) for db in result.database_limits)
    if role.logins_disabled:  # a lockout: no stray session frees a slot
        doc.tone = Tone.WARNING
    elif result.at_limit:
        doc.tone = Tone.WARNING
        doc.commands_intro = "Look for stray connections with:"
        doc.commands.append(slash(f"stray {arg(role.name)}{db_flag(result.target)}"))
    if not role.can_login:
        doc.notes.append(f"{role.name} cannot log in (NOLOGIN).")
    if result.asked_by_owner:
        doc.notes.append(
            f"You own {role.name}: {slash('free' + db_flag(result.target))} ends its idle sessions, "
            f"{slash('mine' + db_flag(result.target))} shows them."
        )
    return doc


def limits_overview_document(result: LimitsOverview) -> Document:
    percent = round(result.threshold * 100)
    roles, databases, where = result.roles, result.databases, on(result.target)
    if not roles and not databases:
        return Document(title=f"No role or database is at or above {percent}% of its connection limit{where}.")
    disabled = sum(1 for r in roles if r.logins_disabled)
    at_limit = sum(1 for r in roles if not r.logins_disabled and r.used >= r.limit)
    doc = Document(title=f"Roles at or above {percent}% of their connection limit{where}: {len(roles)}")
    if at_limit:
        doc.lines.append(f"{at_limit} at or over the limit")
    if disabled:
        doc.lines.append(f"{disabled} with logins disabled (CONNECTION LIMIT 0)")
    if roles:
        doc.table = Table(
            ["ROLE", "USED/LIMIT", "FILL"], [[r.role, f"{r.used}/{r.limit}", _role_fill(r)] for r in roles]
        )
    if databases:
        heading = f"Databases at or above {percent}% of their own connection limit, or closed to logins"
        if roles:
            doc.lines.append(f"{heading}: {len(databases)}")
        else:
            doc.title = f"{heading}{where}: {len(databases)}"
            doc.lines.append(f"No role is at or above {percent}% of its connection limit.")
        doc.lines.extend(database_limit_phrase(db) for db in databases)
    if at_limit or disabled or databases:
        doc.tone = Tone.WARNING
    return doc


def _role_fill(fill: RoleFill) -> str:
    return "logins disabled" if fill.logins_disabled else f"{round(fill.ratio * 100)}%"


def stray_connections_document(result: StrayConnections) -> Document:
    role, rows = result.role, result.connections
    idle_text = f" idle ≥ {spell_duration(result.min_idle)}" if result.min_idle else " idle"
    if not rows:
        return Document(
            title=f"{role.name}: no connections{idle_text}{on(result.target)}.",
            lines=[f"{plural(result.total_connections, 'connection')} in total."],
        )
    doc = Document(
        title=f"{role.name}: {plural(len(rows), 'connection')}{idle_text}{on(result.target)}, longest idle first",
        lines=[limit_phrase(result.total_connections, role)] if role.limited else [],
        table=connection_table(rows, idle_first=True),
    )
    doc.commands_intro = "To ask for their termination (an approver must confirm):"
    flag = db_flag(result.target)
    doc.commands.append(slash("kill " + " ".join(str(c.pid) for c in rows[:MAX_PIDS_PER_REQUEST]) + flag))
    older = f" --older {spell_duration(result.min_idle)}" if result.min_idle else ""
    doc.commands.append(slash(f"kill idle {arg(role.name)}{older}{flag}"))
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
            *status_history_lines(result.history),
            *drain_lines(result.drains),
        ],
        tone={"HEALTHY": Tone.INFO, "WARNING": Tone.WARNING}.get(result.health, Tone.PROBLEM),
    )
    active = result.longest_active
    if active:
        doc.lines.append(
            f"longest active query: pid {active.pid} ({active.role or '?'}) running {format_duration(active.query_age)}"
            f": {one_line(active.query)}"
        )
    idle_tx = result.longest_idle_in_transaction
    if idle_tx:
        doc.lines.append(
            f"longest idle in transaction: pid {idle_tx.pid} ({idle_tx.role or '?'}), transaction open "
            f"{format_duration(idle_tx.transaction_age)}, idle {format_duration(idle_tx.idle_for)}"
        )
    if own := result.own_connections:
        doc.lines.append(
            f"{plural(own, 'connection')} of these {'is' if own == 1 else 'are'} pgconn-bot's own: "
            "counted like any other, never signalled"
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
