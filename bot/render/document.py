"""What each result says, independent of where it is shown.

Both adapters (Block Kit for Slack, plain text for the console) lay out the same ``Document``, so
the wording and the numbers cannot drift apart between them. Text here is raw: escaping for
Slack happens in ``blocks``.
"""

from __future__ import annotations

import contextlib
import enum
import shlex
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from bot.model.activity import Connection, DatabaseLimit, RoleInfo
from bot.model.durations import format_duration
from bot.model.servers import DEFAULT_TARGET
from bot.render.markup import strip

QUERY_PREVIEW = 80


class Surface(enum.StrEnum):
    """Where an answer is read: in Slack (commands are typed as ``/pgconn …``, requests are
    decided with buttons) or in the console (typed bare, decided with ``approve N``)."""

    SLACK = "slack"
    CONSOLE = "console"


_surface: ContextVar[Surface] = ContextVar("surface", default=Surface.SLACK)


@contextlib.contextmanager
def shown_on(surface: Surface) -> Iterator[None]:
    """Render for ``surface`` inside the block (the adapters set it; Slack is the default)."""
    token = _surface.set(surface)
    try:
        yield
    finally:
        _surface.reset(token)


def on_console() -> bool:
    return _surface.get() is Surface.CONSOLE


SLASH = "/pgconn "


def slash(command: str) -> str:
    """A command as the reader types it: ``/pgconn list bob`` in Slack, ``list bob`` in the console."""
    return command if on_console() else SLASH + command


def as_typed(text: str) -> str:
    """The grammar's own text (usage lines, its error messages), which spells commands for Slack,
    spelled for where it is read. Never for text from anywhere else."""
    return text.replace(SLASH, "") if on_console() else text


class Tone(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Button:
    """A button under an answer (Slack only: the console says what to type instead)."""

    text: str
    action_id: str
    value: str


# The "Free my idle connections" button of `mine` and App Home: its value is the target's name.
FREE_ACTION = "pgconn_free"


@dataclass
class Document:
    title: str
    lines: list[str] = field(default_factory=list)
    table: Table | None = None
    commands: list[str] = field(default_factory=list)  # shown as copyable code
    commands_intro: str = ""  # the sentence that leads into the commands
    notes: list[str] = field(default_factory=list)  # small print
    tone: Tone = Tone.INFO
    buttons: list[Button] = field(default_factory=list)


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


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 connection``, ``5 connections`` (``words``: an irregular plural)."""
    return f"{count} {word if count == 1 else words or word + 's'}"


OWN_MARK = "(this bot)"
LOGINS_DISABLED_ROLE = "logins disabled for this role (CONNECTION LIMIT 0)"


def limit_phrase(used: int, role: RoleInfo) -> str:
    if role.superuser:
        return f"{plural(used, 'connection')} — no limit (superusers are never limited)"
    if role.connection_limit < 0:
        return f"{plural(used, 'connection')} — no limit"
    limit = role.connection_limit
    if role.logins_disabled:
        return f"{used}/{limit} — {LOGINS_DISABLED_ROLE}"
    if used > limit:
        return f"{used}/{limit} — over the limit — new connections are refused"
    if used == limit:
        return f"{used}/{limit} — at limit — new connections are refused"
    return f"{used}/{limit} — {limit - used} left"


def database_limit_phrase(db: DatabaseLimit) -> str:
    """``database course: 3/3 — at its limit``: a database's own limit (pg_database)."""
    if not db.allows_connections:
        still = f"; {plural(db.used, 'session')} still in it" if db.used else ""
        return f"database {db.database}: logins disabled for this database (ALLOW_CONNECTIONS false){still}"
    if db.limit == 0:
        return f"database {db.database}: {db.used}/0 — logins disabled for this database (CONNECTION LIMIT 0)"
    state = "at its limit" if db.at_limit else f"{max(0, db.limit - db.used)} left"
    return f"database {db.database} has its own limit: {db.used}/{db.limit} — {state}"


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
            "PID": f"{c.pid} {OWN_MARK}" if c.own else str(c.pid),
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
