"""Who may do what: Slack identities → bot roles → allowed commands.

User groups are resolved through a ``GroupDirectory`` (Slack's ``usergroups.users.list`` in
production) and cached briefly, so a membership change takes effect within a minute without
a Web API call on every command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from bot.core.commands import AccessRole, Command
from bot.errors import first_line

log = logging.getLogger(__name__)


GROUP_CACHE_SECONDS = 60.0
FAILED_LOOKUP_SECONDS = 10.0


@dataclass(frozen=True)
class Identity:
    """Who is asking. ``user_id`` is a Slack user ID, or a local name in the console."""

    user_id: str
    team_id: str | None = None
    display: str | None = None
    origin: str | None = None  # not Slack: where the action came from (e.g. "console, local user alice")


class GroupDirectory(Protocol):
    async def members(self, group_id: str) -> frozenset[str]:
        """Slack user IDs in the user group; raises on lookup failure."""
        ...


class NoGroupDirectory:
    """Used where no Slack token is configured (e.g. the console): groups have no members."""

    async def members(self, group_id: str) -> frozenset[str]:
        raise LookupError("no Slack token configured, so user groups cannot be resolved")


class CachedGroups:
    def __init__(
        self,
        directory: GroupDirectory,
        ttl: float = GROUP_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._failed: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def members(self, group_id: str) -> frozenset[str]:
        cached = self._cache.get(group_id)
        if cached and self._clock() - cached[0] < self._ttl:
            return cached[1]
        async with self._lock:
            cached = self._cache.get(group_id)
            if cached and self._clock() - cached[0] < self._ttl:
                return cached[1]
            stale = cached[1] if cached else frozenset()
            if self._clock() - self._failed.get(group_id, -FAILED_LOOKUP_SECONDS) < FAILED_LOOKUP_SECONDS:
                return stale  # do not hammer Slack while it keeps failing
            try:
                members = await self._directory.members(group_id)
            except Exception as exc:
                # A failed lookup grants nothing new; the last good answer (if any) stands, so a
                # Slack hiccup does not lock approvers out.
                log.warning("cannot resolve user group %s: %s", group_id, first_line(exc))
                self._failed[group_id] = self._clock()
                return stale
            self._failed.pop(group_id, None)
            self._cache[group_id] = (self._clock(), members)
            return members


class Policy:
    def __init__(
        self,
        *,
        viewers: Iterable[str],
        requesters: Iterable[str],
        approvers: Iterable[str],
        default_role: AccessRole,
        groups: GroupDirectory,
    ) -> None:
        self._grants = (
            (AccessRole.APPROVER, tuple(approvers)),
            (AccessRole.REQUESTER, tuple(requesters)),
            (AccessRole.VIEWER, tuple(viewers)),
        )
        self._default = default_role
        self._groups = groups if isinstance(groups, CachedGroups) else CachedGroups(groups)

    async def role_of(self, identity: Identity) -> AccessRole:
        for role, principals in self._grants:  # highest first
            if identity.user_id in principals:
                return role
            for principal in principals:
                if principal.startswith("S") and identity.user_id in await self._groups.members(principal):
                    return role
        return self._default

    async def permits(self, identity: Identity, command: Command) -> tuple[bool, AccessRole]:
        role = await self.role_of(identity)
        return role >= command.required_role, role


def refusal_message(command: Command, role: AccessRole) -> str:
    needed = command.required_role.label
    have = "no access" if role is AccessRole.NONE else f"the {role.label} role"
    return (
        f"Sorry, /pgconn {command.name} needs the {needed} role and you have {have}. "
        "Ask the bot's administrators to add you."
    )
