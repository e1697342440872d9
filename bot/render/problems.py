"""What the bot says when it cannot do what was asked: one sentence per kind of Problem, with
what to do about it."""

from __future__ import annotations

from typing import assert_never

from bot.model.access import MAX_UNCONFIRMED_SECONDS, AccessRole, Standing
from bot.model.durations import spell_duration
from bot.model.problems import (
    AlertIssue,
    AlertNotActionable,
    BadInput,
    DecisionIssue,
    DecisionRefused,
    DetailsHidden,
    ForeignButton,
    InternalError,
    NoSuchRole,
    NotAllowed,
    NothingToDo,
    PidRefusal,
    PidsRefused,
    ProblemResult,
    RequestWithdrawn,
    RoleProtection,
    RoleRefused,
    StateUnavailable,
    TargetFull,
    TargetUnreachable,
    TooManyRequests,
    UnknownTarget,
    Unsignallable,
)
from bot.model.requests import RequestStatus, SignalRequest
from bot.model.servers import Fullness
from bot.model.text import shorten
from bot.render.document import Document, Tone, as_typed, on, plural, slash
from bot.render.markup import mention, moment

_NOT_A_MEMBER = ("not_in_channel", "channel_not_found", "is_archived")


def problem_document(problem: ProblemResult) -> Document:
    usage = problem.usage if isinstance(problem, BadInput) else None
    return Document(
        title=problem_text(problem),
        lines=[f"Usage: {as_typed(usage)}"] if usage else [],
        tone=Tone.WARNING if isinstance(problem, NotAllowed) else Tone.PROBLEM,
    )


def problem_text(problem: ProblemResult) -> str:
    """The sentence that says what went wrong (and, where it helps, what to do)."""
    match problem:
        case BadInput(message=message):
            return as_typed(message)
        case NotAllowed(subcommand=name, needed=needed, standing=standing):
            note = unconfirmed_note(standing) or " Ask the bot's administrators to add you."
            return f"Sorry, {slash(name)} needs the {needed.label} role and you have {_have(standing.role)}.{note}"
        case UnknownTarget(name=name, known=known):
            return f"unknown target {shorten(name, 30)!r}; known targets: {', '.join(known)}"
        case TargetUnreachable(target=target, reason=reason):
            return f"target {target} is unreachable: {reason}"
        case TargetFull():
            return _full(problem)
        case NoSuchRole(name=name, suggestions=suggestions, target=target):
            text = f"no role named {shorten(name)!r}{on(target)}"
            if suggestions:
                text += "; did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
            return text
        case InternalError(reference=reference, subcommand=name):
            doing = f"running {name}" if name else "preparing this answer"
            return f"Something went wrong while {doing} (ref {reference}); the details are in the bot's log."
        case StateUnavailable(subcommand=name, created=False):
            return (
                f"Nothing recorded yet: {name} reads the bot's state (schema pgconn), which the first "
                "kill or cancel creates."
            )
        case StateUnavailable(subcommand=name, configured=True):
            return (
                f"{name} needs the bot's state database (PGCONN_STATE_URL), which is not answering; "
                "nothing was changed. Try again shortly."
            )
        case StateUnavailable(subcommand=name):
            return f"{name} needs the bot's state database, which is not set up in this mode."
        case AlertNotActionable(alert_id=alert_id, issue=issue):
            return _alert_issue(alert_id, issue)
        case RequestWithdrawn(request_id=request_id, reason=reason):
            hint = (
                " Invite the bot to that channel (/invite @pgconn-bot), or ask the admins to set "
                "PGCONN_APPROVAL_CHANNEL."
                if reason in _NOT_A_MEMBER
                else " Try again in a moment."
            )
            return (
                f"Request #{request_id} could not be posted for approval ({reason}), so it was withdrawn; "
                f"nothing was signalled.{hint}"
            )
        case ForeignButton(kind=kind):
            return f"This button does not belong to a pgconn-bot {kind}."
        case PidsRefused(refusals=refusals, target=target):
            return "Nothing was requested: " + "; ".join(pid_refusal_text(r, target) for r in refusals) + "."
        case RoleRefused(role=role, why=RoleProtection.SUPERUSER):
            return f"Nothing was requested: {role} is a superuser; superusers' sessions are protected."
        case RoleRefused(role=role):
            return f"Nothing was requested: {role} is a protected role (PGCONN_PROTECTED_ROLES)."
        case NothingToDo(role=role, idle=idle, older_than=older, target=target):
            what = "idle connections" if idle else "connections"
            if older:
                what += f" idle for {spell_duration(older)} or more"
            return f"Nothing to do: {role} has no {what}{on(target)}."
        case DetailsHidden():
            return (
                "Nothing was requested: the bot cannot see these sessions' details (grant it pg_monitor), "
                "so it could not make sure it signals the right ones."
            )
        case TooManyRequests(open_ids=open_ids, limit=limit, last_minute=last_minute, per_minute=per_minute):
            if len(open_ids) < limit:  # not too many open: too many opened just now
                return (
                    f"Nothing was requested: you opened {plural(last_minute, 'request')} in the last minute, "
                    f"the most one person may ({per_minute}). Try again in a minute."
                )
            listed = ", ".join(f"#{i}" for i in open_ids[:10])
            return (
                f"Nothing was requested: you already have {plural(len(open_ids), 'open request')} ({listed}), the most "
                f"one person may have at a time (PGCONN_MAX_PENDING_PER_USER={limit}). "
                "Wait for a decision on them, or let them expire."
            )
        case DecisionRefused():
            return decision_text(problem)
        case _:
            assert_never(problem)


def pid_refusal_text(refusal: PidRefusal, target: str) -> str:
    """Why one pid may not be asked for."""
    pid, role, via = refusal.pid, refusal.role, refusal.via
    match refusal.why:
        case Unsignallable.NOT_FOUND:
            return f"pid {pid} is not a session{on(target) or ' on this server'} (it may have ended)"
        case Unsignallable.OTHER_SESSION:
            return f"pid {pid} now belongs to a different session than the one the alert was about"
        case Unsignallable.NOT_IDLE_IN_IT:
            return f"pid {pid} is no longer idle in the transaction the alert was about"
        case Unsignallable.QUERY_ENDED:
            return f"pid {pid} is no longer running the query the alert was about"
        case Unsignallable.OWN:
            return f"pid {pid} is pgconn-bot's own connection"
        case Unsignallable.NOT_CLIENT:
            return f"pid {pid} is a {refusal.detail or 'server process'}, not a client session"
        case Unsignallable.SUPERUSER:
            return f"pid {pid} belongs to superuser {role}; superusers' sessions are protected"
        case Unsignallable.SUPERUSER_MEMBER:
            return f"pid {pid} belongs to {role}, a member of superuser role {via}; superusers' sessions are protected"
        case Unsignallable.PROTECTED_ROLE:
            return f"pid {pid} belongs to {role}, a protected role"
        case Unsignallable.PROTECTED_MEMBER:
            return f"pid {pid} belongs to {role}, a member of protected role {via}"
        case Unsignallable.NO_QUERY:
            state = refusal.detail or "not running a query"
            return f"pid {pid} is {state}: there is no query to cancel (kill ends the session)"
        case Unsignallable.HIDDEN:
            return (
                f"the bot cannot see the details of pid {pid} (grant it pg_monitor), "
                "so it could not make sure it signals the right session"
            )
        case _:
            assert_never(refusal.why)


def decision_text(problem: DecisionRefused) -> str:
    """Why a click on Approve/Deny changed nothing."""
    number, verb = problem.request_id, "approve" if problem.approve else "deny"
    match problem.issue:
        case DecisionIssue.NO_SUCH_REQUEST:
            return f"There is no request #{number}."
        case DecisionIssue.NOT_APPROVER:
            standing = problem.standing or Standing(AccessRole.NONE)
            return (
                f"Sorry, only approvers can {verb} requests, and you have {_have(standing.role)}."
                f"{unconfirmed_note(standing)} Request #{number} is unchanged."
            )
        case DecisionIssue.STILL_POSTING:
            return f"Request #{number} is still being posted for approval; try again in a moment."
        case DecisionIssue.ALREADY_DECIDED:
            return _already_decided(problem.request) if problem.request else f"Request #{number} was already decided."
        case DecisionIssue.EXPIRED:
            when = f" at {moment(problem.request.expires_at)}" if problem.request else ""
            return f"Request #{number} expired{when}; nothing was done. Ask again if it is still needed."
        case DecisionIssue.OWN_REQUEST:
            return f"You asked for request #{number}, so another approver has to approve it."
        case DecisionIssue.ALREADY_APPROVED:
            return (
                f"You have already approved request #{number}; it needs "
                f"{plural(problem.more_needed, 'more approval')} from other approvers."
            )
        case _:
            assert_never(problem.issue)


def _already_decided(request: SignalRequest) -> str:
    who = f" by {mention(request.decided_by)}" if request.decided_by else ""
    when = f" at {moment(request.decided_at)}" if request.decided_at else ""
    match request.status:
        case RequestStatus.EXECUTING | RequestStatus.ESCALATING | RequestStatus.EXECUTED | RequestStatus.INTERRUPTED:
            return f"Request #{request.id} was already approved{who}{when}."
        case RequestStatus.DENIED:
            return f"Request #{request.id} was already denied{who}{when}."
        case RequestStatus.EXPIRED:
            return f"Request #{request.id} expired{when}; nothing was done."
        case RequestStatus.WITHDRAWN | RequestStatus.POSTING | RequestStatus.PENDING:
            return f"Request #{request.id} was withdrawn; nothing was done."
        case _:
            assert_never(request.status)


def _have(role: AccessRole) -> str:
    return "no access" if role is AccessRole.NONE else f"the {role.label} role"


def unconfirmed_note(standing: Standing) -> str:
    """Why a group someone may belong to counts for nothing right now ("" if none)."""
    if not standing.unconfirmed:
        return ""
    groups = ("user group " if len(standing.unconfirmed) == 1 else "user groups ") + ", ".join(standing.unconfirmed)
    return (
        f" Membership of {groups} could not be confirmed with Slack for over "
        f"{round(MAX_UNCONFIRMED_SECONDS / 60)} minutes, so it grants nothing until Slack answers again; "
        "try again shortly."
    )


def _full(problem: TargetFull) -> str:
    match problem.full:
        case Fullness.SERVER:
            who = "every connection slot of the server is taken"
        case Fullness.ROLE:
            who = "the bot's database role is at its CONNECTION LIMIT"
        case Fullness.DATABASE:
            who = "the database is at its CONNECTION LIMIT"
        case _:
            assert_never(problem.full)
    seen = ""
    if (fill := problem.fill) is not None:
        seen = (
            f" The bot last saw {fill.client_backends} of {fill.usable_slots} usable slots in use "
            f"(max_connections {fill.max_connections}) {moment(fill.observed_at)}."
        )
    return (
        f"target {problem.target} is full: {who}, so the bot cannot get in ({problem.reason}).{seen} "
        "It keeps trying and gets in as soon as a slot frees."
    )


def _alert_issue(alert_id: int, issue: AlertIssue) -> str:
    match issue:
        case AlertIssue.NOT_FOUND:
            return f"There is no alert #{alert_id} (or the state database is down)."
        case AlertIssue.RESOLVED:
            return f"Alert #{alert_id} is resolved; there is nothing to clean up."
        case AlertIssue.NO_REQUEST:
            return f"Alert #{alert_id} has no request to offer."
        case _:
            assert_never(issue)
