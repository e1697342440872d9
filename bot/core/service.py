"""The Slack-free core: text in, typed result out.

``CommandService.handle`` is the one path every front end takes (Slack listeners, the console):
parse (``commands.SPECS``) → authorise (the spec's role) → the handler registered for the
command's type, against the ports → a typed result that render words. Nothing here knows about
Slack, PostgreSQL or how anything is said.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, assert_never

from bot.core.alertdesk import AlertDesk
from bot.core.approvals import Approvals
from bot.core.commands import (
    Acknowledge,
    Command,
    Decide,
    FindStray,
    FreeMine,
    Help,
    LinkRole,
    ListAlerts,
    ListConnections,
    ListRequests,
    ParseError,
    RequestSignal,
    ShowAudit,
    ShowHistory,
    ShowLimit,
    ShowLimits,
    ShowMine,
    ShowStatus,
    ShowWhoAmI,
    Snooze,
    Undrain,
    UnlinkRole,
    Unsnooze,
    help_for,
    spec_of,
)
from bot.core.ownership import Ownership
from bot.core.parser import parse_command
from bot.core.policy import Policy, authorise
from bot.core.ports import AlertReader, HistoryReader, TargetCatalog
from bot.errors import log_failure
from bot.model.access import AccessRole, Identity
from bot.model.activity import Connection, RoleNotFound, ServerActivity
from bot.model.alerts import SNOOZE_CHOICES, Alert, AlertAction, AlertKind
from bot.model.errors import StateUnavailableError, TargetUnavailableError, UnknownTargetError
from bot.model.history import DEFAULT_RETENTION, DEFAULT_SINCE, HistoryReport, summarise
from bot.model.ownership import OwnedRole, SelfService
from bot.model.problems import (
    AlertIssue,
    AlertNotActionable,
    BadInput,
    ForeignButton,
    InternalError,
    NoSuchRole,
    NotAllowed,
    Problem,
    StateUnavailable,
    TargetFull,
    TargetUnreachable,
    UnknownTarget,
)
from bot.model.requests import DEFAULT_ESCALATION, KillScope, SignalAction, SignalRequest
from bot.model.results import (
    HomeView,
    LimitsOverview,
    OpenAlerts,
    PendingRequests,
    Result,
    RoleConnections,
    RoleLimit,
    ServerStatus,
    StrayConnections,
)
from bot.model.servers import Fill
from bot.model.text import query_summary

log = logging.getLogger(__name__)

LIMITS_THRESHOLD = 0.8
STATUS_HISTORY_SECONDS = 0.5  # what status waits for its sparkline (the state database may be slow)
TOP_N = 5


@dataclass(frozen=True)
class Thresholds:
    warn: float = 0.7
    critical: float = 0.9


@dataclass(frozen=True)
class Outcome:
    """A result plus what was asked, for logging and metrics."""

    command: Command | ParseError
    result: Result

    @property
    def subcommand(self) -> str:
        if isinstance(self.command, ParseError):
            return self.command.subcommand or "invalid"
        return spec_of(self.command).name

    @property
    def status(self) -> str:
        if isinstance(self.result, NotAllowed):
            return "refused"
        if isinstance(self.result, InternalError):
            return "error"
        if isinstance(self.result, Problem):
            return "problem"
        return "ok"


@dataclass(frozen=True)
class _Context:
    """What a handler may need besides the command."""

    identity: Identity
    text: str
    channel: str | None
    clicked_on: tuple[str, str] | None


class CommandService:
    """Runs commands for every front end. Its entry points (``handle``, ``decide``, ``home``,
    ``request_from_alert``) never raise: whatever goes wrong becomes a typed Problem."""

    def __init__(
        self,
        *,
        catalog: TargetCatalog,
        policy: Policy,
        thresholds: Thresholds,
        approvals: Approvals | None = None,
        alerts: AlertReader | None = None,
        monitoring: bool = False,
        show_queries: str = "approvers",
        describe_alert: Callable[[Alert], str] = lambda alert: str(alert.kind),
        history: HistoryReader | None = None,
        servers_of: Callable[[str], Sequence[str]] = lambda target: [target],
        history_retention: timedelta = DEFAULT_RETENTION,
        ownership: Ownership | None = None,
        alert_desk: AlertDesk | None = None,
    ) -> None:
        """``describe_alert``: an alert in words (render's), for the reason of a request made from it.
        ``alert_desk``: acknowledge and snooze (the state database's)."""
        self._catalog = catalog
        self._policy = policy
        self._thresholds = thresholds
        self._approvals = approvals
        self._alerts = alerts
        self._monitoring = monitoring
        self._show_queries = show_queries
        self._describe_alert = describe_alert
        self._ownership = ownership
        # The monitor's history (``history``, ``status``): kept under the name of a server's first
        # target, so a target is looked up under every target on its server (``servers_of``).
        self._history = history
        self._servers_of = servers_of
        self._history_retention = history_retention
        self._alert_desk = alert_desk
        # One handler per command type: adding a subcommand adds its handler here.
        self._handlers: dict[type[Command], Callable[[Any, _Context], Awaitable[Result]]] = {
            Help: self._help,
            ListConnections: self._list,
            ShowLimit: self._limit,
            ShowLimits: self._limits,
            FindStray: self._stray,
            ShowStatus: self._status,
            ShowHistory: self._show_history,
            RequestSignal: self._request,
            Decide: self._decide,
            ListRequests: self._pending,
            ShowAudit: self._audit,
            ListAlerts: self._open_alerts,
            Acknowledge: self._acknowledge,
            Snooze: self._snooze,
            Unsnooze: self._unsnooze,
            Undrain: self._undrain,
            ShowWhoAmI: self._whoami,
            LinkRole: self._link,
            UnlinkRole: self._unlink,
            ShowMine: self._mine,
            FreeMine: self._free,
        }

    # --- entry points -------------------------------------------------------------------------

    async def handle(self, text: str, identity: Identity, *, channel: str | None = None) -> Outcome:
        """A typed command (``/pgconn …`` or a console line). ``channel``: where it was typed (the
        approval channel when none is configured)."""
        command = parse_command(text)
        if isinstance(command, ParseError):
            return Outcome(command, BadInput(command.message, command.usage))
        return Outcome(command, await self.run_command(command, identity, text=text, channel=channel))

    async def decide(
        self, request_id: int, approve: bool, identity: Identity, *, clicked_on: tuple[str, str] | None = None
    ) -> Outcome:
        """A click on Approve or Deny: the same path as the console's ``approve N`` / ``deny N``.
        ``clicked_on``: (channel, ts) of the message clicked."""
        command = Decide(request_id=request_id, approve=approve)
        return Outcome(command, await self.run_command(command, identity, clicked_on=clicked_on))

    async def home(self, identity: Identity, note: str | None = None) -> HomeView:
        """The App Home tab. Never fails: what cannot be read is left out."""
        role = (await self._policy.standing(identity)).role
        pending: list[SignalRequest] = []
        alerts: list[Alert] = []
        if role >= AccessRole.VIEWER:
            with contextlib.suppress(Exception):
                if self._approvals is not None:
                    result = await self._approvals.pending()
                    pending = result.requests if isinstance(result, PendingRequests) else []
            with contextlib.suppress(Exception):
                alerts = await self._alerts.open_alerts() if self._alerts is not None else []
        owned: list[OwnedRole] = []
        with contextlib.suppress(Exception):
            owned = await self._ownership.owned(identity.user_id) if self._ownership is not None else []
        self_service = self._ownership.self_service if self._ownership is not None else SelfService.OFF
        return HomeView(
            identity.user_id, role.label, pending, alerts, self._monitoring, note, tuple(owned), self_service
        )

    async def free_from_button(self, target: str, identity: Identity, *, channel: str | None) -> Outcome:
        """The Free my idle connections button (``mine``, App Home): ``free`` on that target, through
        the same checks (ownership, PGCONN_SELF_SERVICE, the rate limit) and audit."""
        command = FreeMine(target=target)
        return Outcome(command, await self.run_command(command, identity, text="free (button)", channel=channel))

    async def request_from_alert(self, alert_id: int, identity: Identity, *, channel: str | None) -> Outcome:
        """The button on an alert: the matching kill/cancel request, through the same checks and audit."""
        try:
            alert = await self._alerts.get(alert_id) if self._alerts is not None and self._alerts.ready else None
        except StateUnavailableError:
            alert = None
        if alert is None:
            return Outcome(ListAlerts(), AlertNotActionable(alert_id, AlertIssue.NOT_FOUND))
        if alert.resolved_at is not None:
            return Outcome(ListAlerts(), AlertNotActionable(alert_id, AlertIssue.RESOLVED))
        about = f"alert #{alert.id}: {self._describe_alert(alert)}"
        command = command_for_alert(alert, about)
        if command is None:
            return Outcome(ListAlerts(), AlertNotActionable(alert_id, AlertIssue.NO_REQUEST))
        text = f"{spec_of(command).name} (from {about})"
        return Outcome(command, await self.run_command(command, identity, text=text, channel=channel))

    async def alert_button(
        self, action: AlertAction, alert_id: int, identity: Identity, *, choice: str | None = None
    ) -> Outcome:
        """The Acknowledge, Snooze (``choice``: one of its menu's values) and Un-snooze buttons on an
        alert: the same path as ``ack``, ``snooze`` and ``unsnooze``, the same checks and audit."""
        command: Command
        match action:
            case AlertAction.ACKNOWLEDGE:
                command = Acknowledge(alert_id=alert_id)
            case AlertAction.SNOOZE:
                snooze_for = SNOOZE_CHOICES.get(choice or "")
                if snooze_for is None:  # not a choice the menu offers: not the bot's menu
                    return Outcome(ListAlerts(), ForeignButton("alert"))
                command = Snooze(alert_id=alert_id, snooze_for=snooze_for)
            case AlertAction.UNSNOOZE:
                command = Unsnooze(alert_id=alert_id)
            case _:
                assert_never(action)
        text = f"{spec_of(command).name} {alert_id} (button)"
        return Outcome(command, await self.run_command(command, identity, text=text))

    async def run_command(
        self,
        command: Command,
        identity: Identity,
        *,
        text: str = "",
        channel: str | None = None,
        clicked_on: tuple[str, str] | None = None,
    ) -> Result:
        """Authorise ``command`` for ``identity`` and run its handler; every failure becomes a Problem."""
        spec = spec_of(command)
        # A target nobody configured is answered before anything else, and never recorded: it is
        # whatever someone typed.
        if spec.uses_target and command.target not in self._catalog.names:
            return UnknownTarget(command.target, self._catalog.names)
        # Approvers are checked inside the decision itself, where a refused click is also audited.
        role = AccessRole.NONE
        if not isinstance(command, Decide):
            standing = await self._policy.standing(identity)
            role = standing.role
            if (refused := authorise(standing, command)) is not None:
                log.info("refused %s for %s (role %s)", spec.name, identity.user_id, role.label)
                if isinstance(command, RequestSignal) and self._approvals is not None:
                    await self._approvals.record_refusal(command, identity, refused)
                return refused
        if spec.needs_state and self._approvals is None:
            return StateUnavailable(spec.name, configured=False)
        if spec.needs_state and self._approvals is not None and not self._approvals.state_ready:
            return StateUnavailable(spec.name)
        try:
            result = await self._handlers[type(command)](command, _Context(identity, text, channel, clicked_on))
            return result if self._sees_queries(role) else _without_query_text(result)
        except StateUnavailableError as exc:
            log.error("state database unavailable for %s: %s", spec.name, exc)
            return StateUnavailable(spec.name)
        except UnknownTargetError as exc:
            return UnknownTarget(exc.name, exc.known)
        except TargetUnavailableError as exc:
            return unavailable(exc)
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("command %s failed (ref %s, user %s)", spec.name, reference, identity.user_id)
            return InternalError(reference, spec.name)

    def _sees_queries(self, role: AccessRole) -> bool:
        """PGCONN_SHOW_QUERIES: other sessions' SQL text may hold passwords or personal data."""
        return self._show_queries == "everyone" or (self._show_queries == "approvers" and role >= AccessRole.APPROVER)

    # --- handlers: one per command type -------------------------------------------------------

    async def _help(self, command: Help, context: _Context) -> Result:
        return help_for(command.topic, command.unknown)

    async def _list(self, command: ListConnections, context: _Context) -> Result:
        found = await self._catalog.role_sessions(command.target, command.role)
        if isinstance(found, RoleNotFound):
            return _no_such_role(found, command.target)
        role, rows = found
        return RoleConnections(command.target, role, rows, _restricted(rows))

    async def _limit(self, command: ShowLimit, context: _Context) -> Result:
        found = await self._catalog.role_usage(command.target, command.role)
        if isinstance(found, RoleNotFound):
            return _no_such_role(found, command.target)
        role, used, database_limits = found
        owner = self._ownership is not None and await self._ownership.owns(
            context.identity.user_id, command.target, role.name
        )
        return RoleLimit(command.target, role, used, database_limits, asked_by_owner=owner)

    async def _limits(self, command: ShowLimits, context: _Context) -> Result:
        roles, databases = await self._catalog.near_limit(command.target, LIMITS_THRESHOLD)
        return LimitsOverview(command.target, roles, LIMITS_THRESHOLD, databases)

    async def _stray(self, command: FindStray, context: _Context) -> Result:
        found = await self._catalog.idle_sessions(command.target, command.role, command.min_idle)
        if isinstance(found, RoleNotFound):
            return _no_such_role(found, command.target)
        role, idle, total = found
        return StrayConnections(command.target, role, command.min_idle, idle, total, _restricted(idle))

    async def _status(self, command: ShowStatus, context: _Context) -> Result:
        status = self._summarise(command.target, await self._catalog.activity(command.target))
        if self._approvals is not None and self._approvals.state_ready:
            with contextlib.suppress(StateUnavailableError):
                status = replace(status, drains=tuple(await self._approvals.drains_in_force(command.target)))
        if status.observed_at is not None:
            fill = Fill(status.client_backends, status.usable_slots, status.max_connections, status.observed_at)
            self._catalog.remember_fill(command.target, fill)
        if self._history is not None and self._history.ready and self._history_retention:
            try:  # the last 24 hours as a sparkline; status answers without it (and never waits long for it)
                async with asyncio.timeout(STATUS_HISTORY_SECONDS):
                    history = await self._read_history(command.target, None, DEFAULT_SINCE)
                status = replace(status, history=history)
            except Exception as exc:
                log_failure(log, logging.WARNING, "status without its history", exc=exc)
        return status

    async def _show_history(self, command: ShowHistory, context: _Context) -> Result:
        if self._history is None:
            return StateUnavailable(spec_of(command).name, configured=False)
        return await self._read_history(command.target, command.role, command.since)

    async def _read_history(self, target: str, role: str | None, since: timedelta) -> HistoryReport:
        assert self._history is not None
        now, samples = await self._history.samples(self._servers_of(target), since, [role] if role else [])
        return summarise(
            samples,
            target=target,
            role=role,
            since=since,
            now=now,
            monitoring=self._monitoring,
            retention=self._history_retention,
        )

    async def _request(self, command: RequestSignal, context: _Context) -> Result:
        assert self._approvals is not None  # needs_state
        return await self._approvals.open(command, context.identity, text=context.text, channel=context.channel)

    async def _decide(self, command: Decide, context: _Context) -> Result:
        assert self._approvals is not None  # needs_state
        return await self._approvals.decide(
            command.request_id, command.approve, context.identity, clicked_on=context.clicked_on
        )

    async def _pending(self, command: ListRequests, context: _Context) -> Result:
        assert self._approvals is not None  # needs_state
        return await self._approvals.pending()

    async def _audit(self, command: ShowAudit, context: _Context) -> Result:
        assert self._approvals is not None  # needs_state
        return await self._approvals.audit_trail(command.count)

    async def _undrain(self, command: Undrain, context: _Context) -> Result:
        assert self._approvals is not None  # needs_state
        return await self._approvals.undrain(command.target, command.database, context.identity)

    async def _whoami(self, command: ShowWhoAmI, context: _Context) -> Result:
        return await self._owners().whoami(context.identity, console=context.identity.origin is not None)

    async def _link(self, command: LinkRole, context: _Context) -> Result:
        return await self._owners().link(command, context.identity)

    async def _unlink(self, command: UnlinkRole, context: _Context) -> Result:
        return await self._owners().unlink(command, context.identity)

    async def _mine(self, command: ShowMine, context: _Context) -> Result:
        return await self._owners().mine(command, context.identity)

    async def _free(self, command: FreeMine, context: _Context) -> Result:
        return await self._owners().free(command, context.identity, text=context.text, channel=context.channel)

    def _owners(self) -> Ownership:
        assert self._ownership is not None  # wired by Runtime.build in every mode
        return self._ownership

    async def _acknowledge(self, command: Acknowledge, context: _Context) -> Result:
        return await self._desk().acknowledge(command.alert_id, context.identity)

    async def _snooze(self, command: Snooze, context: _Context) -> Result:
        return await self._desk().snooze(command.alert_id, command.snooze_for, context.identity)

    async def _unsnooze(self, command: Unsnooze, context: _Context) -> Result:
        return await self._desk().unsnooze(command.alert_id, context.identity)

    def _desk(self) -> AlertDesk:
        assert self._alert_desk is not None  # wired by Runtime.build in every mode (needs_state)
        return self._alert_desk

    async def _open_alerts(self, command: ListAlerts, context: _Context) -> Result:
        if self._alerts is None:
            return StateUnavailable(spec_of(command).name, configured=False)
        return OpenAlerts(await self._alerts.open_alerts(), self._monitoring)

    def _summarise(self, target: str, activity: ServerActivity) -> ServerStatus:
        # The bot's own backends count like any other (they take slots), but are never the
        # longest query or transaction to look at.
        backends = activity.backends
        others = [conn for conn in backends if not conn.own]
        by_state = Counter(conn.state or "unknown" for conn in backends)
        active = [c for c in others if c.state == "active" and c.query_age is not None]
        idle_tx = [c for c in others if c.idle_in_transaction and c.transaction_age]
        return ServerStatus(
            target=target,
            server_version=activity.server_version,
            max_connections=activity.max_connections,
            superuser_reserved=activity.superuser_reserved,
            reserved=activity.reserved,
            client_backends=len(backends),
            by_state=dict(by_state.most_common()),
            longest_active=max(active, key=_query_age, default=None),
            longest_idle_in_transaction=max(idle_tx, key=_transaction_age, default=None),
            top_roles=Counter(c.role or "?" for c in backends).most_common(TOP_N),
            top_clients=Counter(c.client for c in backends).most_common(TOP_N),
            top_applications=Counter(c.application or "(none)" for c in backends).most_common(TOP_N),
            warn_at=self._thresholds.warn,
            critical_at=self._thresholds.critical,
            restricted=_restricted(others),
            observed_at=activity.observed_at,
            own_connections=len(backends) - len(others),
        )


def unavailable(exc: TargetUnavailableError) -> TargetUnreachable | TargetFull:
    """ "Full" when the server refused for lack of a slot (with what the bot last saw), else
    "unreachable" with libpq's reason."""
    if exc.full is None:
        return TargetUnreachable(exc.name, exc.reason)
    return TargetFull(exc.name, exc.full, exc.reason, exc.fill)


def command_for_alert(alert: Alert, reason: str) -> RequestSignal | None:
    """The kill/cancel request an alert's button makes (``reason``: the alert, described), if any."""
    if alert.kind == AlertKind.ROLE_LIMIT:
        return RequestSignal(
            action=SignalAction.TERMINATE, scope=KillScope.IDLE, role=alert.subject, reason=reason, target=alert.target
        )
    if alert.kind in (AlertKind.IDLE_IN_TRANSACTION, AlertKind.LONG_QUERY) and alert.session_pid is not None:
        pid = alert.session_pid
        cancel = alert.kind == AlertKind.LONG_QUERY
        # Idle in transaction: terminate it only while it is still idle in that transaction;
        # long query: cancel only that query.
        return RequestSignal(
            action=SignalAction.CANCEL if cancel else SignalAction.TERMINATE,
            scope=KillScope.PIDS if cancel else KillScope.IDLE,
            pids=(pid,),
            reason=reason,
            target=alert.target,
            expected_starts=_moment(pid, alert.details.get("backend_start")),
            expected_marks=_moment(pid, alert.details.get("query_start" if cancel else "xact_start")),
            # A long query: the ladder — cancel it, and terminate it if it still runs after the grace time.
            escalate_after=DEFAULT_ESCALATION if cancel else None,
        )
    return None


def _moment(pid: int, value: object) -> tuple[tuple[int, datetime], ...]:
    return ((pid, datetime.fromisoformat(value)),) if isinstance(value, str) else ()


def _query_age(conn: Connection) -> timedelta:
    return conn.query_age or timedelta(0)


def _transaction_age(conn: Connection) -> timedelta:
    return conn.transaction_age or timedelta(0)


def _summarised(conn: Connection | None) -> Connection | None:
    if conn is None or conn.query is None:
        return conn
    return replace(conn, query=query_summary(conn.query, conn.query_length))


def _without_query_text(result: Result) -> Result:
    """The result with every other session's SQL text reduced to its keyword and length."""
    match result:
        case RoleConnections() | StrayConnections():
            return replace(result, connections=[c for c in map(_summarised, result.connections) if c is not None])
        case ServerStatus():
            return replace(
                result,
                longest_active=_summarised(result.longest_active),
                longest_idle_in_transaction=_summarised(result.longest_idle_in_transaction),
            )
    return result


def _restricted(rows: list[Connection]) -> bool:
    # Without pg_read_all_stats (pg_monitor) the server hides other users' session details.
    return any(row.backend_start is None for row in rows)


def _no_such_role(found: RoleNotFound, target: str) -> NoSuchRole:
    return NoSuchRole(found.name, tuple(found.suggestions), target)
