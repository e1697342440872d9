"""Self-service: the owners of a database role see and free their own sessions.

Who owns a role: PGCONN_ROLE_OWNERS, or a link — proved by logging in as the role with a one-time
code in ``application_name`` (anyone who can log in as ``bob`` may do what ``bob`` may do: end
``bob``'s own sessions, which PostgreSQL itself allows), or made by an approver. An owner may
``mine`` (their roles, as ``list``/``stray`` show them) and ``free`` (their roles' idle sessions,
as PGCONN_SELF_SERVICE says: refused, an ordinary approval request, or ended at once after the same
re-check as an approved request). Superuser and protected roles are never self-service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from bot.core.approvals import FREES_PER_MINUTE, Approvals
from bot.core.commands import FreeMine, LinkRole, RequestSignal, ShowMine, UnlinkRole
from bot.core.policy import Policy
from bot.core.ports import Announcer, OwnershipStore, TargetCatalog
from bot.core.tasks import stop_task
from bot.errors import log_failure
from bot.model.access import AccessRole, Identity
from bot.model.activity import RoleNotFound
from bot.model.audit import LinkNote, NewAuditEntry
from bot.model.errors import StateUnavailableError, TargetUnavailableError, UnknownTargetError
from bot.model.ownership import (
    LINK_CODE_ALPHABET,
    Freed,
    LinkChanged,
    LinkCode,
    LinkCodeIssued,
    LinkIssue,
    LinkRefused,
    LinkSource,
    MyRoles,
    NotAnOwner,
    NothingToFree,
    OwnedRole,
    OwnedRoleState,
    SelfService,
    SelfServiceOff,
    WhoAmI,
)
from bot.model.problems import NoSuchRole
from bot.model.requests import AuditEvent, KillScope, SignalAction
from bot.model.results import Result

log = logging.getLogger(__name__)

ANY_TARGET = "*"
MAX_PENDING_CODES = 3
LINK_WATCH_SECONDS = 2.0
FREE_REASON = "self-service: the owner freed their own idle sessions"


@dataclass(frozen=True)
class OwnershipRules:
    # PGCONN_ROLE_OWNERS: user → target ("*" for every target) → role names.
    configured: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)
    self_service: SelfService = SelfService.APPROVE
    protected_roles: tuple[str, ...] = ()


def new_code() -> str:
    """Eight unambiguous characters (about 2^40), shown as XXXX-XXXX."""
    raw = "".join(secrets.choice(LINK_CODE_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


class Ownership:
    """Who owns which role, link codes, and what owners may do. Its methods return results and
    problems as data; they raise what the ports raise (the service answers those)."""

    def __init__(
        self,
        *,
        store: OwnershipStore,
        catalog: TargetCatalog,
        approvals: Approvals,
        policy: Policy,
        rules: OwnershipRules,
        announcer: Announcer,
        watching: bool = False,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._approvals = approvals
        self._policy = policy
        self._rules = rules
        self._announcer = announcer
        self.watching = watching  # serve/socket confirm codes by themselves; the console on demand

    @property
    def self_service(self) -> SelfService:
        return self._rules.self_service

    # --- who owns what ------------------------------------------------------------------------

    def configured(self, user_id: str, target: str | None = None) -> list[OwnedRole]:
        found = []
        for where, roles in self._rules.configured.get(user_id, {}).items():
            targets = self._catalog.names if where == ANY_TARGET else [where]
            for name in targets:
                if target is None or name == target:
                    found += [OwnedRole(name, role, LinkSource.CONFIG) for role in sorted(roles)]
        return found

    async def owned(self, user_id: str, target: str | None = None) -> list[OwnedRole]:
        """Configured ownership and links (links only while the state database answers)."""
        owned = self.configured(user_id, target)
        if self._store.ready:
            with contextlib.suppress(StateUnavailableError):
                links = await self._store.links_of(user_id)
                owned += [link for link in links if target is None or link.target == target]
        seen: set[tuple[str, str]] = set()
        unique = []
        for item in owned:
            if (item.target, item.role) not in seen:
                seen.add((item.target, item.role))
                unique.append(item)
        return unique

    async def owns(self, user_id: str, target: str, role: str) -> bool:
        return any(o.role == role for o in await self.owned(user_id, target))

    async def owners_of(self, target: str, role: str) -> list[str]:
        """Everyone who owns ``role`` on ``target`` (for the role-at-limit alert)."""
        owners = [
            user
            for user, where in self._rules.configured.items()
            if role in where.get(target, frozenset()) or role in where.get(ANY_TARGET, frozenset())
        ]
        if self._store.ready:
            with contextlib.suppress(StateUnavailableError):
                owners += [u for u in await self._store.linked_owners(target, role) if u not in owners]
        return owners

    # --- whoami, link, unlink -------------------------------------------------------------------

    async def whoami(self, identity: Identity, *, console: bool) -> Result:
        await self.confirm_pending(identity.user_id)
        role = (await self._policy.standing(identity)).role
        pending: list[LinkCode] = []
        if self._store.ready:
            with contextlib.suppress(StateUnavailableError):
                pending = await self._store.pending_codes(identity.user_id)
        owned = await self.owned(identity.user_id)
        return WhoAmI(identity.user_id, role, tuple(owned), tuple(pending), self._rules.self_service, console)

    async def link(self, command: LinkRole, identity: Identity) -> Result:
        if command.user is not None and command.user != identity.user_id:
            return await self._grant(command, identity)
        # The cap first: asking is free for anyone, looking a role up costs the server a query.
        if len(await self._store.pending_codes(identity.user_id)) >= MAX_PENDING_CODES:
            return LinkRefused(command.role, LinkIssue.TOO_MANY_CODES, target=command.target)
        checked = await self._linkable(command.target, command.role, suggest=False)
        if not isinstance(checked, tuple):
            return checked
        name, oid = checked
        code = await self._store.issue_code(
            new_code(), identity.user_id, command.target, name, oid, max_pending=MAX_PENDING_CODES
        )
        if code is None:
            return LinkRefused(name, LinkIssue.TOO_MANY_CODES, target=command.target)
        log.info("link code for %s as %s on %s issued", identity.user_id, name, command.target)
        return LinkCodeIssued(code, self._catalog.connect_hint(command.target), self.watching)

    async def _grant(self, command: LinkRole, identity: Identity) -> Result:
        assert command.user is not None
        if (await self._policy.standing(identity)).role < AccessRole.APPROVER:
            return LinkRefused(command.role, LinkIssue.NEEDS_APPROVER, command.user, command.target)
        checked = await self._linkable(command.target, command.role, suggest=True)
        if not isinstance(checked, tuple):
            return checked
        name, oid = checked
        entry = _link_audit(AuditEvent.LINKED, command.target, name, command.user, LinkSource.GRANTED, identity)
        await self._store.link(command.user, command.target, name, oid, LinkSource.GRANTED, identity.user_id, entry)
        return LinkChanged(command.target, name, command.user, linked=True, by=identity.user_id)

    async def unlink(self, command: UnlinkRole, identity: Identity) -> Result:
        user = command.user or identity.user_id
        if user != identity.user_id and (await self._policy.standing(identity)).role < AccessRole.APPROVER:
            return LinkRefused(command.role, LinkIssue.NEEDS_APPROVER, user, command.target)
        entry = _link_audit(AuditEvent.UNLINKED, command.target, command.role, user, LinkSource.LOGIN, identity)
        if await self._store.unlink(user, command.target, command.role, entry) is not None:
            return LinkChanged(command.target, command.role, user, linked=False, by=identity.user_id)
        if any(o.role == command.role for o in self.configured(user, command.target)):
            return LinkRefused(command.role, LinkIssue.CONFIGURED, user, command.target)
        return LinkRefused(command.role, LinkIssue.NOT_LINKED, user, command.target)

    async def _linkable(self, target: str, role: str, *, suggest: bool) -> tuple[str, int] | Result:
        """The role as the server has it (name, oid), or why it cannot be self-service.
        ``suggest``: name similar roles when there is none (approvers; not to anyone who asks)."""
        found = await self._catalog.role_usage(target, role)
        if isinstance(found, RoleNotFound):
            return NoSuchRole(found.name, tuple(found.suggestions) if suggest else (), target)
        info = found[0]
        if info.superuser or info.name in self._rules.protected_roles:
            return LinkRefused(info.name, LinkIssue.PROTECTED, target=target)
        return info.name, info.oid

    async def confirm_pending(self, user_id: str | None = None) -> list[LinkCode]:
        """Link everyone whose code is on a session of exactly the code's role now (a code seen on
        another role's session, an expired or used one, links nothing). Returns who was linked."""
        if not self._store.ready:
            return []
        codes = await self._store.pending_codes(user_id)
        confirmed = []
        for target in sorted({code.target for code in codes}):
            try:
                sessions = await self._catalog.link_sessions(target)
            except (TargetUnavailableError, UnknownTargetError):
                continue
            for code in (c for c in codes if c.target == target):
                # Exactly the code, on a session whose login role is the very role it was given for.
                proof = next(
                    (s for s in sessions if s.application == code.application_name and s.role_oid == code.role_oid),
                    None,
                )
                if proof is None:
                    continue
                entry = _link_audit(
                    AuditEvent.LINKED,
                    target,
                    code.role,
                    code.user_id,
                    LinkSource.LOGIN,
                    Identity(code.user_id),
                    session=proof.described(),
                )
                if await self._store.use_code(code, entry):
                    log.info("%s proved a login as %s on %s: linked", code.user_id, code.role, target)
                    confirmed.append(code)
        return confirmed

    # --- mine, free -----------------------------------------------------------------------------

    async def mine(self, command: ShowMine, identity: Identity) -> Result:
        await self.confirm_pending(identity.user_id)
        owned = await self.owned(identity.user_id, command.target)
        if not owned:
            return NotAnOwner("mine", command.target)
        states, missing = await self._states(command.target, owned)
        refused = tuple(s.role.name for s in states if self._never_self_service(s))
        states = [s for s in states if not self._never_self_service(s)]
        restricted = any(c.backend_start is None for s in states for c in s.connections)
        return MyRoles(command.target, states, self._rules.self_service, tuple(missing), restricted, refused)

    def _never_self_service(self, state: OwnedRoleState) -> bool:
        return state.role.superuser or state.role.name in self._rules.protected_roles

    async def free(self, command: FreeMine, identity: Identity, *, text: str, channel: str | None) -> Result:
        owned = await self.owned(identity.user_id, command.target)
        if not owned:
            return NotAnOwner("free", command.target)
        if self._rules.self_service is SelfService.OFF:
            return SelfServiceOff()
        states, _ = await self._states(command.target, owned, older_than=command.older_than)
        states = [s for s in states if not self._never_self_service(s)]
        active = sum(s.active for s in states)
        idle = [c for s in states for c in s.idle]
        if not idle:
            return NothingToFree(command.target, tuple(s.role.name for s in states), command.older_than, active)
        request = RequestSignal(
            action=SignalAction.TERMINATE,
            scope=KillScope.IDLE,
            pids=tuple(c.pid for c in idle),
            reason=FREE_REASON,
            target=command.target,
            # The very sessions listed: a pid that is someone else's by now is refused, never signalled.
            expected_starts=tuple((c.pid, c.backend_start) for c in idle if c.backend_start is not None),
        )
        if self._rules.self_service is SelfService.AUTO:
            result = await self._approvals.free_now(request, identity, text=text)
            return Freed(result.request, active) if isinstance(result, Freed) else result
        return await self._approvals.open(request, identity, text=text, channel=channel, per_minute=FREES_PER_MINUTE)

    async def _states(
        self, target: str, owned: Collection[OwnedRole], *, older_than: timedelta | None = None
    ) -> tuple[list[OwnedRoleState], list[str]]:
        """Each owned role as it is now; ``missing``: no such role, or (a link) not the role that
        was linked — one dropped and made again under its name belongs to nobody yet."""
        states, missing = [], []
        for item in owned:
            sessions = await self._catalog.role_sessions(target, item.role)
            idle = await self._catalog.idle_sessions(target, item.role, older_than)
            if isinstance(sessions, RoleNotFound) or isinstance(idle, RoleNotFound):
                missing.append(item.role)
                continue
            info, connections = sessions
            if item.role_oid is not None and info.oid != item.role_oid:
                log.warning("%s's link to %s on %s is to an earlier role of that name", item.by, item.role, target)
                missing.append(item.role)
                continue
            states.append(OwnedRoleState(info, connections, idle[1]))
        return states, missing


def _link_audit(
    event: AuditEvent,
    target: str,
    role: str,
    user: str,
    source: LinkSource,
    by: Identity,
    *,
    session: str | None = None,
) -> NewAuditEntry:
    return NewAuditEntry(
        event=event,
        target=target,
        role_name=role,
        actor=by.user_id,
        requester=user,
        note=LinkNote(user, source, session),
        origin=by.origin,
    )


class LinkWatcher:
    """serve/socket: looks for sessions carrying pending link codes every few seconds (only while
    some are pending: one small query on the state database otherwise) and tells whoever is linked."""

    def __init__(self, ownership: Ownership, announcer: Announcer, *, interval: float = LINK_WATCH_SECONDS) -> None:
        self._ownership = ownership
        self._announcer = announcer
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pgconn-link-watch")

    async def stop(self) -> None:
        await stop_task(self._task, 1.0)
        self._task = None

    async def run_once(self) -> list[LinkCode]:
        confirmed = await self._ownership.confirm_pending()
        for code in confirmed:
            try:
                await self._announcer.tell_linked(code)
            except Exception as exc:  # linked either way: `whoami` shows it
                log_failure(log, logging.WARNING, "could not tell %s about their link", code.user_id, exc=exc)
        return confirmed

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                log_failure(log, logging.WARNING, "link watch failed", exc=exc)
            await asyncio.sleep(self._interval)
