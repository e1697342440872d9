"""Draining a database for maintenance: refuse new connections, end its sessions, and give it back
by itself after a while (see ``core.approvals`` for the request, ``core.drains`` for the rest)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from bot.model.problems import Problem


@dataclass(frozen=True)
class Drain:
    """A database drained by a request, until ``until`` (or until someone undrains it)."""

    id: int
    target: str
    database: str
    request_id: int | None
    drained_at: datetime
    until: datetime
    now: datetime  # the state database's clock when this was read


@dataclass(frozen=True)
class DrainCheck:
    """What the target's server says about draining ``database`` (read before a request)."""

    exists: bool
    template: bool = False
    allows_connections: bool = True
    own: bool = False  # the database the bot's own connection to this target uses
    installed: bool = False  # setup-sql --drain's function is there and the bot may execute it
    drainable: tuple[str, ...] = ()  # the databases that function may drain
    superuser: bool = False  # the bot's role is a superuser: it may ALTER DATABASE itself
    suggestions: tuple[str, ...] = ()


class DrainIssue(enum.StrEnum):
    NO_SUCH_DATABASE = "no_such_database"
    TEMPLATE = "template"
    STATE_DATABASE = "state_database"  # the bot's own state would go with it
    OWN_DATABASE = "own_database"  # the target's own connections use it
    ALREADY_DRAINED = "already_drained"
    NOT_SET_UP = "not_set_up"  # no pgconn_drain function the bot may execute
    NOT_LISTED = "not_listed"  # the function does not list this database
    NOT_DRAINED = "not_drained"  # undrain: nothing to undrain


@dataclass(frozen=True)
class DrainRefused(Problem):
    database: str
    issue: DrainIssue
    target: str
    others: tuple[str, ...] = ()  # drainable databases, or other targets on the same server, or suggestions


@dataclass(frozen=True)
class Undrained:
    target: str
    database: str
    by: str | None  # None: its time was up
    drain: Drain


@dataclass(frozen=True)
class UndrainFailed(Problem):
    target: str
    database: str
    reason: str


DrainResult = Undrained
DrainProblem = DrainRefused | UndrainFailed
