"""Self-service: who owns a database role (configured, or proven by logging in as it), the one-time
codes that prove it, and what an owner may do (see ``core.ownership``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.model.access import AccessRole
from bot.model.activity import Connection, RoleInfo
from bot.model.problems import Problem
from bot.model.requests import SignalRequest

# A proof of login: a session of the role whose application_name is this prefix and the code.
LINK_PREFIX = "pgconn-link-"
LINK_CODE_TTL = timedelta(minutes=10)
# Unambiguous characters (no 0/O, 1/I/L): 8 of them, about 2^40, shown as XXXX-XXXX.
LINK_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


class SelfService(enum.StrEnum):
    """PGCONN_SELF_SERVICE: what ``free`` does for an owner."""

    OFF = "off"  # refused
    APPROVE = "approve"  # an ordinary approval request, the owner as requester
    AUTO = "auto"  # the owner's idle sessions ended at once, after the usual re-check


class LinkSource(enum.StrEnum):
    """How someone came to own a role."""

    CONFIG = "config"  # PGCONN_ROLE_OWNERS
    LOGIN = "login"  # proved it: logged in as the role with their one-time code
    GRANTED = "granted"  # an approver linked them


@dataclass(frozen=True)
class OwnedRole:
    target: str
    role: str
    source: LinkSource
    since: datetime | None = None  # links only
    by: str | None = None  # who linked it (the owner themselves for a login proof)
    # Links only: the role as it was when linked. A role dropped and made again under the same
    # name is another role (another student's): the link does not carry over.
    role_oid: int | None = None


@dataclass(frozen=True)
class LinkCode:
    """A pending proof: valid until ``expires_at``, for ``user_id`` and ``role`` on ``target`` only."""

    code: str
    user_id: str
    target: str
    role: str
    expires_at: datetime
    role_oid: int = 0

    @property
    def application_name(self) -> str:
        return LINK_PREFIX + self.code


@dataclass(frozen=True)
class LinkSession:
    """A client session carrying a link code: the proof, if its login role is the code's."""

    application: str
    role_oid: int
    pid: int
    client: str | None

    def described(self) -> str:
        return f"pid {self.pid}" + (f" from {self.client}" if self.client else "")


@dataclass(frozen=True)
class ConnectHint:
    """Where the role logs in (the target's host, port and database; never its user or password)."""

    host: str | None
    port: str | None
    dbname: str | None


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhoAmI:
    user_id: str
    role: AccessRole
    owned: tuple[OwnedRole, ...]
    pending: tuple[LinkCode, ...]
    self_service: SelfService
    console: bool = False  # asked in the console (identities there are not Slack's)


@dataclass(frozen=True)
class LinkCodeIssued:
    code: LinkCode
    hint: ConnectHint
    watching: bool  # the bot confirms by itself (serve/socket); in the console `whoami` checks


@dataclass(frozen=True)
class LinkChanged:
    """A link made or removed without a login proof (an approver's, or an owner unlinking)."""

    target: str
    role: str
    user_id: str
    linked: bool
    by: str


@dataclass(frozen=True)
class LinkConfirmed:
    """A login proof seen: ``code``'s user now owns its role (told to them, or shown by whoami)."""

    code: LinkCode


@dataclass(frozen=True)
class OwnedRoleState:
    role: RoleInfo
    connections: list[Connection]  # every session of the role (the bot's own marked)
    idle: list[Connection]  # what `free` would end (idle, idle in transaction; never the bot's own)

    @property
    def active(self) -> int:
        return sum(1 for c in self.connections if c.state == "active" and not c.own)


@dataclass(frozen=True)
class MyRoles:
    target: str
    roles: list[OwnedRoleState]
    self_service: SelfService
    missing: tuple[str, ...] = ()  # owned, but no such role on this target (or not the one linked)
    restricted: bool = False
    refused: tuple[str, ...] = ()  # owned, but superuser or protected: never self-service


@dataclass(frozen=True)
class Freed:
    """``free`` with PGCONN_SELF_SERVICE=auto: what became of each idle session."""

    request: SignalRequest
    active_left: int  # active sessions of the owner's roles, never ended this way


@dataclass(frozen=True)
class NothingToFree:
    target: str
    roles: tuple[str, ...]
    older_than: timedelta | None
    active_left: int


# --- problems -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotAnOwner(Problem):
    """``mine``/``free`` (or a Free button) by someone who owns no role on the target."""

    subcommand: str
    target: str


@dataclass(frozen=True)
class SelfServiceOff(Problem):
    """PGCONN_SELF_SERVICE=off."""


class LinkIssue(enum.StrEnum):
    NOT_LINKED = "not_linked"  # unlink: there is no such link
    CONFIGURED = "configured"  # unlink: ownership from PGCONN_ROLE_OWNERS, not a link
    NEEDS_APPROVER = "needs_approver"  # someone else's link: approvers only
    PROTECTED = "protected"  # a superuser or protected role: no self-service for it
    TOO_MANY_CODES = "too_many_codes"  # pending codes per person are capped
    NOT_A_USER = "not_a_user"  # the <@user> given is not a Slack user ID


@dataclass(frozen=True)
class LinkRefused(Problem):
    role: str
    issue: LinkIssue
    user_id: str | None = None
    target: str = ""
    details: tuple[str, ...] = field(default_factory=tuple)


OwnershipResult = WhoAmI | LinkCodeIssued | LinkChanged | LinkConfirmed | MyRoles | Freed | NothingToFree
OwnershipProblem = NotAnOwner | SelfServiceOff | LinkRefused
