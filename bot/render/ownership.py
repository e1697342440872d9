"""What self-service says: whoami, link codes and links, mine, free (see ``core.ownership``)."""

from __future__ import annotations

import shlex
from typing import assert_never

from bot.model.durations import format_duration
from bot.model.ownership import (
    ConnectHint,
    Freed,
    LinkChanged,
    LinkCode,
    LinkCodeIssued,
    LinkConfirmed,
    LinkIssue,
    LinkRefused,
    LinkSource,
    MyRoles,
    NotAnOwner,
    NothingToFree,
    OwnedRole,
    SelfService,
    SelfServiceOff,
    WhoAmI,
)
from bot.model.requests import SignalOutcome, TargetOutcome
from bot.render.document import (
    FREE_ACTION,
    Button,
    Document,
    Tone,
    arg,
    connection_table,
    db_flag,
    limit_phrase,
    on,
    one_line,
    plural,
    slash,
)
from bot.render.markup import mention, moment
from bot.render.requests import outcome_summary

_SOURCE = {
    LinkSource.CONFIG: "configured by the bot's administrators",
    LinkSource.LOGIN: "you proved a login",
    LinkSource.GRANTED: "linked by an approver",
}


FREE_BUTTON = "Free my idle connections"
MAX_QUERIES = 10


def _free_mode(mode: SelfService) -> str:
    match mode:
        case SelfService.OFF:
            return "Self-service is turned off here: ask an instructor or a DBA"
        case SelfService.APPROVE:
            return f"{slash('free')} asks an approver to end your roles' idle sessions"
        case SelfService.AUTO:
            return f"{slash('free')} ends your roles' idle sessions at once"
        case _:
            assert_never(mode)


def whoami_document(result: WhoAmI) -> Document:
    who = result.user_id if result.console else mention(result.user_id)
    lines = [f"Your role in the bot: {result.role.label}."]
    if result.owned:
        lines.append("You own: " + "; ".join(_owned(o) for o in result.owned) + ".")
        lines.append(_free_mode(result.self_service) + ".")
    else:
        lines.append(f"You own no database role. {slash('link <role>')} proves you can log in as one.")
    lines += [
        f"Waiting for a login as {c.role}{on(c.target)} with application_name={c.application_name} "
        f"(until {moment(c.expires_at)})."
        for c in result.pending
    ]
    return Document(title=f"You are {who}", lines=lines)


def _owned(owned: OwnedRole) -> str:
    return f"{owned.role}{on(owned.target)} ({_SOURCE[owned.source]})"


def link_code_document(result: LinkCodeIssued) -> Document:
    code = result.code
    confirm = (
        "The bot sees it within seconds and sends you a direct message; the session may end then."
        if result.watching
        else f"Then type {slash('whoami')} here: it looks for the session and links you."
    )
    return Document(
        title=f"Prove you can log in as {code.role}{on(code.target)}: your code is {code.code}",
        lines=[
            f"Valid until {moment(code.expires_at)}, once, for you and role {code.role} only. Open any session "
            f"as {code.role} with the application name {code.application_name}, for example:",
        ],
        commands=[_psql(result.hint, code)],
        notes=[
            confirm,
            "DBeaver: Edit Connection → Driver properties → ApplicationName. pgAdmin: the server's "
            "Properties → Parameters → application_name. JDBC: ApplicationName=…; libpq, psycopg: "
            "application_name=… in the connection string.",
            "Never use a code someone else gives you: it would make them an owner of your role.",
        ],
    )


def _psql(hint: ConnectHint, code: LinkCode) -> str:
    parts = [("host", hint.host), ("port", hint.port), ("dbname", hint.dbname), ("user", code.role)]
    parts.append(("application_name", code.application_name))
    conninfo = " ".join(f"{key}={_conninfo_value(value)}" for key, value in parts if value)
    return "psql " + shlex.quote(conninfo)


def _conninfo_value(value: str) -> str:
    """A libpq conninfo value: quoted when it has spaces or quotes."""
    if value and not any(ch in value for ch in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def link_changed_document(result: LinkChanged) -> Document:
    who = mention(result.user_id)
    if result.linked:
        return Document(title=f"{who} owns role {result.role}{on(result.target)} now (linked by {mention(result.by)}).")
    if result.by == result.user_id:
        return Document(title=f"You no longer own role {result.role}{on(result.target)}.")
    return Document(
        title=f"{who} no longer owns role {result.role}{on(result.target)} (unlinked by {mention(result.by)})."
    )


def link_confirmed_document(result: LinkConfirmed) -> Document:
    code = result.code
    return Document(
        title=f"Confirmed: you own role {code.role}{on(code.target)} now.",
        lines=[
            f"When you are locked out at its connection limit, {slash('free' + db_flag(code.target))} ends its "
            f"idle sessions; {slash('mine' + db_flag(code.target))} shows them."
        ],
    )


def my_roles_document(result: MyRoles) -> Document:
    title = "Your role" if len(result.roles) == 1 else f"Your {len(result.roles)} roles"
    doc = Document(title=title + on(result.target))
    rows = []
    for state in result.roles:
        role, connections = state.role, state.connections
        used = len(connections)
        summary = (
            f"{role.name}: {limit_phrase(used, role)}"
            if role.limited
            else f"{role.name}: {plural(used, 'connection')} — no limit"
        )
        extras = []
        if state.idle:
            extras.append(f"{len(state.idle)} idle (what {slash('free')} would end)")
        if state.active:
            extras.append(f"{state.active} active")
        doc.lines.append(summary + (" · " + ", ".join(extras) if extras else ""))
        rows += connections
    if rows:
        doc.table = connection_table(rows)
    # Your own sessions' statements: what each is running, or ran last.
    doc.lines += [f"{c.pid} ({c.state or '?'}): {one_line(c.query)}" for c in rows if c.query and not c.own][
        :MAX_QUERIES
    ]
    doc.lines += [
        f"Role {name}{on(result.target)} is not there, or is not the role you linked (made again since): "
        f"{slash('link ' + arg(name) + db_flag(result.target))} if it is yours."
        for name in result.missing
    ]
    doc.lines += [f"Role {name} is a superuser or protected role: never self-service." for name in result.refused]
    if any(s.idle for s in result.roles) and result.self_service is not SelfService.OFF:
        doc.commands = [slash("free" + db_flag(result.target))]
        doc.commands_intro = _free_mode(result.self_service) + ":"
    if result.self_service is not SelfService.OFF:
        doc.buttons.append(Button(FREE_BUTTON, FREE_ACTION, result.target))
    if any(s.role.logins_disabled for s in result.roles):
        doc.notes.append("A role with CONNECTION LIMIT 0 has logins disabled: freeing sessions does not change that.")
    if result.restricted:
        doc.notes.append("The bot's database role cannot see some sessions' details (pg_monitor).")
    if any(s.role.limited and len(s.connections) >= s.role.connection_limit for s in result.roles):
        doc.tone = Tone.WARNING
    return doc


def freed_document(result: Freed) -> Document:
    request = result.request
    outcomes = [SignalOutcome(t.pid, t.outcome, t.note, t.error) for t in request.targets if t.outcome is not None]
    ended = sum(1 for o in outcomes if o.outcome is TargetOutcome.TERMINATED)
    lines = [outcome_summary(outcomes) + "."]
    lines += _active_left(result.active_left)
    return Document(
        title=f"Freed: {plural(ended, 'idle session')} of yours ended{on(request.target)} (request #{request.id})",
        lines=lines,
        tone=Tone.INFO if ended == len(outcomes) else Tone.WARNING,
    )


def nothing_to_free_document(result: NothingToFree) -> Document:
    older = f" idle for {format_duration(result.older_than)} or more" if result.older_than else ""
    roles = ", ".join(result.roles) or "your roles"
    return Document(
        title=f"Nothing to free: {roles} has no idle sessions{older}{on(result.target)}.",
        lines=_active_left(result.active_left),
    )


def _active_left(count: int) -> list[str]:
    if not count:
        return []
    return [
        f"{plural(count, 'active session')} left alone: {slash('free')} never ends a running query; "
        f"{slash('kill <pid>')} asks an approver."
    ]


def ownership_problem_text(problem: NotAnOwner | SelfServiceOff | LinkRefused) -> str:
    match problem:
        case NotAnOwner(subcommand=name, target=target):
            return (
                f"{name}: you own no database role{on(target)}. {slash('link <role>' + db_flag(target))} proves you "
                "can log in as one (an approver can link you too)."
            )
        case SelfServiceOff():
            return (
                "Self-service is turned off here (PGCONN_SELF_SERVICE=off): ask an instructor or a DBA, or "
                f"{slash('kill')} with an approval."
            )
        case LinkRefused(role=role, issue=issue, user_id=user, target=target):
            return _link_refused(role, issue, user, target)
        case _:
            assert_never(problem)


def _link_refused(role: str, issue: LinkIssue, user: str | None, target: str) -> str:
    who = mention(user) if user else "you"
    match issue:
        case LinkIssue.NOT_LINKED:
            return f"{who} had no link to role {role}{on(target)}; nothing changed."
        case LinkIssue.CONFIGURED:
            return (
                f"{who} own{'s' if user else ''} role {role}{on(target)} by the bot's configuration "
                "(PGCONN_ROLE_OWNERS), not by a link: ask its administrators."
            )
        case LinkIssue.NEEDS_APPROVER:
            return f"Only approvers link or unlink someone else; {arg(role)} was left as it was."
        case LinkIssue.PROTECTED:
            return f"Role {role}{on(target)} is a superuser or protected role: it is never self-service."
        case LinkIssue.TOO_MANY_CODES:
            return f"You have link codes waiting already: use one (see {slash('whoami')}), or wait until they expire."
        case LinkIssue.NOT_A_USER:
            return f"{user!r} is not a Slack user: mention them (@name) or give their member ID (U…)."
        case _:
            assert_never(issue)
