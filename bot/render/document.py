"""What each result says, independent of where it is shown.

Both adapters (Block Kit for Slack, plain text for the console) lay out the same ``Document``, so
the wording and the numbers cannot drift apart between them. Text here is raw: escaping for
Slack happens in ``blocks``.
"""

from __future__ import annotations

import enum
import functools
import logging
import shlex
import uuid
from collections import Counter
from dataclasses import dataclass, field

from bot.config import DEFAULT_TARGET
from bot.core.durations import format_duration, spell_duration
from bot.core.markup import strip
from bot.core.parser import MAX_PIDS, USAGE
from bot.core.results import (
    Connection,
    HelpResult,
    InternalError,
    LimitsOverview,
    Problem,
    Refused,
    Result,
    RoleConnections,
    RoleInfo,
    RoleLimit,
    ServerStatus,
    StrayConnections,
)

log = logging.getLogger(__name__)

QUERY_PREVIEW = 80


class Tone(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Document:
    title: str
    lines: list[str] = field(default_factory=list)
    table: Table | None = None
    commands: list[str] = field(default_factory=list)  # shown as copyable code
    commands_intro: str = ""  # the sentence that leads into the commands
    notes: list[str] = field(default_factory=list)  # small print
    tone: Tone = Tone.INFO


def _on(target: str) -> str:
    return "" if target == DEFAULT_TARGET else f" on {target}"


def _arg(word: str) -> str:
    """A role name as the parser will read it back (quoted when it has spaces or quotes)."""
    return shlex.quote(word)


def _db_flag(target: str) -> str:
    return "" if target == DEFAULT_TARGET else f" --db {target}"


def one_line(text: str | None, limit: int = QUERY_PREVIEW) -> str:
    if not text:
        return ""
    text = " ".join(strip(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fill_bar(fill: float, cells: int = 10) -> str:
    filled = max(0, min(cells, round(fill * cells)))
    return "█" * filled + "░" * (cells - filled) + f" {round(fill * 100)}%"


def limit_phrase(used: int, role: RoleInfo) -> str:
    if role.superuser:
        return f"{used} connections — no limit (superusers are never limited)"
    if role.connection_limit < 0:
        return f"{used} connections — no limit"
    limit = role.connection_limit
    if used > limit:
        return f"{used}/{limit} — over the limit — new connections are refused"
    if used == limit:
        return f"{used}/{limit} — at limit — new connections are refused"
    return f"{used}/{limit} — {limit - used} left"


_RESTRICTED_NOTE = (
    "The bot's database role cannot see other users' session details; grant it pg_monitor (see the README)."
)


def _connection_table(rows: list[Connection], *, idle_first: bool = False) -> Table:
    headers = ["PID", "DATABASE", "APPLICATION", "CLIENT", "STATE", "CONNECTED", "IDLE"]
    if idle_first:
        headers = ["PID", "IDLE", "STATE", "DATABASE", "APPLICATION", "CLIENT", "CONNECTED"]
    body = []
    for c in rows:
        cells = {
            "PID": str(c.pid),
            "DATABASE": c.database or "—",
            "APPLICATION": one_line(c.application, 24) or "(none)",
            "CLIENT": c.client,
            "STATE": c.state or "hidden",
            "CONNECTED": format_duration(c.connected_for),
            "IDLE": format_duration(c.idle_for) if c.idle_for is not None else "active",
        }
        body.append([cells[h] for h in headers])
    return Table(headers, body)


def _breakdown(label: str, values: list[str]) -> str:
    counts = Counter(values).most_common(6)
    return f"{label}: " + " · ".join(f"{name} {count}" for name, count in counts)


@functools.singledispatch
def to_document(result: Result) -> Document:
    raise TypeError(f"no document for {type(result).__name__}")


@to_document.register
def _(result: HelpResult) -> Document:
    if result.topic:
        return Document(title=f"/pgconn {result.topic}", lines=[f"Usage: {USAGE[result.topic]}"])
    return Document(
        title="pgconn-bot: PostgreSQL connections from Slack",
        lines=[
            "See who is connected, how full a role or the server is, and what looks stray.",
            "kill and cancel never act directly: an approver has to approve each request.",
            "Durations: 90s, 30m, 2h. Every command takes --db TARGET to pick a server.",
        ],
        commands=[
            "/pgconn list bob",
            "/pgconn limit bob",
            "/pgconn limits",
            "/pgconn stray bob --idle 30m",
            "/pgconn status --db reporting",
            '/pgconn kill idle bob --older 30m --reason "locked out before the exam"',
            "/pgconn requests",
            "/pgconn audit 20",
            "/pgconn help <subcommand>",
        ],
        notes=["Subcommands: " + ", ".join(USAGE)],
    )


@to_document.register
def _(result: Problem) -> Document:
    return Document(
        title=result.message,
        lines=[f"Usage: {result.usage}"] if result.usage else [],
        tone=Tone.WARNING if isinstance(result, Refused) else Tone.PROBLEM,
    )


@to_document.register
def _(result: RoleConnections) -> Document:
    role, rows = result.role, result.connections
    if not rows:
        return Document(
            title=f"Role {role.name} has no connections{_on(result.target)}.",
            lines=[limit_phrase(0, role)] if role.limited else [],
            notes=[] if role.can_login else [f"{role.name} cannot log in (NOLOGIN)."],
        )
    doc = Document(
        title=f"{role.name}: {len(rows)} connection{'s' if len(rows) != 1 else ''}{_on(result.target)}",
        lines=[limit_phrase(len(rows), role)] if role.limited else [],
        table=_connection_table(rows),
    )
    if len(rows) > 10:
        doc.lines.append(_breakdown("states", [c.state or "hidden" for c in rows]))
        doc.lines.append(_breakdown("applications", [one_line(c.application, 24) or "(none)" for c in rows]))
    if role.limited and len(rows) >= role.connection_limit:
        doc.tone = Tone.WARNING
        doc.commands_intro = "At the limit. See what looks stray with:"
        doc.commands.append(f"/pgconn stray {_arg(role.name)}{_db_flag(result.target)}")
    if result.restricted:
        doc.notes.append(_RESTRICTED_NOTE)
    return doc


@to_document.register
def _(result: RoleLimit) -> Document:
    role = result.role
    doc = Document(title=f"{role.name}: {limit_phrase(result.used, role)}{_on(result.target)}")
    for db in result.database_limits:
        state = "at its limit" if db.used >= db.limit else f"{max(0, db.limit - db.used)} left"
        doc.lines.append(f"database {db.database} has its own limit: {db.used}/{db.limit} — {state}")
    if result.at_limit:
        doc.tone = Tone.WARNING
        doc.commands_intro = "Look for stray connections with:"
        doc.commands.append(f"/pgconn stray {_arg(role.name)}{_db_flag(result.target)}")
    if not role.can_login:
        doc.notes.append(f"{role.name} cannot log in (NOLOGIN).")
    return doc


@to_document.register
def _(result: LimitsOverview) -> Document:
    percent = round(result.threshold * 100)
    if not result.roles:
        return Document(title=f"No role is at or above {percent}% of its connection limit{_on(result.target)}.")
    at_limit = sum(1 for r in result.roles if r.used >= r.limit)
    return Document(
        title=f"Roles at or above {percent}% of their connection limit{_on(result.target)}: {len(result.roles)}",
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


@to_document.register
def _(result: StrayConnections) -> Document:
    role, rows = result.role, result.connections
    idle_text = f" idle ≥ {spell_duration(result.min_idle)}" if result.min_idle else " idle"
    if not rows:
        return Document(
            title=f"{role.name}: no connections{idle_text}{_on(result.target)}.",
            lines=[f"{result.total_connections} connection(s) in total."],
        )
    doc = Document(
        title=f"{role.name}: {len(rows)} connection{'s' if len(rows) != 1 else ''}{idle_text}"
        f"{_on(result.target)}, longest idle first",
        lines=[limit_phrase(result.total_connections, role)] if role.limited else [],
        table=_connection_table(rows, idle_first=True),
    )
    doc.commands_intro = "To ask for their termination (an approver must confirm):"
    flag = _db_flag(result.target)
    doc.commands.append("/pgconn kill " + " ".join(str(c.pid) for c in rows[:MAX_PIDS]) + flag)
    older = f" --older {spell_duration(result.min_idle)}" if result.min_idle else ""
    doc.commands.append(f"/pgconn kill idle {_arg(role.name)}{older}{flag}")
    if result.restricted:
        doc.notes.append(_RESTRICTED_NOTE)
    return doc


@to_document.register
def _(result: ServerStatus) -> Document:
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
        doc.notes.append(_RESTRICTED_NOTE)
    return doc


def render_failure(result: Result) -> InternalError:
    """What a user reads when their answer could not be laid out (the log has the traceback)."""
    reference = uuid.uuid4().hex[:8]
    log.exception("could not render %s (ref %s)", type(result).__name__, reference)
    return InternalError(
        f"Something went wrong while preparing this answer (ref {reference}); the details are in the bot's log."
    )


def table_lines(table: Table, max_cell: int = 28) -> list[str]:
    """Fixed-width rows (header first); both adapters show tables monospaced. Cells never carry markers."""
    cells = [[strip(cell) for cell in row] for row in table.rows]
    rows = [[cell if len(cell) <= max_cell else cell[: max_cell - 1] + "…" for cell in row] for row in cells]
    widths = [len(h) for h in table.headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [table.headers, *rows]
    ]


# Registers the approval flow's documents (kept in their own module for size).
from bot.render import alerts as _alerts  # noqa: E402, F401
from bot.render import requests as _requests  # noqa: E402, F401
