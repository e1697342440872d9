"""Kill/cancel requests: open → approve/deny → carry out, each step audited.

The rules are ``core.judge``'s (pure); this module applies them. The Slack buttons and the
console's ``approve N`` both come through ``Approvals.decide``. Exactly-once comes from the state
database: a decision is applied under the request's row lock and the pending → executing/denied
change is conditional, so double clicks, Slack retries and several replicas carry out a request
at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, assert_never

from bot import metrics
from bot.core.commands import RequestSignal
from bot.core.judge import (
    Clicker,
    Deny,
    Execute,
    Expire,
    RecordApproval,
    Refuse,
    Verdict,
    counted_approvals,
    escalation_outcome,
    judge,
    outcome_of,
    protection_of,
    unsignallable,
)
from bot.core.policy import Policy
from bot.core.ports import Announcer, LockedRequest, RequestStore, Signaller
from bot.errors import first_line, log_failure
from bot.model.access import AccessRole, Identity
from bot.model.activity import RoleFill, RoleNotFound
from bot.model.audit import (
    ApprovalCount,
    AuditNote,
    ClickRefusal,
    Closed,
    Closure,
    DrainEnded,
    NewAuditEntry,
    Outcomes,
    PostFailed,
    Reason,
    Refusal,
    RequestRefusal,
    SelfServiceNote,
)
from bot.model.drains import Drain, DrainIssue, DrainRefused, Undrained, UndrainFailed
from bot.model.errors import AnnounceError, TooManyOpenRequests
from bot.model.ownership import Freed, SelfService
from bot.model.problems import (
    DecisionIssue,
    DecisionRefused,
    DetailsHidden,
    NoSuchRole,
    NothingToDo,
    PidsRefused,
    RequestWithdrawn,
    RoleProtection,
    RoleRefused,
    TooManyRequests,
)
from bot.model.requests import (
    FINAL_STATUSES,
    OPENS_PER_MINUTE,
    AuditEvent,
    Candidate,
    KillScope,
    NewRequest,
    Openings,
    OutcomeNote,
    Protection,
    RequestStatus,
    RequestTarget,
    SignalAction,
    SignalAttempt,
    SignalOutcome,
    SignalRequest,
    SparedSession,
    TargetOutcome,
)
from bot.model.results import AuditTrail, Decided, PendingRequests, RequestOpened, Result

log = logging.getLogger(__name__)

EXECUTION_WAIT_SECONDS = 5.0  # how long a terminate may take to end the backend
INTERRUPTED_AFTER_SECONDS = 600.0
UNPOSTED_AFTER_SECONDS = 300.0  # a request still "posting" this long was left by a crash: withdrawn
# Updating a request's message: the lease outlasts the Slack call, which is cut off well before.
SYNC_LEASE_SECONDS = 30.0
SLACK_UPDATE_SECONDS = 20.0
PUBLISH_ROUNDS = 3
ESCALATION_POLL_SECONDS = 0.5  # how often the ladder looks whether the cancelled queries ended
STOP_SIGNALLING_SECONDS = 6.0  # a second step under way when the bot stops: its terminate waits 5 s
# How often an owner may free their own sessions in a minute (it is cheap to ask again).
FREES_PER_MINUTE = 3
GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


@dataclass(frozen=True)
class ApprovalRules:
    ttl_seconds: int = 3600
    required_approvals: int = 1
    allow_self_approval: bool = False
    protected_roles: tuple[str, ...] = ()
    approval_channel: str | None = None
    max_open_per_requester: int = 5


class Approvals:
    """Opening, deciding, carrying out and showing kill/cancel requests (see the module's doc)."""

    def __init__(
        self,
        *,
        signaller: Signaller,
        store: RequestStore,
        policy: Policy,
        rules: ApprovalRules,
        announcer: Announcer,
        on_audit: Callable[[], None] = lambda: None,
        bot_roles: Callable[[], Collection[str]] = frozenset,
        inline_escalation: bool = False,
        state_database: Callable[[str, str], bool] = lambda target, database: False,
    ) -> None:
        """``inline_escalation``: the ladder's grace time is waited for in the approval itself
        (the console: nothing runs between its commands); otherwise in a task of its own, and
        the housekeeper takes over what a stopped process left (``escalate``)."""
        self._signaller = signaller
        self._store = store
        self._policy = policy
        self._rules = rules
        self.announcer = announcer
        self._on_audit = on_audit
        # The bot's own login roles (targets' and state database's): never signalled.
        self._bot_roles = bot_roles
        self._inline_escalation = inline_escalation
        # Whether ``database`` on ``target``'s server is the bot's own state database (never drained).
        self._state_database = state_database
        self._escalations: set[asyncio.Task[Any]] = set()
        self._signalling: set[asyncio.Task[Any]] = set()  # past the wait: let them finish on stop

    @property
    def state_ready(self) -> bool:
        return self._store.ready

    def set_audit_hook(self, hook: Callable[[], None]) -> None:
        self._on_audit = hook

    # --- opening a request -------------------------------------------------------------------

    async def open(
        self,
        command: RequestSignal,
        identity: Identity,
        *,
        text: str,
        channel: str | None,
        per_minute: int = OPENS_PER_MINUTE,
    ) -> Result:
        """Resolve the targets now, store the request, post it for approval. Nothing is signalled.

        The request is approvable only once its message is posted (status ``posting`` until then),
        so nobody can approve what its requester may yet be told was withdrawn. Raises
        TargetUnavailableError and StateUnavailableError (the service answers those).
        """
        openings = await self._store.openings(identity.user_id)
        if openings.too_many(self._rules.max_open_per_requester) or openings.last_minute >= per_minute:
            return await self._too_many(command, identity, openings, per_minute)
        resolved = await self._resolve(command)
        if not isinstance(resolved, tuple):
            await self.record_refusal(command, identity, resolved)
            return resolved
        candidates, fills = resolved
        where = self._rules.approval_channel or channel
        posting = self.announcer.can_post and where is not None
        try:
            spared = await self._spared(command.target, command.database) if command.database else []
            request = await self._store.open_request(
                self._new_request(command, identity, candidates, fills, text=text, channel=channel, spared=spared),
                self._requested(command, identity, candidates),
                max_open=self._rules.max_open_per_requester,
                posting=posting,
                per_minute=per_minute,
            )
        except TooManyOpenRequests as exc:  # another of their requests was opened meanwhile
            return await self._too_many(command, identity, exc.openings, per_minute)
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
            log_failure(log, logging.ERROR, "request #%d posted, but that could not be recorded", request.id, exc=exc)
            self._on_audit()
            return RequestOpened(
                request, posted_in=where, unrecorded=True, withdrawn_after=timedelta(seconds=UNPOSTED_AFTER_SECONDS)
            )
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

    async def free_now(self, command: RequestSignal, identity: Identity, *, text: str) -> Result:
        """Self-service with PGCONN_SELF_SERVICE=auto: the owner's own idle sessions, ended at once.

        The same request as ``open`` makes, resolved and stored with its audit entry — stored as
        executing, decided by the owner (audited as self-service: no approver) in the same
        transaction, so nobody else ever sees it pending — then carried out with the same re-check
        in the statement that signals (pid, backend_start, role, still idle since the same
        moment; never a protected session). The caller has checked ownership."""
        openings = await self._store.openings(identity.user_id)
        if openings.too_many(self._rules.max_open_per_requester) or openings.last_minute >= FREES_PER_MINUTE:
            return await self._too_many(command, identity, openings, FREES_PER_MINUTE)
        resolved = await self._resolve(command)
        if not isinstance(resolved, tuple):
            await self.record_refusal(command, identity, resolved)
            return resolved
        candidates, fills = resolved
        requested = self._requested(command, identity, candidates)
        decided = replace(requested, event=AuditEvent.SELF_SERVICE, note=SelfServiceNote(SelfService.AUTO))
        try:
            request = await self._store.open_request(
                self._new_request(command, identity, candidates, fills, text=text, channel=None),
                requested,
                max_open=self._rules.max_open_per_requester,
                posting=False,
                per_minute=FREES_PER_MINUTE,
                executing=decided,
            )
        except TooManyOpenRequests as exc:  # another free of theirs got there first
            return await self._too_many(command, identity, exc.openings, FREES_PER_MINUTE)
        metrics.REQUESTS.labels(action=command.action.value, outcome="self_service").inc()
        log.info("request #%d: %s freed their own idle sessions %s", request.id, identity.user_id, request.pids)
        done = await self.carry_out(request, identity)
        self._on_audit()
        return Freed(done, active_left=0)

    async def _too_many(
        self, command: RequestSignal, identity: Identity, openings: Openings, per_minute: int = OPENS_PER_MINUTE
    ) -> Result:
        refused = TooManyRequests(
            tuple(openings.open_ids), self._rules.max_open_per_requester, openings.last_minute, per_minute
        )
        await self.record_refusal(command, identity, refused)
        return refused

    async def _withdraw(self, request: SignalRequest, channel: str, reason: str) -> Result:
        log.warning("request #%d could not be posted to %s: %s", request.id, channel, reason)
        current = await self._store.withdraw(
            request.id, _audit(AuditEvent.WITHDRAWN, request, note=PostFailed(channel, reason))
        )
        self._on_audit()
        if current is not None and current.status != RequestStatus.WITHDRAWN:
            # Slack said no, but a click on the message proves it got there (Slack's answer was
            # lost): it is approvable, and the requester hears the truth.
            log.warning("request #%d was posted after all (%s)", request.id, current.status)
            metrics.REQUESTS.labels(action=request.action, outcome="opened").inc()
            return RequestOpened(current, posted_in=channel)
        metrics.REQUESTS.labels(action=request.action, outcome="withdrawn").inc()
        return RequestWithdrawn(request.id, reason)

    async def record_refusal(self, command: RequestSignal, identity: Identity, why: RequestRefusal) -> None:
        """Audit a kill/cancel that was not requested (rate-limited per person: anyone can cause
        refusals, so they must not flood the trail). Never raises: the refusal has been answered."""
        metrics.REQUESTS.labels(action=command.action.value, outcome="refused").inc()
        try:
            await self._store.append_refusal(
                NewAuditEntry(
                    event=AuditEvent.REFUSED,
                    action=command.action,
                    target=command.target,
                    role_name=command.role,
                    pids=list(command.pids),
                    actor=identity.user_id,
                    requester=identity.user_id,
                    note=Refusal(why),
                    origin=identity.origin,
                )
            )
        except Exception as exc:  # the refusal itself has been answered; the log keeps the trace
            log_failure(
                log, logging.ERROR, "could not audit a refused %s by %s", command.action, identity.user_id, exc=exc
            )
            return
        self._on_audit()

    async def _resolve(self, command: RequestSignal) -> tuple[list[Candidate], list[RoleFill]] | RequestRefusal:
        """The sessions the request would signal, as they are now, or why there are none to ask for."""
        if command.scope is KillScope.DATABASE:
            return await self._resolve_drain(command)
        protection = self._protection()
        protected = self._rules.protected_roles
        if command.pids:  # kill <pids>, cancel <pids>, and an alert's pid (scope idle: still idle)
            found = await self._signaller.candidates_by_pid(command.target, command.pids, protection)
            starts, marks = dict(command.expected_starts), dict(command.expected_marks)
            refusals = [
                why
                for pid in command.pids
                if (
                    why := unsignallable(
                        pid,
                        found.get(pid),
                        protected,
                        cancel=command.action is SignalAction.CANCEL,
                        idle=command.scope is KillScope.IDLE,
                        expected_start=starts.get(pid),
                        mark=marks.get(pid),
                    )
                )
            ]
            if refusals:
                return PidsRefused(tuple(refusals), command.target)
            chosen = [found[pid] for pid in command.pids]
        else:
            assert command.role is not None
            idle_for = (command.older_than or timedelta(0)) if command.scope is KillScope.IDLE else None
            role_found = await self._signaller.candidates_of_role(command.target, command.role, idle_for, protection)
            if isinstance(role_found, RoleNotFound):
                return NoSuchRole(role_found.name, tuple(role_found.suggestions), command.target)
            info, chosen = role_found
            if info.superuser:
                return RoleRefused(info.name, RoleProtection.SUPERUSER)
            if info.name in protected:
                return RoleRefused(info.name, RoleProtection.PROTECTED)
            if refusal := next((why for c in chosen if (why := protection_of(c, protected))), None):
                return PidsRefused((refusal,), command.target)
            if not chosen:
                return NothingToDo(info.name, idle_for is not None, command.older_than, command.target)
            if any(c.backend_start is None for c in chosen):
                return DetailsHidden()
        fills: dict[str, RoleFill] = {}
        for c in chosen:
            if c.role and c.role not in fills:
                fills[c.role] = RoleFill(c.role, c.role_used, c.role_limit if c.role_limit is not None else -1)
        return chosen, list(fills.values())

    async def _resolve_drain(self, command: RequestSignal) -> tuple[list[Candidate], list[RoleFill]] | RequestRefusal:
        """A database that may be drained, and its client sessions now (protected ones included:
        the approval message names them as spared)."""
        assert command.database is not None
        database, target = command.database, command.target
        check = await self._signaller.drain_check(target, database)
        issue: DrainIssue | None = None
        others: tuple[str, ...] = ()
        if not check.exists:
            issue, others = DrainIssue.NO_SUCH_DATABASE, check.suggestions
        elif check.template:
            issue = DrainIssue.TEMPLATE
        elif self._state_database(target, database):
            issue = DrainIssue.STATE_DATABASE
        elif check.own:
            issue = DrainIssue.OWN_DATABASE
        elif not check.allows_connections or any(
            d.database == database for d in await self._store.drains_in_force(target)
        ):
            issue = DrainIssue.ALREADY_DRAINED
        elif not check.superuser and not check.installed:
            issue = DrainIssue.NOT_SET_UP
        elif not check.superuser and database not in check.drainable:
            issue, others = DrainIssue.NOT_LISTED, check.drainable
        if issue is not None:
            return DrainRefused(database, issue, target, others)
        found = await self._signaller.candidates_of_database(target, database, self._protection())
        if any(c.backend_start is None for c in found):
            return DetailsHidden()
        return [c for c in found if protection_of(c, self._rules.protected_roles) is None], []

    async def _spared(self, target: str, database: str) -> list[SparedSession]:
        """A drain's sessions that it leaves alone, and why (shown to the approver)."""
        found = await self._signaller.candidates_of_database(target, database, self._protection())
        return [
            SparedSession(c.pid, c.role, refusal.why)
            for c in found
            if (refusal := protection_of(c, self._rules.protected_roles)) is not None
        ]

    def _new_request(
        self,
        command: RequestSignal,
        identity: Identity,
        candidates: list[Candidate],
        fills: list[RoleFill],
        *,
        text: str,
        channel: str | None,
        spared: Sequence[SparedSession] = (),
    ) -> NewRequest:
        return NewRequest(
            action=command.action,
            scope=command.scope,
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
            escalate_after=command.escalate_after,
            database_name=command.database,
            drain_for=command.drain_for,
            spared=spared,
        )

    def _requested(self, command: RequestSignal, identity: Identity, candidates: list[Candidate]) -> NewAuditEntry:
        return NewAuditEntry(
            event=AuditEvent.REQUESTED,
            action=command.action,
            target=command.target,
            role_name=_role_label(c.role for c in candidates),
            pids=[c.pid for c in candidates],
            actor=identity.user_id,
            requester=identity.user_id,
            note=Reason(command.reason) if command.reason else None,
            origin=identity.origin,
        )

    async def _signal(
        self,
        request: SignalRequest,
        action: SignalAction,
        scope: KillScope,
        targets: Sequence[RequestTarget],
        *,
        same_query: bool = False,
    ) -> list[SignalAttempt]:
        """Signal ``targets`` of ``request``, each re-checked in the statement that signals it."""
        return await self._signaller.signal_backends(
            request.target,
            action=action,
            scope=scope,
            targets=targets,
            protection=self._protection(),
            wait_seconds=EXECUTION_WAIT_SECONDS,
            same_query=same_query,
        )

    def _protection(self) -> Protection:
        return Protection(self._rules.protected_roles, sorted(self._bot_roles()))

    # --- deciding ----------------------------------------------------------------------------

    async def decide(
        self, request_id: int, approve: bool, identity: Identity, *, clicked_on: tuple[str, str] | None = None
    ) -> Result:
        """A click on Approve/Deny (or ``approve N``/``deny N``), judged under the request's row
        lock; the approval that completes a request carries it out at once. ``clicked_on``:
        (channel, ts) of the message whose button was clicked, when there is one."""
        # Before the row lock, since both may ask Slack: the clicker's role, and whether those who
        # approved earlier are approvers still (an approval by someone removed since no longer counts).
        standing = await self._policy.standing(identity)
        still_approvers = await self._current_approvers(request_id)
        if clicked_on is not None:
            await self._store.adopt_message(request_id, *clicked_on)
        execute: SignalRequest | None = None
        result: Result
        async with self._store.locked(request_id) as locked:
            if locked is None:
                return DecisionRefused(request_id, DecisionIssue.NO_SUCH_REQUEST, approve)
            verdict = judge(
                locked.request,
                Clicker(identity.user_id, standing.role),
                approve=approve,
                still_approvers=still_approvers,
                allow_self_approval=self._rules.allow_self_approval,
            )
            result = await self._apply(locked, verdict, identity, approve, still_approvers)
            if isinstance(verdict, Refuse) and isinstance(result, DecisionRefused):
                result = replace(result, standing=standing)
            if isinstance(verdict, Execute):
                execute = locked.request
        self._on_audit()
        if execute is not None:
            result = Decided(await self.carry_out(execute, identity), "executed")
            self._on_audit()
        await self.publish(request_id)
        return result

    async def _apply(
        self, locked: LockedRequest, verdict: Verdict, by: Identity, approve: bool, still_approvers: Collection[str]
    ) -> Result:
        """Write what the verdict says, in the locked request's transaction."""
        request = locked.request
        match verdict:
            case Refuse(issue=issue, audit=audit):
                # Once per person and request, and rate-limited per person: anyone who sees the
                # message could click it over and over.
                if audit and not await locked.refused_before(by.user_id):
                    note = ClickRefusal(approve, issue)
                    await locked.audit_refusal(_audit(AuditEvent.CLICK_REFUSED, request, by=by, note=note))
                more = request.required_approvals - counted_approvals(request, still_approvers)
                return DecisionRefused(request.id, issue, approve, request=request, more_needed=more)
            case Expire():
                if await locked.expire():
                    await locked.audit(_audit(AuditEvent.EXPIRED, await locked.reload()))
                    metrics.DECISIONS.labels(decision="expired").inc()
                return DecisionRefused(request.id, DecisionIssue.EXPIRED, approve, request=request)
            case Deny():
                await locked.set_status(RequestStatus.DENIED, by.user_id)
                request = await locked.reload()
                _count_decision("denied", request)
                await locked.audit(_audit(AuditEvent.DENIED, request, by=by))
                return Decided(request, "denied")
            case RecordApproval(counted=counted):
                await locked.add_approval(by.user_id)
                request = await locked.reload()
                count = ApprovalCount(counted, request.required_approvals)
                await locked.audit(_audit(AuditEvent.APPROVAL, request, by=by, note=count))
                return Decided(request, "approval_recorded", approvals_counted=counted)
            case Execute():
                await locked.add_approval(by.user_id)
                await locked.set_status(RequestStatus.EXECUTING, by.user_id)
                request = await locked.reload()
                _count_decision("approved", request)
                await locked.audit(_audit(AuditEvent.APPROVED, request, by=by))
                return Decided(request, "executing")
            case _:
                assert_never(verdict)

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

    # --- carrying out -------------------------------------------------------------------------

    async def carry_out(self, request: SignalRequest, by: Identity) -> SignalRequest:
        """Signal an approved (executing) request's targets and record what became of each.

        Every target gets an outcome, whatever fails; the request as recorded (or, if the record
        failed, as it happened: the housekeeper reports it as interrupted later). A ladder
        (``cancel --escalate``) returns after its cancel step, escalating."""
        if request.escalate_after is not None and request.action is SignalAction.CANCEL:
            return await self._cancel_step(request, by)
        if request.scope is KillScope.DATABASE:
            return await self._drain(request, by)
        started = time.perf_counter()
        attempts = await self._signal(request, request.action, request.scope, request.targets)
        outcomes = [outcome_of(attempt, request.action) for attempt in attempts]
        metrics.EXECUTION_SECONDS.observe(time.perf_counter() - started)
        for o in outcomes:
            metrics.TARGET_OUTCOMES.labels(action=request.action, outcome=o.outcome).inc()
        summary = ", ".join(f"{o.pid} {o.outcome}" for o in outcomes)
        log.info("request #%d executed: %s", request.id, summary)
        try:
            return await self._store.finish(
                request.id, outcomes, _audit(AuditEvent.EXECUTED, request, by=by, note=Outcomes(tuple(outcomes)))
            )
        except Exception as exc:
            # The signals went out; only the record failed. Say what happened; the request stays
            # "executing" and is reported as interrupted by the housekeeper, with its audit entry.
            log_failure(
                log, logging.ERROR, "request #%d executed (%s) but could not be recorded", request.id, summary, exc=exc
            )
            return _with_outcomes(request, outcomes)

    # --- drain: refuse new connections, then end the database's sessions -------------------------

    async def _drain(self, request: SignalRequest, by: Identity) -> SignalRequest:
        """ALLOW_CONNECTIONS false first (and the drain recorded, so it is undrained in time even if
        this process dies now), then every client session on the database — those that came since
        the request too — terminated with the usual re-check; protected ones are spared."""
        assert request.database_name is not None and request.drain_for is not None
        started = time.perf_counter()
        database = request.database_name
        error = await self._signaller.set_allow_connections(request.target, database, False)
        targets = request.targets
        if error is None:
            try:
                await self._store.record_drain(request.target, database, request.id, request.drain_for)
                found = await self._signaller.candidates_of_database(request.target, database, self._protection())
                known = {t.pid for t in targets}
                new = [
                    c.as_target()
                    for c in found
                    if c.pid not in known
                    and c.backend_start is not None
                    and protection_of(c, self._rules.protected_roles) is None
                ]
                if new:
                    targets = (await self._store.add_targets(request.id, new)).targets
            except Exception as exc:  # the drain stands (and ends in time); its sessions are not ended
                error = first_line(exc)
                log_failure(log, logging.ERROR, "request #%d: drain of %s half done", request.id, database, exc=exc)
        if error is None:
            attempts = await self._signal(request, SignalAction.TERMINATE, KillScope.PIDS, targets)
            outcomes = [outcome_of(attempt, SignalAction.TERMINATE) for attempt in attempts]
        else:
            outcomes = [SignalOutcome(t.pid, TargetOutcome.FAILED, OutcomeNote.NOT_SIGNALLED, error) for t in targets]
        seconds = round(time.perf_counter() - started, 2)
        log.info("request #%d: drained %s in %.2fs (%s)", request.id, database, seconds, error or "ok")
        note = Outcomes(tuple(outcomes), seconds=seconds)
        try:
            return await self._store.finish(
                request.id, outcomes, _audit(AuditEvent.EXECUTED, request, by=by, note=note)
            )
        except Exception as exc:
            log_failure(log, logging.ERROR, "request #%d drained but could not be recorded", request.id, exc=exc)
            return _with_outcomes(request, outcomes)

    async def undrain(self, target: str, database: str, by: Identity | None) -> Result:
        """The database accepts connections again: ``by`` someone (at once), or its time was up."""
        drain = next((d for d in await self._store.drains_in_force(target) if d.database == database), None)
        if drain is None:
            return DrainRefused(database, DrainIssue.NOT_DRAINED, target)
        error = await self._signaller.set_allow_connections(target, database, True)
        if error is not None:
            return UndrainFailed(target, database, error)
        entry = NewAuditEntry(
            event=AuditEvent.UNDRAINED,
            request_id=drain.request_id,
            target=target,
            actor=by.user_id if by is not None else None,
            note=DrainEnded(database, early=by is not None),
            origin=by.origin if by is not None else None,
        )
        ended = await self._store.end_drain(drain.id, by.user_id if by is not None else None, entry)
        if ended is None:  # another replica (or person) did it a moment ago
            return DrainRefused(database, DrainIssue.NOT_DRAINED, target)
        self._on_audit()
        log.info("%s on %s undrained (%s)", database, target, by.user_id if by is not None else "its time was up")
        return Undrained(target, database, by.user_id if by is not None else None, ended)

    async def undrain_due(self) -> None:
        """Drains whose time is up, by whichever replica runs the housekeeping; the channel the
        request was decided in is told. One that cannot be undrained now is tried next round."""
        for drain in await self._store.due_undrains():
            result = await self.undrain(drain.target, drain.database, None)
            if isinstance(result, UndrainFailed):
                log.warning("could not undrain %s on %s: %s", drain.database, drain.target, result.reason)
                continue
            if not isinstance(result, Undrained) or not self.announcer.can_post:
                continue
            request = await self._store.get(drain.request_id) if drain.request_id is not None else None
            where = (request.channel if request is not None else None) or self._rules.approval_channel
            if where:
                try:
                    await self.announcer.post_notice(where, result)
                except Exception as exc:
                    log_failure(log, logging.WARNING, "could not tell %s about the undrain", where, exc=exc)

    async def drains_in_force(self, target: str | None = None) -> list[Drain]:
        return await self._store.drains_in_force(target) if self._store.ready else []

    # --- the ladder: cancel, wait, terminate what still runs the same query --------------------

    async def _cancel_step(self, request: SignalRequest, by: Identity) -> SignalRequest:
        attempts = await self._signal(request, SignalAction.CANCEL, request.scope, request.targets)
        outcomes = [outcome_of(attempt, SignalAction.CANCEL) for attempt in attempts]
        note = Outcomes(tuple(outcomes))
        log.info("request #%d: cancel step %s", request.id, ", ".join(f"{o.pid} {o.outcome}" for o in outcomes))
        try:
            waiting = await self._store.begin_escalation(
                request.id, outcomes, _audit(AuditEvent.ESCALATING, request, by=by, note=note)
            )
        except Exception as exc:  # cancelled, not recorded: reported as interrupted later
            log_failure(log, logging.ERROR, "request #%d: the cancel step could not be recorded", request.id, exc=exc)
            return _with_outcomes(request, outcomes)
        if waiting is None:
            return await self._store.get(request.id) or request
        self._on_audit()
        if self._inline_escalation:
            await self._wait_then_escalate(waiting)
            return await self._store.get(request.id) or waiting
        task = asyncio.create_task(self._wait_then_escalate(waiting), name=f"pgconn-escalate-{request.id}")
        self._escalations.add(task)
        task.add_done_callback(self._escalations.discard)
        return waiting

    async def _wait_then_escalate(self, request: SignalRequest) -> None:
        """Wait out the grace time (less, when every cancelled query has ended), then escalate.
        If this process stops meanwhile, the housekeeper of whichever replica runs next does."""
        assert request.escalate_at is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, (request.escalate_at - request.now).total_seconds())
        cancelled = [t for t in request.targets if t.outcome is TargetOutcome.CANCELLED]
        try:
            while cancelled and loop.time() < deadline:
                try:
                    if not await self._signaller.still_on_query(request.target, cancelled):
                        break
                except Exception as exc:  # cannot look: wait the whole grace time instead
                    log_failure(log, logging.WARNING, "request #%d: cannot watch the cancelled", request.id, exc=exc)
                await asyncio.sleep(min(ESCALATION_POLL_SECONDS, max(0.0, deadline - loop.time())))
            if (task := asyncio.current_task()) is not None:
                self._signalling.add(task)
            await self.escalate(request.id)
        except asyncio.CancelledError:
            raise  # stopping: left escalating, for the housekeeper
        except Exception as exc:
            log_failure(log, logging.ERROR, "request #%d: escalation failed", request.id, exc=exc)
        finally:
            if (task := asyncio.current_task()) is not None:
                self._signalling.discard(task)

    async def escalate(self, request_id: int) -> SignalRequest | None:
        """The ladder's second step, once across replicas: terminate the cancelled targets that
        still run the query they ran when requested (re-checked in the statement); the others
        stay connected. None when another process has it (or had it)."""
        request = await self._store.claim_escalation(request_id)
        if request is None:
            return None
        cancelled = [t for t in request.targets if t.outcome is TargetOutcome.CANCELLED]
        attempts = []
        if cancelled:
            attempts = await self._signal(request, SignalAction.TERMINATE, KillScope.PIDS, cancelled, same_query=True)
        second = {attempt.pid: escalation_outcome(attempt) for attempt in attempts}
        outcomes = [
            second.get(t.pid) or SignalOutcome(t.pid, t.outcome or TargetOutcome.FAILED, t.note, t.error)
            for t in request.targets
        ]
        log.info("request #%d escalated: %s", request.id, ", ".join(f"{o.pid} {o.outcome}" for o in outcomes))
        entry = _audit(AuditEvent.EXECUTED, request, actor=request.decided_by, note=Outcomes(tuple(outcomes)))
        try:
            finished = await self._store.finish(request.id, outcomes, entry)
        except Exception as exc:
            log_failure(log, logging.ERROR, "request #%d escalated but could not be recorded", request.id, exc=exc)
            return _with_outcomes(request, outcomes)
        self._on_audit()
        await self.publish(request.id)
        return finished

    async def stop(self) -> None:
        """Stop waiting for grace times (the requests stay escalating; any replica takes them up
        when due); a second step already signalling is let finish, briefly."""
        tasks = list(self._escalations)
        for task in tasks:
            if task not in self._signalling:
                task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_SIGNALLING_SECONDS)
        self._signalling.clear()

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
                    log_failure(
                        log, logging.WARNING, "could not update the message of request #%d", request_id, exc=exc
                    )
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
                and request.status in FINAL_STATUSES
                and self.announcer.can_post
                and await self._store.claim_requester_notice(request_id)
            ):
                try:
                    await self.announcer.tell_requester(request)
                except Exception as exc:
                    log_failure(
                        log,
                        logging.WARNING,
                        "could not tell %s about request #%d",
                        request.requester,
                        request_id,
                        exc=exc,
                    )
                    await self._store.release_requester_notice(request_id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store.release_message_sync(request_id, owner))
            raise
        except Exception as exc:
            log_failure(log, logging.WARNING, "could not publish request #%d", request_id, exc=exc)

    async def pending(self) -> Result:
        return PendingRequests(await self._store.pending())

    async def audit_trail(self, count: int) -> Result:
        return AuditTrail(await self._store.recent_audit(count), count)


def _count_decision(decision: str, request: SignalRequest) -> None:
    metrics.DECISIONS.labels(decision=decision).inc()
    metrics.DECISION_SECONDS.observe(max(0.0, (request.now - request.created_at).total_seconds()))


def _with_outcomes(request: SignalRequest, outcomes: Iterable[SignalOutcome]) -> SignalRequest:
    by_pid = {o.pid: o for o in outcomes}
    targets = tuple(
        replace(t, outcome=by_pid[t.pid].outcome, note=by_pid[t.pid].note, error=by_pid[t.pid].error)
        for t in request.targets
    )
    return replace(request, status=RequestStatus.EXECUTED, targets=targets)


def audit_for_closed(request: SignalRequest) -> NewAuditEntry:
    """The entry for a request the housekeeper closed: expired, never posted, or cut off while executing."""
    match request.status:
        case RequestStatus.EXPIRED:
            metrics.DECISIONS.labels(decision="expired").inc()
            return _audit(AuditEvent.EXPIRED, request, note=Closed(Closure.EXPIRED))
        case RequestStatus.WITHDRAWN:
            return _audit(AuditEvent.WITHDRAWN, request, note=Closed(Closure.NEVER_POSTED))
        case RequestStatus.INTERRUPTED:
            note = Closed(Closure.STOPPED_EXECUTING)
            return _audit(AuditEvent.INTERRUPTED, request, actor=request.decided_by, note=note)
    raise ValueError(f"request #{request.id} is {request.status}, not closed by the housekeeper")


def message_state(status: str, approvals: int) -> str:
    """What a request message shows, as recorded in ``shown_state`` (the same as sql._MESSAGE_STATE)."""
    return f"{status}:{approvals}"


def _audit(
    event: AuditEvent,
    request: SignalRequest,
    *,
    actor: str | None = None,
    by: Identity | None = None,
    note: AuditNote | None = None,
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
        note=note,
        message_ref=f"{request.channel}/{request.message_ts}" if request.message_ts else None,
        origin=by.origin if by is not None else None,
    )


def _role_label(roles: Iterable[str | None]) -> str | None:
    return ", ".join(sorted({r for r in roles if r})) or None
