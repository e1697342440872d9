"""Every result's document, registered here and nowhere else (both adapters call ``to_document``)."""

from __future__ import annotations

import logging
import uuid
from typing import assert_never

from bot.model.alerts import AlertHandled
from bot.model.drains import DrainRefused, Undrained, UndrainFailed
from bot.model.history import HistoryReport
from bot.model.ownership import (
    Freed,
    LinkChanged,
    LinkCodeIssued,
    LinkConfirmed,
    LinkRefused,
    MyRoles,
    NotAnOwner,
    NothingToFree,
    SelfServiceOff,
    WhoAmI,
)
from bot.model.problems import (
    AlertNotActionable,
    BadInput,
    DecisionRefused,
    DetailsHidden,
    ForeignButton,
    InternalError,
    NoSuchRole,
    NotAllowed,
    NothingToDo,
    PidsRefused,
    RequestWithdrawn,
    RoleRefused,
    StateUnavailable,
    TargetFull,
    TargetUnreachable,
    TooManyRequests,
    UnknownTarget,
)
from bot.model.results import (
    AuditTrail,
    Decided,
    HelpResult,
    LimitsOverview,
    OpenAlerts,
    PendingRequests,
    RequestOpened,
    Result,
    RoleConnections,
    RoleLimit,
    ServerStatus,
    StrayConnections,
)
from bot.render import alerts, drains, history, ownership, problems, reads, requests
from bot.render.document import Document, Tone

log = logging.getLogger(__name__)


def to_document(result: Result) -> Document:
    """What ``result`` says, for either adapter to lay out. A new result type needs a case here."""
    match result:
        case HelpResult():
            return reads.help_result_document(result)
        case RoleConnections():
            return reads.role_connections_document(result)
        case RoleLimit():
            return reads.role_limit_document(result)
        case LimitsOverview():
            return reads.limits_overview_document(result)
        case StrayConnections():
            return reads.stray_connections_document(result)
        case ServerStatus():
            return reads.server_status_document(result)
        case RequestOpened():
            return requests.request_opened_document(result)
        case Decided():
            return requests.decided_document(result)
        case PendingRequests():
            return requests.pending_requests_document(result)
        case AuditTrail():
            return requests.audit_trail_document(result)
        case OpenAlerts():
            return alerts.open_alerts_document(result)
        case HistoryReport():
            return history.history_document(result)
        case AlertHandled():
            return alerts.alert_handled_document(result)
        case WhoAmI():
            return ownership.whoami_document(result)
        case LinkCodeIssued():
            return ownership.link_code_document(result)
        case LinkChanged():
            return ownership.link_changed_document(result)
        case LinkConfirmed():
            return ownership.link_confirmed_document(result)
        case MyRoles():
            return ownership.my_roles_document(result)
        case Freed():
            return ownership.freed_document(result)
        case NothingToFree():
            return ownership.nothing_to_free_document(result)
        case Undrained():
            return drains.undrained_document(result)
        case DrainRefused() | UndrainFailed():
            return drains.drain_problem_document(result)
        case NotAnOwner() | SelfServiceOff() | LinkRefused():
            return Document(title=ownership.ownership_problem_text(result), tone=Tone.WARNING)
        case (
            BadInput()
            | NotAllowed()
            | UnknownTarget()
            | TargetUnreachable()
            | TargetFull()
            | NoSuchRole()
            | InternalError()
            | StateUnavailable()
            | AlertNotActionable()
            | ForeignButton()
            | PidsRefused()
            | RoleRefused()
            | NothingToDo()
            | DetailsHidden()
            | TooManyRequests()
            | DecisionRefused()
            | RequestWithdrawn()
        ):
            return problems.problem_document(result)
        case _:
            assert_never(result)


def render_failure(result: Result) -> InternalError:
    """What a user reads when their answer could not be laid out (the log has the traceback)."""
    reference = uuid.uuid4().hex[:8]
    log.exception("could not render %s (ref %s)", type(result).__name__, reference)
    return InternalError(reference)
