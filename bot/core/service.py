"""The Slack-free core: text in, result object out.

``CommandService.handle`` is the one path every front end uses (Slack listeners, the console):
parse → authorise → execute against PostgreSQL → result. Nothing here knows about Slack.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from bot.core.approvals import Approvals
from bot.core.commands import (
    AccessRole,
    Command,
    Decide,
    FindStray,
    Help,
    KillScope,
    ListAlerts,
    ListConnections,
    ListRequests,
    ParseError,
    RequestSignal,
    ShowAudit,
    ShowLimit,
    ShowLimits,
    ShowStatus,
    SignalAction,
)
from bot.core.markup import moment
from bot.core.parser import parse_command, shorten
from bot.core.policy import Identity, Policy, refusal_message
from bot.core.results import (
    Alert,
    AlertKind,
    Connection,
    HelpResult,
    HomeView,
    InternalError,
    LimitsOverview,
    NoSuchRole,
    OpenAlerts,
    PendingRequests,
    Problem,
    Refused,
    Result,
    RoleConnections,
    RoleInfo,
    RoleLimit,
    ServerStatus,
    SignalRequest,
    StateUnavailable,
    StrayConnections,
    TargetFull,
    TargetUnreachable,
    UnknownTarget,
)
from bot.core.text import query_summary
from bot.db import catalog
from bot.db.alerts import AlertStore
from bot.db.targets import Conn, Fill, TargetPools, TargetUnavailableError, UnknownTargetError

log = logging.getLogger(__name__)

LIMITS_THRESHOLD = 0.8
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
        return self.command.name

    @property
    def status(self) -> str:
        if isinstance(self.result, Refused):
            return "refused"
        if isinstance(self.result, InternalError):
            return "error"
        if isinstance(self.result, Problem):
            return "problem"
        return "ok"


class CommandService:
    def __init__(
        self,
        *,
        targets: TargetPools,
        policy: Policy,
        thresholds: Thresholds,
        approvals: Approvals | None = None,
        alerts: AlertStore | None = None,
        monitoring: bool = False,
        show_queries: str = "approvers",
    ) -> None:
        self._targets = targets
        self._policy = policy
        self._thresholds = thresholds
        self._approvals = approvals
        self._alerts = alerts
        self._monitoring = monitoring
        self._show_queries = show_queries

    @property
    def approvals(self) -> Approvals | None:
        return self._approvals

    async def handle(self, text: str, identity: Identity, *, channel: str | None = None) -> Outcome:
        """``channel``: where the command was typed (the approval channel when none is configured)."""
        command = parse_command(text)
        if isinstance(command, ParseError):
            return Outcome(command, Problem(command.message, command.usage))
        return Outcome(command, await self.execute(command, identity, text=text, channel=channel))

    async def decide(
        self, request_id: int, approve: bool, identity: Identity, *, clicked_on: tuple[str, str] | None = None
    ) -> Outcome:
        """A click on Approve or Deny: the same path as the console's ``approve N`` / ``deny N``."""
        command = Decide(request_id=request_id, approve=approve, name="approve" if approve else "deny")
        return Outcome(command, await self.execute(command, identity, clicked_on=clicked_on))

    async def home(self, identity: Identity, note: str | None = None) -> HomeView:
        """The App Home tab. Never fails: what cannot be read is left out."""
        role = await self._policy.role_of(identity)
        pending: list[SignalRequest] = []
        alerts: list[Alert] = []
        if role >= AccessRole.VIEWER:
            with contextlib.suppress(Exception):
                if self._approvals is not None:
                    result = await self._approvals.pending()
                    pending = result.requests if isinstance(result, PendingRequests) else []
            with contextlib.suppress(Exception):
                alerts = await self._alerts.open_alerts() if self._alerts is not None else []
        return HomeView(identity.user_id, role.label, pending, alerts, self._monitoring, note)

    async def request_from_alert(self, alert_id: int, identity: Identity, *, channel: str | None) -> Outcome:
        """The button on an alert: the matching kill/cancel request, through the same checks and audit."""
        try:
            alert = await self._alerts.get(alert_id) if self._alerts is not None and self._alerts.ready else None
        except (PoolTimeout, psycopg.OperationalError):
            alert = None
        if alert is None:
            return Outcome(ListAlerts(), Problem(f"There is no alert #{alert_id} (or the state database is down)."))
        if alert.resolved_at is not None:
            return Outcome(ListAlerts(), Problem(f"Alert #{alert_id} is resolved; there is nothing to clean up."))
        command = command_for_alert(alert)
        if command is None:
            return Outcome(ListAlerts(), Problem(f"Alert #{alert_id} has no request to offer."))
        text = f"{command.name} (from alert #{alert.id}: {alert.summary})"
        return Outcome(command, await self.execute(command, identity, text=text, channel=channel))

    async def execute(
        self,
        command: Command,
        identity: Identity,
        *,
        text: str = "",
        channel: str | None = None,
        clicked_on: tuple[str, str] | None = None,
    ) -> Result:
        # A target nobody configured is answered before anything else, and never recorded: it is
        # whatever someone typed.
        if command.uses_target and command.target not in self._targets.names:
            return _unknown_target(command.target, self._targets.names)
        # Approvers are checked inside the decision itself, where a refused click is also audited.
        role = AccessRole.NONE
        if not isinstance(command, Decide):
            allowed, standing = await self._policy.permits(identity, command)
            role = standing.role
            if not allowed:
                log.info("refused %s for %s (role %s)", command.name, identity.user_id, role.label)
                message = refusal_message(command, standing)
                if isinstance(command, RequestSignal) and self._approvals is not None:
                    await self._approvals.record_refusal(command, identity, f"{role.label} may not request this")
                return Refused(message)
        try:
            result = await self._dispatch(command, identity, text, channel, clicked_on)
            return result if self._sees_queries(role) else _without_query_text(result)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            # Target errors arrive as TargetUnavailableError; these come from the state database.
            log.error("state database unavailable for %s: %s", command.name, exc)
            return _state_unavailable(command.name)
        except UnknownTargetError as exc:
            return _unknown_target(exc.name, exc.known)
        except TargetUnavailableError as exc:
            return unavailable(exc)
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("command %s failed (ref %s, user %s)", command.name, reference, identity.user_id)
            return InternalError(
                f"Something went wrong while running {command.name} (ref {reference}); "
                "the details are in the bot's log."
            )

    async def _dispatch(
        self,
        command: Command,
        identity: Identity,
        text: str,
        channel: str | None,
        clicked_on: tuple[str, str] | None,
    ) -> Result:
        match command:
            case Help(topic=topic):
                return HelpResult(topic)
            case ListConnections():
                return await self._list(command)
            case ShowLimit():
                return await self._limit(command)
            case ShowLimits():
                return await self._limits(command)
            case FindStray():
                return await self._stray(command)
            case ShowStatus():
                return await self._status(command)
        if self._approvals is None:
            return StateUnavailable(f"{command.name} needs the bot's state database, which is not set up in this mode.")
        if not self._approvals.state_ready:
            return _state_unavailable(command.name)
        match command:
            case RequestSignal():
                return await self._approvals.open(command, identity, text=text, channel=channel)
            case Decide(request_id=request_id, approve=approve):
                return await self._approvals.decide(request_id, approve, identity, clicked_on=clicked_on)
            case ListRequests():
                return await self._approvals.pending()
            case ShowAudit(count=count):
                return await self._approvals.audit_trail(count)
            case ListAlerts() if self._alerts is not None:
                return OpenAlerts(await self._alerts.open_alerts(), self._monitoring)
        return Problem(f"{command.name} is not available in this version of pgconn-bot yet.")

    def _sees_queries(self, role: AccessRole) -> bool:
        """PGCONN_SHOW_QUERIES: other sessions' SQL text may hold passwords or personal data."""
        return self._show_queries == "everyone" or (self._show_queries == "approvers" and role >= AccessRole.APPROVER)

    # --- read path -------------------------------------------------------------------------

    async def _for_role(
        self, target: str, role_name: str, work: Callable[[Conn, int, RoleInfo], Coroutine[Any, Any, Result]]
    ) -> Result:
        """Resolve the role via pg_roles first, so an unknown role is told apart from an idle one."""

        async def resolve(conn: Conn) -> Result:
            match = await catalog.find_role(conn, role_name)
            if match.info is None or match.oid is None:
                return _no_such_role(role_name, match.suggestions, target)
            return await work(conn, match.oid, match.info)

        return await self._targets.run(target, resolve)

    async def _list(self, command: ListConnections) -> Result:
        async def work(conn: Conn, oid: int, role: RoleInfo) -> Result:
            rows = await catalog.role_connections(conn, oid)
            return RoleConnections(command.target, role, rows, _restricted(rows))

        return await self._for_role(command.target, command.role, work)

    async def _limit(self, command: ShowLimit) -> Result:
        async def work(conn: Conn, oid: int, role: RoleInfo) -> Result:
            used, database_limits = await catalog.role_usage(conn, oid)
            return RoleLimit(command.target, role, used, database_limits)

        return await self._for_role(command.target, command.role, work)

    async def _limits(self, command: ShowLimits) -> Result:
        async def work(conn: Conn) -> Result:
            roles = await catalog.roles_near_limit(conn, LIMITS_THRESHOLD)
            return LimitsOverview(command.target, roles, LIMITS_THRESHOLD)

        return await self._targets.run(command.target, work)

    async def _stray(self, command: FindStray) -> Result:
        async def work(conn: Conn, oid: int, role: RoleInfo) -> Result:
            idle = await catalog.role_idle_connections(conn, oid, command.min_idle)
            total, _ = await catalog.role_usage(conn, oid)
            return StrayConnections(command.target, role, command.min_idle, idle, total, _restricted(idle))

        return await self._for_role(command.target, command.role, work)

    async def _status(self, command: ShowStatus) -> Result:
        async def work(conn: Conn) -> ServerStatus:
            settings = await catalog.server_settings(conn)
            backends = await catalog.client_backends(conn)
            return self._summarise(command.target, settings, backends)

        status = await self._targets.run(command.target, work)
        if status.observed_at is not None:
            self._targets.remember_fill(
                command.target,
                Fill(status.client_backends, status.usable_slots, status.max_connections, status.observed_at),
            )
        return status

    def _summarise(
        self, target: str, settings: catalog.Settings, backends: list[tuple[Connection, bool]]
    ) -> ServerStatus:
        others = [conn for conn, own in backends if not own]
        by_state = Counter(conn.state or "unknown" for conn, _ in backends)
        active = [c for c in others if c.state == "active" and c.query_age is not None]
        idle_tx = [c for c in others if c.state and c.state.startswith("idle in transaction") and c.transaction_age]
        return ServerStatus(
            target=target,
            server_version=settings.server_version,
            max_connections=settings.max_connections,
            superuser_reserved=settings.superuser_reserved,
            reserved=settings.reserved,
            client_backends=len(backends),
            by_state=dict(by_state.most_common()),
            longest_active=max(active, key=_query_age, default=None),
            longest_idle_in_transaction=max(idle_tx, key=_transaction_age, default=None),
            top_roles=Counter(c.role or "?" for c, _ in backends).most_common(TOP_N),
            top_clients=Counter(c.client for c, _ in backends).most_common(TOP_N),
            top_applications=Counter(c.application or "(none)" for c, _ in backends).most_common(TOP_N),
            warn_at=self._thresholds.warn,
            critical_at=self._thresholds.critical,
            restricted=_restricted(others),
            observed_at=settings.observed_at,
        )


def unavailable(exc: TargetUnavailableError) -> Problem:
    """ "Full" when the server refused for lack of a slot (with what the bot last saw), else
    "unreachable" with libpq's reason."""
    if exc.full is None:
        return TargetUnreachable(f"target {exc.name} is unreachable: {exc.reason}")
    who = {
        "server": "every connection slot of the server is taken",
        "role": "the bot's database role is at its CONNECTION LIMIT",
        "database": "the database is at its CONNECTION LIMIT",
    }[exc.full]
    seen = ""
    if exc.fill is not None:
        seen = (
            f" The bot last saw {exc.fill.client_backends} of {exc.fill.usable_slots} usable slots in use "
            f"(max_connections {exc.fill.max_connections}) {moment(exc.fill.observed_at)}."
        )
    return TargetFull(
        f"target {exc.name} is full: {who}, so the bot cannot get in ({exc.reason}).{seen} "
        "It keeps trying and gets in as soon as a slot frees."
    )


def _state_unavailable(name: str) -> StateUnavailable:
    return StateUnavailable(
        f"{name} needs the bot's state database (PGCONN_STATE_URL), which is not answering; "
        "nothing was changed. Try again shortly."
    )


def _unknown_target(name: str, known: list[str]) -> UnknownTarget:
    return UnknownTarget(f"unknown target {shorten(name, 30)!r}; known targets: {', '.join(known)}")


def command_for_alert(alert: Alert) -> RequestSignal | None:
    reason = f"alert #{alert.id}: {alert.summary}"
    if alert.kind == AlertKind.ROLE_LIMIT:
        return RequestSignal(
            action=SignalAction.TERMINATE, scope=KillScope.IDLE, role=alert.subject, reason=reason, target=alert.target
        )
    if alert.kind in (AlertKind.IDLE_IN_TRANSACTION, AlertKind.LONG_QUERY):
        pid = int(alert.subject.split(":")[0])
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
            name="cancel" if cancel else "kill",
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


def _no_such_role(name: str, suggestions: list[str], target: str) -> NoSuchRole:
    where = "" if target == "default" else f" on target {target}"
    message = f"no role named {shorten(name)!r}{where}"
    if suggestions:
        message += "; did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
    return NoSuchRole(message)
