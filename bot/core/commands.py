"""Typed commands: what the parser produces and the service executes.

Each command knows the minimum access role it needs, so authorisation is one lookup and
cannot drift from the grammar.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.config import DEFAULT_TARGET


class AccessRole(enum.IntEnum):
    """Bot roles, ordered: a higher role includes the lower ones."""

    NONE = 0
    VIEWER = 1
    REQUESTER = 2
    APPROVER = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Command:
    target: str = DEFAULT_TARGET

    name: str = ""
    required_role: AccessRole = AccessRole.VIEWER

    @property
    def uses_target(self) -> bool:
        return True


@dataclass(frozen=True)
class Help(Command):
    topic: str | None = None
    name: str = "help"
    required_role: AccessRole = AccessRole.NONE

    @property
    def uses_target(self) -> bool:
        return False


@dataclass(frozen=True)
class ListConnections(Command):
    role: str = ""
    name: str = "list"


@dataclass(frozen=True)
class ShowLimit(Command):
    role: str = ""
    name: str = "limit"


@dataclass(frozen=True)
class ShowLimits(Command):
    name: str = "limits"


@dataclass(frozen=True)
class FindStray(Command):
    role: str = ""
    min_idle: timedelta | None = None
    name: str = "stray"


@dataclass(frozen=True)
class ShowStatus(Command):
    name: str = "status"


class SignalAction(enum.StrEnum):
    TERMINATE = "terminate"
    CANCEL = "cancel"


class KillScope(enum.StrEnum):
    PIDS = "pids"
    USER = "user"
    IDLE = "idle"


@dataclass(frozen=True)
class RequestSignal(Command):
    """``kill …`` / ``cancel …``: becomes an approval request, never a direct signal."""

    action: SignalAction = SignalAction.TERMINATE
    scope: KillScope = KillScope.PIDS
    pids: tuple[int, ...] = ()
    role: str | None = None
    older_than: timedelta | None = None
    reason: str | None = None
    # From an alert's button: the pid must still be the session the alert was about (its
    # backend_start), still in the same transaction (idle in transaction: xact_start) or the same
    # query (long query: query_start).
    expected_starts: tuple[tuple[int, datetime], ...] = ()
    expected_marks: tuple[tuple[int, datetime], ...] = ()
    name: str = "kill"
    required_role: AccessRole = AccessRole.REQUESTER


@dataclass(frozen=True)
class ListRequests(Command):
    name: str = "requests"

    @property
    def uses_target(self) -> bool:
        return False


@dataclass(frozen=True)
class ShowAudit(Command):
    count: int = 10
    name: str = "audit"

    @property
    def uses_target(self) -> bool:
        return False


@dataclass(frozen=True)
class ListAlerts(Command):
    name: str = "alerts"

    @property
    def uses_target(self) -> bool:
        return False


@dataclass(frozen=True)
class Decide(Command):
    """``approve N`` / ``deny N``: the console's way to click a button."""

    request_id: int = 0
    approve: bool = True
    name: str = "approve"
    required_role: AccessRole = AccessRole.APPROVER

    @property
    def uses_target(self) -> bool:
        return False


@dataclass(frozen=True)
class ParseError:
    """Input that is not a command: ``message`` says what was wrong, ``usage`` how to say it."""

    message: str
    usage: str
    subcommand: str | None = None
