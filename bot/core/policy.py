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

from bot.core.commands import Command, spec_of
from bot.core.ports import GroupDirectory
from bot.errors import first_line
from bot.model.access import MAX_UNCONFIRMED_SECONDS, AccessRole, Identity, Standing
from bot.model.problems import NotAllowed

log = logging.getLogger(__name__)


GROUP_CACHE_SECONDS = 60.0
FAILED_LOOKUP_SECONDS = 10.0


class NoGroupDirectory:
    """Used where no Slack token is configured (e.g. the console): groups have no members."""

    async def members(self, group_id: str) -> frozenset[str]:
        raise LookupError("no Slack token configured, so user groups cannot be resolved")


class GroupUnconfirmed(LookupError):
    """The group's members could not be confirmed recently enough to grant anything."""

    def __init__(self, group_id: str) -> None:
        super().__init__(group_id)
        self.group_id = group_id


class CachedGroups:
    def __init__(
        self,
        directory: GroupDirectory,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_unconfirmed: float | None = None,
    ) -> None:
        self._directory = directory
        self._ttl = GROUP_CACHE_SECONDS if ttl is None else ttl
        self._max_unconfirmed = MAX_UNCONFIRMED_SECONDS if max_unconfirmed is None else max_unconfirmed
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}  # group → (confirmed at, members)
        self._failed: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def members(self, group_id: str) -> frozenset[str]:
        """Members as last confirmed; raises GroupUnconfirmed when that was too long ago."""
        cached = self._cache.get(group_id)
        if cached and self._clock() - cached[0] < self._ttl:
            return cached[1]
        async with self._lock:
            cached = self._cache.get(group_id)
            if cached and self._clock() - cached[0] < self._ttl:
                return cached[1]
            if self._clock() - self._failed.get(group_id, -FAILED_LOOKUP_SECONDS) >= FAILED_LOOKUP_SECONDS:
                try:
                    members = await self._directory.members(group_id)
                except Exception as exc:
                    log.warning("cannot resolve user group %s: %s", group_id, first_line(exc))
                    self._failed[group_id] = self._clock()
                else:
                    self._failed.pop(group_id, None)
                    self._cache[group_id] = (self._clock(), members)
                    return members
            # Slack cannot be asked now (or was asked a moment ago and failed): the last answer
            # stands for a while, so a hiccup does not lock approvers out; then it grants nothing.
            if cached and self._clock() - cached[0] <= self._max_unconfirmed:
                return cached[1]
            raise GroupUnconfirmed(group_id)


class Policy:
    """Who is who: Slack user IDs and user groups → the bot's roles (``standing``). What each role
    may do is the subcommand specs' business (``authorise``)."""

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

    async def standing(self, identity: Identity) -> Standing:
        """The highest role granted to ``identity`` (directly or through a user group confirmed
        recently enough), and the groups that would have granted more had Slack confirmed them."""
        unconfirmed: list[tuple[AccessRole, str]] = []

        def settled(role: AccessRole) -> Standing:
            return Standing(role, tuple(group for grants, group in unconfirmed if grants > role))

        for role, principals in self._grants:  # highest first
            if identity.user_id in principals:
                return settled(role)
            for principal in principals:
                if not principal.startswith("S"):
                    continue
                try:
                    if identity.user_id in await self._groups.members(principal):
                        return settled(role)
                except GroupUnconfirmed:
                    unconfirmed.append((role, principal))
        return settled(self._default)

    async def role_of(self, identity: Identity) -> AccessRole:
        return (await self.standing(identity)).role


def authorise(standing: Standing, command: Command) -> NotAllowed | None:
    """Whether someone with ``standing`` may run ``command`` (its spec's role), as a refusal or None.

    This and the approver check in ``judge`` are the bot's authorisation: everything else follows
    from these two."""
    spec = spec_of(command)
    return NotAllowed(spec.name, spec.role, standing) if standing.role < spec.role else None
