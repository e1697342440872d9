"""What each result says, independent of where it is shown.

Both adapters (Block Kit for Slack, plain text for the console) lay out the same ``Document``, so
the wording and the numbers cannot drift apart between them. Text here is raw: escaping for
Slack happens in ``blocks``.
"""

from __future__ import annotations

import enum
import shlex
from collections import Counter
from dataclasses import dataclass, field

from bot.model.activity import Connection, RoleInfo
from bot.model.durations import format_duration
from bot.model.servers import DEFAULT_TARGET
from bot.render.markup import strip

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


def on(target: str) -> str:
    return "" if target == DEFAULT_TARGET else f" on {target}"


def arg(word: str) -> str:
    """A role name as the parser will read it back (quoted when it has spaces or quotes)."""
    return shlex.quote(word)


def db_flag(target: str) -> str:
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


RESTRICTED_NOTE = (
    "The bot's database role cannot see other users' session details; grant it pg_monitor (see the README)."
)


def connection_table(rows: list[Connection], *, idle_first: bool = False) -> Table:
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


def breakdown(label: str, values: list[str]) -> str:
    counts = Counter(values).most_common(6)
    return f"{label}: " + " · ".join(f"{name} {count}" for name, count in counts)


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
