"""Kill/cancel requests: open → approve/deny → execute, each step audited.

The rules live here and nowhere else; the Slack buttons and the console's ``approve N`` both
call ``Approvals.decide``. Exactly-once comes from the state database: a decision is made
under the request's row lock and the pending → executing/denied change is conditional, so
double clicks, Slack retries and several replicas execute a request at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol

from bot import metrics
from bot.config import DEFAULT_TARGET
from bot.core.commands import AccessRole, KillScope, RequestSignal, SignalAction
from bot.core.durations import spell_duration
from bot.core.markup import mention, moment
from bot.core.parser import shorten
from bot.core.policy import Identity, Policy, unconfirmed_note
from bot.core.results import (
    IDLE_STATES,
    OUTCOME_LABELS,
    Alert,
    AuditEntry,
    AuditTrail,
    Decided,
    DecisionRefused,
    NoSuchRole,
    NothingToSignal,
    PendingRequests,
    Problem,
    RequestOpened,
    RequestStatus,
    Result,
    RoleFill,
    SignalRequest,
    TargetOutcome,
)
from bot.db import catalog, signals
from bot.db.requests import (
    OPENS_PER_MINUTE,
    NewAuditEntry,
    NewRequest,
    Openings,
    RequestStore,
    TooManyOpenRequests,
)
from bot.db.signals import Candidate, Protection, SignalOutcome
from bot.db.targets import Conn, TargetPools, TargetUnavailableError, UnknownTargetError
from bot.errors import first_line

log = logging.getLogger(__name__)

EXECUTION_WAIT_SECONDS = 5.0  # how long a terminate may take to end the backend
INTERRUPTED_AFTER_SECONDS = 600.0
# Updating a request's message: the lease outlasts the Slack call, which is cut off well before.
SYNC_LEASE_SECONDS = 30.0
SLACK_UPDATE_SECONDS = 20.0
PUBLISH_ROUNDS = 3
GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


class AnnounceError(Exception):
    """Slack (or whatever announces) did not take the message.

    ``retry_after``: it said when to try again. ``permanent``: trying again cannot help —
    "message" (Slack refuses this content) or "channel" (it takes nothing in that channel).
    """

    def __init__(
        self,
        reason: str,
        retry_after: float | None = None,
        permanent: Literal["message", "channel"] | None = None,
        *,
        known: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.permanent = permanent
        self.known = known  # False: an error Slack gave that the bot does not know to be passing


class Announcer(Protocol):
    """Where requests, outcomes and audit entries are shown (Slack in serve mode)."""

    @property
    def can_post(self) -> bool: ...

    async def post_request(self, request: SignalRequest, channel: str) -> str:
        """Post the approval message; returns its ts ("" if Slack did not say). Raises AnnounceError."""
        ...

    async def update_request(self, request: SignalRequest) -> None: ...

    async def tell_requester(self, request: SignalRequest) -> None: ...

    async def post_audit(self, entry: AuditEntry, channel: str, request_message: str | None) -> str | None:
        """Post an audit entry; returns its ts. Raises AnnounceError."""
        ...


class NoAnnouncer:
    """The console: nothing is posted anywhere; requests are decided with ``approve N``."""

    can_post = False

    async def post_request(self, request: SignalRequest, channel: str) -> str:
        raise AnnounceError("no Slack in this mode")

    async def update_request(self, request: SignalRequest) -> None:
        return None

    async def tell_requester(self, request: SignalRequest) -> None:
        return None

    async def post_audit(self, entry: AuditEntry, channel: str, request_message: str | None) -> str | None:
        raise AnnounceError("no Slack in this mode")

    async def post_alert(self, alert: Alert, channel: str) -> str:
        raise AnnounceError("no Slack in this mode")

    async def update_alert(self, alert: Alert) -> None:
        return None

    async def reply_resolved(self, alert: Alert) -> None:
        return None

    async def delete_message(self, channel: str, ts: str) -> None:
        return None


@dataclass(frozen=True)
class ApprovalRules:
    ttl_seconds: int = 3600
    required_approvals: int = 1
    allow_self_approval: bool = False
    protected_roles: tuple[str, ...] = ()
    approval_channel: str | None = None
    max_open_per_requester: int = 5


class Approvals:
    def __init__(
        self,
        *,
        targets: TargetPools,
        store: RequestStore,
        policy: Policy,
        rules: ApprovalRules,
        announcer: Announcer,
        on_audit: Callable[[], None] = lambda: None,
        bot_roles: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self._targets = targets
        self._store = store
        self._policy = policy
        self._rules = rules
        self.announcer = announcer
        self._on_audit = on_audit
        # The bot's own login roles (targets' and state database's): never signalled.
        self._bot_roles = bot_roles

    @property
    def state_ready(self) -> bool:
        return self._store.ready

    def set_audit_hook(self, hook: Callable[[], None]) -> None:
        self._on_audit = hook

    # --- opening a request -------------------------------------------------------------------

    async def open(self, command: RequestSignal, identity: Identity, *, text: str, channel: str | None) -> Result:
        """Resolve the targets now, store the request, post it for approval. Nothing is signalled.

        The request is approvable only once its message is posted (status ``posting`` until then),
        so nobody can approve what its requester may yet be told was withdrawn.
        """
        openings = await self._store.openings(identity.user_id)
        if openings.refusal(self._rules.max_open_per_requester) is not None:
            return await self._too_many(command, identity, openings)
        resolved = await self._targets.run(command.target, lambda conn: self._resolve(conn, command))
        if isinstance(resolved, Problem):
            await self.record_refusal(command, identity, resolved.message)
            return resolved
        candidates, fills = resolved
        where = self._rules.approval_channel or channel
        posting = self.announcer.can_post and where is not None
        try:
            request = await self._store.open_request(
                NewRequest(
                    action=command.action.value,
                    scope=command.scope.value,
                    target=command.target,
                    role_name=command.role,
                    older_than=command.older_than,
                    reason=command.reason,
                    command_text=text,
                    requester=identity.user_id,
                    requester_name=identity.display,
                    required_approvals=self._rules.required_approvals,
                    ttl_seconds=self._rules.ttl_seconds,
                    origin_channel=channel,
                    targets=[c.as_target() for c in candidates],
                    fills=fills,
                ),
                NewAuditEntry(
                    event="requested",
                    action=command.action.value,
                    target=command.target,
                    role_name=_role_label(c.role for c in candidates),
                    pids=[c.pid for c in candidates],
                    actor=identity.user_id,
                    requester=identity.user_id,
                    outcome=f"reason: {command.reason}" if command.reason else None,
                    origin=identity.origin,
                ),
                max_open=self._rules.max_open_per_requester,
                posting=posting,
            )
        except TooManyOpenRequests as exc:  # another of their requests was opened meanwhile
            return await self._too_many(command, identity, exc.openings)
        metrics.REQUESTS.labels(action=command.action.value, outcome="opened").inc()
        log.info("request #%d opened by %s: %s %s", request.id, identity.user_id, request.action, request.pids)
        if not posting or where is None:
            self._on_audit()
            return RequestOpened(request, posted_in=None, console=not self.announcer.can_post)
        try:
            # Shown as it will be once posted: pending, with its buttons.
            ts = await self.announcer.post_request(replace(request, status=RequestStatus.PENDING), where)
        except AnnounceError as exc:
            return await self._withdraw(request, where, exc.reason)
        if not ts:
            # Posted, but Slack did not say where: the first click on it names the message.
            log.warning("request #%d posted to %s without a ts; a click will record it", request.id, where)
        try:
            posted = await self._store.mark_posted(request.id, where, ts or None)
        except Exception as exc:
            # Posted, but not recorded: a click on the message makes it approvable (and records it);
            # if none comes, the housekeeper withdraws it and the requester is told then.
            log.error("request #%d posted, but that could not be recorded: %s", request.id, first_line(exc))
            self._on_audit()
            return RequestOpened(request, posted_in=where, unrecorded=True)
        current, version = posted if posted is not None else (replace(request, status=RequestStatus.PENDING), -1)
        if current.status != RequestStatus.PENDING:
            # It took Slack so long that the request was withdrawn (or decided) meanwhile.
            await self.publish(request.id)
            self._on_audit()
            return RequestOpened(current, posted_in=where)
        if ts and not await self._store.posted_as_shown(request.id, message_state(RequestStatus.PENDING, 0), version):
            await self.publish(request.id)  # an approver clicked already: bring the message up to date
        self._on_audit()
        return RequestOpened(current, posted_in=where)

    async def _too_many(self, command: RequestSignal, identity: Identity, openings: Openings) -> Result:
        limit = self._rules.max_open_per_requester
        open_ids = openings.open_ids
        if len(open_ids) < limit:  # not too many open: too many opened just now
            await self.record_refusal(command, identity, f"{openings.last_minute} requests in the last minute")
            return NothingToSignal(
                f"Nothing was requested: you opened {openings.last_minute} requests in the last minute, "
                f"the most one person may ({OPENS_PER_MINUTE}). Try again in a minute."
            )
        await self.record_refusal(command, identity, f"{len(open_ids)} requests already open (at most {limit})")
        listed = ", ".join(f"#{i}" for i in open_ids[:10])
        return NothingToSignal(
            f"Nothing was requested: you already have {len(open_ids)} open requests ({listed}), the most "
            f"one person may have at a time (PGCONN_MAX_PENDING_PER_USER={limit}). "
            "Wait for a decision on them, or let them expire."
        )

    async def _withdraw(self, request: SignalRequest, channel: str, reason: str) -> Result:
        log.warning("request #%d could not be posted to %s: %s", request.id, channel, reason)
        current = await self._store.withdraw(
            request.id,
            _audit("withdrawn", request, outcome=f"could not be posted for approval in {channel}: {reason}"),
        )
        self._on_audit()
        if current is not None and current.status != RequestStatus.WITHDRAWN:
            # Slack said no, but a click on the message proves it got there (Slack's answer was
            # lost): it is approvable, and the requester hears the truth.
            log.warning("request #%d was posted after all (%s)", request.id, current.status)
            metrics.REQUESTS.labels(action=request.action, outcome="opened").inc()
            return RequestOpened(current, posted_in=channel)
        metrics.REQUESTS.labels(action=request.action, outcome="withdrawn").inc()
        hint = (
            " Invite the bot to that channel (/invite @pgconn-bot), or ask the admins to set PGCONN_APPROVAL_CHANNEL."
            if reason in ("not_in_channel", "channel_not_found", "is_archived")
            else " Try again in a moment."
        )
        return Problem(
            f"Request #{request.id} could not be posted for approval ({reason}), so it was withdrawn; "
            f"nothing was signalled.{hint}"
        )

    async def record_refusal(self, command: RequestSignal, identity: Identity, why: str) -> None:
        metrics.REQUESTS.labels(action=command.action.value, outcome="refused").inc()
        try:
            # Rate-limited per person: anyone can cause refusals, so they must not flood the trail.
            await self._store.append_refusal(
                NewAuditEntry(
                    event="refused",
                    action=command.action.value,
                    target=command.target,
                    role_name=command.role,
                    pids=list(command.pids),
                    actor=identity.user_id,
                    requester=identity.user_id,
                    outcome=why,
                    origin=identity.origin,
                )
            )
        except Exception as exc:  # the refusal itself has been answered; the log keeps the trace
            log.error("could not audit a refused %s by %s (%s): %s", command.name, identity.user_id, why, exc)
            return
        self._on_audit()

    async def _resolve(self, conn: Conn, command: RequestSignal) -> tuple[list[Candidate], list[RoleFill]] | Problem:
        if command.pids:  # kill <pids>, cancel <pids>, and an alert's pid (scope idle: still idle)
            found = {c.pid: c for c in await signals.candidates(conn, pids=command.pids, protection=self._protection())}
            starts, marks = dict(command.expected_starts), dict(command.expected_marks)
            reasons = [
                why
                for pid in command.pids
                if (
                    why := self._why_not(
                        pid,
                        found.get(pid),
                        command.target,
                        starts.get(pid),
                        cancel=command.action is SignalAction.CANCEL,
                        idle=command.scope is KillScope.IDLE,
                        mark=marks.get(pid),
                    )
                )
            ]
            if reasons:
                return NothingToSignal("Nothing was requested: " + "; ".join(reasons) + ".")
            chosen = [found[pid] for pid in command.pids]
        else:
            assert command.role is not None
            match = await catalog.find_role(conn, command.role)
            if match.info is None or match.oid is None:
                hint = f"; did you mean {' or '.join(repr(s) for s in match.suggestions)}?" if match.suggestions else ""
                return NoSuchRole(f"no role named {shorten(command.role)!r}{_on(command.target)}{hint}")
            role = match.info.name
            if match.info.superuser:
                return NothingToSignal(
                    f"Nothing was requested: {role} is a superuser; superusers' sessions are protected."
                )
            if role in self._rules.protected_roles:
                return NothingToSignal(f"Nothing was requested: {role} is a protected role (PGCONN_PROTECTED_ROLES).")
            idle_for = (command.older_than or timedelta(0)) if command.scope is KillScope.IDLE else None
            chosen = await signals.candidates(
                conn, role_oid=match.oid, idle_for=idle_for, protection=self._protection()
            )
            if protected := next((why for c in chosen if (why := self._protected(c.pid, c))), None):
                return NothingToSignal(f"Nothing was requested: {protected}.")
            if not chosen:
                what = "connections" if idle_for is None else "idle connections"
                if command.older_than:
                    what += f" idle for {spell_duration(command.older_than)} or more"
                return NothingToSignal(f"Nothing to do: {role} has no {what}{_on(command.target)}.")
            if any(c.backend_start is None for c in chosen):
                return NothingToSignal(
                    "Nothing was requested: the bot cannot see these sessions' details (grant it pg_monitor), "
                    "so it could not make sure it signals the right ones."
                )
        fills: dict[str, RoleFill] = {}
        for c in chosen:
            if c.role and c.role not in fills:
                fills[c.role] = RoleFill(c.role, c.role_used, c.role_limit if c.role_limit is not None else -1)
        return chosen, list(fills.values())

    def _why_not(
        self,
        pid: int,
        found: Candidate | None,
        target: str,
        expected_start: datetime | None = None,
        *,
        cancel: bool = False,
        idle: bool = False,
        mark: datetime | None = None,
    ) -> str | None:
        if found is None:
            return f"pid {pid} is not a session{_on(target) or ' on this server'} (it may have ended)"
        if expected_start is not None and found.backend_start != expected_start:
            return f"pid {pid} now belongs to a different session than the one the alert was about"
        if idle and (found.state not in IDLE_STATES or (mark is not None and found.xact_start != mark)):
            return f"pid {pid} is no longer idle in the transaction the alert was about"
        if cancel and mark is not None and found.query_start != mark:
            return f"pid {pid} is no longer running the query the alert was about"
        if protected := self._protected(pid, found):
            return protected
        if cancel and found.state != "active":
            return (
                f"pid {pid} is {found.state or 'not running a query'}: there is no query to cancel "
                "(kill ends the session)"
            )
        if found.backend_start is None or found.role_oid is None:
            return (
                f"the bot cannot see the details of pid {pid} (grant it pg_monitor), "
                "so it could not make sure it signals the right session"
            )
        return None

    def _protected(self, pid: int, found: Candidate) -> str | None:
        """Why this backend may never be signalled, or None. The signalling statement checks the same."""
        if found.own or found.bot_login:
            return f"pid {pid} is pgconn-bot's own connection"
        if not found.client_backend:
            return f"pid {pid} is a {found.backend_type or 'server process'}, not a client session"
        if found.superuser:
            return f"pid {pid} belongs to superuser {found.role}; superusers' sessions are protected"
        if found.superuser_via:
            return (
                f"pid {pid} belongs to {found.role}, a member of superuser role {found.superuser_via}; "
                "superusers' sessions are protected"
            )
        if found.role in self._rules.protected_roles:
            return f"pid {pid} belongs to {found.role}, a protected role"
        if found.protected_via:
            return f"pid {pid} belongs to {found.role}, a member of protected role {found.protected_via}"
        return None

    def _protection(self) -> Protection:
        return Protection(self._rules.protected_roles, sorted(self._bot_roles()))

    # --- deciding ----------------------------------------------------------------------------

    async def decide(
        self, request_id: int, approve: bool, identity: Identity, *, clicked_on: tuple[str, str] | None = None
    ) -> Result:
        """``clicked_on``: (channel, ts) of the message whose button was clicked, when there is one."""
        # Before the row lock, since both may ask Slack: the clicker's role, and whether those who
        # approved earlier are approvers still (an approval by someone removed since no longer counts).
        standing = await self._policy.standing(identity)
        role = standing.role
        still_approvers = await self._current_approvers(request_id)
        if clicked_on is not None:
            await self._store.adopt_message(request_id, *clicked_on)
        execute: SignalRequest | None = None
        result: Result
        async with self._store.locked(request_id) as locked:
            if locked is None:
                return DecisionRefused(f"There is no request #{request_id}.")
            request = locked.request
            verb = "approve" if approve else "deny"
            if role < AccessRole.APPROVER:
                # Once per person and request, and rate-limited per person: anyone who sees the
                # message could click it over and over.
                if not await locked.refused_before(identity.user_id):
                    await locked.audit_refusal(
                        _audit("click_refused", request, by=identity, outcome=f"{verb}: not an approver")
                    )
                result = DecisionRefused(
                    f"Sorry, only approvers can {verb} requests, and you have "
                    f"{'no access' if role is AccessRole.NONE else 'the ' + role.label + ' role'}."
                    f"{unconfirmed_note(standing)} Request #{request_id} is unchanged."
                )
            elif request.status == RequestStatus.POSTING:
                # Only a click on the posted message itself makes it approvable (see ADOPT_MESSAGE).
                result = DecisionRefused(
                    f"Request #{request_id} is still being posted for approval; try again in a moment."
                )
            elif request.status != RequestStatus.PENDING:
                result = DecisionRefused(_already_decided(request))
            elif request.now >= request.expires_at:
                if await locked.expire():
                    await locked.audit(_audit("expired", await locked.reload()))
                    metrics.DECISIONS.labels(decision="expired").inc()
                result = DecisionRefused(
                    f"Request #{request_id} expired {_when(request.expires_at)}; nothing was done. "
                    "Ask again if it is still needed."
                )
            elif not approve:
                await locked.set_status(RequestStatus.DENIED, identity.user_id)
                request = await locked.reload()
                _count_decision("denied", request)
                await locked.audit(_audit("denied", request, by=identity))
                result = Decided(request, "denied")
            elif identity.user_id == request.requester and not self._rules.allow_self_approval:
                if not await locked.refused_before(identity.user_id):
                    await locked.audit_refusal(
                        _audit("click_refused", request, by=identity, outcome="approve: own request")
                    )
                result = DecisionRefused(f"You asked for request #{request_id}, so another approver has to approve it.")
            elif any(a.approver == identity.user_id for a in request.approvals):
                counted = sum(1 for a in request.approvals if a.approver in still_approvers)
                result = DecisionRefused(
                    f"You have already approved request #{request_id}; it needs "
                    f"{request.required_approvals - counted} more approval(s) from other approvers."
                )
            else:
                await locked.add_approval(identity.user_id)
                counted = sum(1 for a in request.approvals if a.approver in still_approvers)
                if counted + 1 < request.required_approvals:
                    request = await locked.reload()
                    await locked.audit(
                        _audit(
                            "approval",
                            request,
                            by=identity,
                            outcome=f"{counted + 1} of {request.required_approvals} approvals",
                        )
                    )
                    result = Decided(request, "approval_recorded", approvals_counted=counted + 1)
                else:
                    await locked.set_status(RequestStatus.EXECUTING, identity.user_id)
                    execute = await locked.reload()
                    _count_decision("approved", execute)
                    await locked.audit(_audit("approved", execute, by=identity))
                    result = Decided(execute, "executing")
        self._on_audit()
        if execute is not None:
            result = Decided(await self._execute(execute, identity), "executed")
            self._on_audit()
        await self.publish(request_id)
        return result

    async def _current_approvers(self, request_id: int) -> set[str]:
        """Those who approved the request so far and are approvers now."""
        request = await self._store.get(request_id)
        if request is None or request.required_approvals < 2:
            return set()
        still = set()
        for approval in request.approvals:
            if (await self._policy.standing(Identity(approval.approver))).role >= AccessRole.APPROVER:
                still.add(approval.approver)
            else:
                log.warning("request #%d: the approval by %s no longer counts", request_id, approval.approver)
        return still

    async def _execute(self, request: SignalRequest, by: Identity) -> SignalRequest:
        targets = request.targets
        progress = signals.Progress()

        async def work(conn: Conn) -> list[SignalOutcome]:
            return await signals.execute(
                conn,
                action=request.action,
                scope=request.scope,
                targets=targets,
                protection=self._protection(),
                wait_seconds=EXECUTION_WAIT_SECONDS,
                statement_seconds=self._targets.timeout,
                progress=progress,
            )

        budget = self._targets.timeout * 2 + EXECUTION_WAIT_SECONDS + 0.2 * len(targets)
        started = time.perf_counter()
        try:
            outcomes = await self._targets.run(request.target, work, budget=budget, retry=False)
        except (TargetUnavailableError, UnknownTargetError) as exc:
            why = exc.reason if isinstance(exc, TargetUnavailableError) else "the target is no longer configured"
            outcomes = progress.outcomes_after(targets, why)
        except Exception as exc:
            reference = uuid.uuid4().hex[:8]
            log.exception("executing request #%d failed (ref %s)", request.id, reference)
            outcomes = progress.outcomes_after(targets, f"{first_line(exc)} (ref {reference})")
        metrics.EXECUTION_SECONDS.observe(time.perf_counter() - started)
        for o in outcomes:
            metrics.TARGET_OUTCOMES.labels(action=request.action, outcome=o.outcome).inc()
        summary = outcome_summary([(o.pid, o.outcome, o.detail) for o in outcomes])
        log.info("request #%d executed: %s", request.id, summary)
        try:
            return await self._store.finish(
                request.id,
                [(o.pid, o.outcome, o.detail) for o in outcomes],
                _audit("executed", request, by=by, outcome=summary),
            )
        except Exception as exc:
            # The signals went out; only the record failed. Say what happened; the request stays
            # "executing" and is reported as interrupted by the housekeeper, with its audit entry.
            log.error("request #%d executed (%s) but could not be recorded: %s", request.id, summary, exc)
            by_pid = {o.pid: o for o in outcomes}
            targets = tuple(
                replace(t, outcome=by_pid[t.pid].outcome, detail=by_pid[t.pid].detail) for t in request.targets
            )
            return replace(request, status=RequestStatus.EXECUTED, targets=targets)

    # --- showing ------------------------------------------------------------------------------

    async def publish(self, request_id: int) -> None:
        """Bring the request's message up to date and, once it is final, tell the requester.

        Best effort: whatever fails here is retried by the housekeeper; it never changes what was
        decided or done. No database connection is held while Slack answers: the message's sync
        lease is claimed (and committed) first, and the outcome recorded afterwards.
        """
        owner = uuid.uuid4()
        try:
            request: SignalRequest | None = None
            for _ in range(PUBLISH_ROUNDS):  # again if it changed while Slack was being asked
                claimed = await self._store.claim_message_sync(request_id, owner, SYNC_LEASE_SECONDS)
                if claimed is None:
                    break  # another process is on it, and looks again when it is done
                request, shown, version = claimed
                state = message_state(request.status, len(request.approvals))
                # While executing the message keeps its buttons (a click hears "already approved"):
                # it changes once, when the outcome can be shown, so "no button" means "done".
                if shown == state and request.status != RequestStatus.EXECUTING:
                    await self._store.message_shown(request_id, owner, state, version)  # nothing to change
                    break
                if request.status in (RequestStatus.EXECUTING, RequestStatus.POSTING) or not (
                    request.channel and request.message_ts and self.announcer.can_post
                ):
                    await self._store.release_message_sync(request_id, owner)
                    break
                try:
                    async with asyncio.timeout(SLACK_UPDATE_SECONDS):
                        await self.announcer.update_request(request)
                except Exception as exc:
                    log.warning("could not update the message of request #%d: %s", request_id, first_line(exc))
                    if isinstance(exc, AnnounceError) and (exc.reason in GONE or exc.permanent == "channel"):
                        # Deleted, or its channel is: nothing left to update (the audit has it all).
                        await self._store.message_shown(request_id, owner, state, version)
                    else:  # tried again, later and later (at most every five minutes), never given up
                        await self._store.message_sync_failed(request_id, owner)
                    break
                if not await self._store.message_shown(request_id, owner, state, version):
                    break  # the lease lapsed meanwhile; the housekeeper sees what is left to do
            if request is None:
                request = await self._store.get(request_id)
            # Only a process that can reach Slack claims the notice, so a console decision leaves
            # it to a serve replica.
            if (
                request is not None
                and request.status in RequestStatus.FINAL
                and self.announcer.can_post
                and await self._store.claim_requester_notice(request_id)
            ):
                try:
                    await self.announcer.tell_requester(request)
                except Exception as exc:
                    log.warning("could not tell %s about request #%d: %s", request.requester, request_id, exc)
                    await self._store.release_requester_notice(request_id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store.release_message_sync(request_id, owner))
            raise
        except Exception as exc:
            log.warning("could not publish request #%d: %s", request_id, first_line(exc))

    async def pending(self) -> Result:
        return PendingRequests(await self._store.pending())

    async def audit_trail(self, count: int) -> Result:
        return AuditTrail(await self._store.recent_audit(count), count)


def _count_decision(decision: str, request: SignalRequest) -> None:
    metrics.DECISIONS.labels(decision=decision).inc()
    metrics.DECISION_SECONDS.observe(max(0.0, (request.now - request.created_at).total_seconds()))


def audit_for_closed(request: SignalRequest) -> NewAuditEntry:
    if request.status == RequestStatus.EXPIRED:
        metrics.DECISIONS.labels(decision="expired").inc()
        return _audit("expired", request, outcome="nothing was done")
    if request.status == RequestStatus.WITHDRAWN:
        return _audit("withdrawn", request, outcome="the bot stopped before posting it for approval; nothing was done")
    return _audit(
        "interrupted",
        request,
        actor=request.decided_by,
        outcome="the bot stopped while executing; check the sessions with /pgconn list",
    )


def outcome_summary(outcomes: Sequence[tuple[int, str | None, str | None]]) -> str:
    parts = []
    for pid, outcome, detail in outcomes:
        label = OUTCOME_LABELS.get(outcome or "", outcome or "not run")
        parts.append(f"{pid} {label}" + (f" ({detail})" if detail and outcome == TargetOutcome.FAILED else ""))
    return ", ".join(parts)


def message_state(status: str, approvals: int) -> str:
    """What a request message shows, as recorded in ``shown_state`` (the same as sql._MESSAGE_STATE)."""
    return f"{status}:{approvals}"


def _audit(
    event: str,
    request: SignalRequest,
    *,
    actor: str | None = None,
    by: Identity | None = None,
    outcome: str | None = None,
) -> NewAuditEntry:
    return NewAuditEntry(
        event=event,
        request_id=request.id,
        action=request.action,
        target=request.target,
        role_name=_role_label(request.roles) or request.role_name,
        pids=request.pids,
        actor=by.user_id if by is not None else actor,
        requester=request.requester,
        approvers=[a.approver for a in request.approvals],
        outcome=outcome,
        message_ref=f"{request.channel}/{request.message_ts}" if request.message_ts else None,
        origin=by.origin if by is not None else None,
    )


def _role_label(roles: Iterable[str | None]) -> str | None:
    return ", ".join(sorted({r for r in roles if r})) or None


def _already_decided(request: SignalRequest) -> str:
    who = f" by {mention(request.decided_by)}" if request.decided_by else ""
    when = f" {_when(request.decided_at)}" if request.decided_at else ""
    match request.status:
        case RequestStatus.EXECUTING | RequestStatus.EXECUTED | RequestStatus.INTERRUPTED:
            return f"Request #{request.id} was already approved{who}{when}."
        case RequestStatus.DENIED:
            return f"Request #{request.id} was already denied{who}{when}."
        case RequestStatus.EXPIRED:
            return f"Request #{request.id} expired{when}; nothing was done."
        case _:
            return f"Request #{request.id} was withdrawn; nothing was done."


def _when(at: datetime) -> str:
    return f"at {moment(at)}"


def _on(target: str) -> str:
    return "" if target == DEFAULT_TARGET else f" on {target}"
