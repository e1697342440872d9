"""What draining says: refusals, the undrain, and the lines status and requests add."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import assert_never

from bot.model.drains import Drain, DrainIssue, DrainRefused, Undrained, UndrainFailed
from bot.model.durations import format_duration
from bot.model.problems import Unsignallable
from bot.model.requests import SignalRequest, SparedSession
from bot.render.document import Document, Tone, db_flag, on, plural, slash
from bot.render.markup import mention, moment, strip


def drain_refused_text(problem: DrainRefused) -> str:
    db, where, others = problem.database, on(problem.target), ", ".join(problem.others)
    match problem.issue:
        case DrainIssue.NO_SUCH_DATABASE:
            return f"There is no database named {db!r}{where}." + (f" Did you mean {others}?" if others else "")
        case DrainIssue.TEMPLATE:
            return f"{db} is a template database: nobody connects to it to drain."
        case DrainIssue.STATE_DATABASE:
            return f"{db} holds the bot's own state (PGCONN_STATE_URL): draining it would stop the bot and its audit."
        case DrainIssue.OWN_DATABASE:
            return (
                f"{db} is the database the bot's connection to this target uses: once drained, the bot could "
                f"not get back in to undrain it. Configure a target on this server that connects to another "
                f"database (PGCONN_TARGETS) and drain with {slash('drain ' + db + ' --db <that target>')}."
            )
        case DrainIssue.ALREADY_DRAINED:
            return f"{db}{where} is drained already (it accepts no new connections); {slash('undrain ' + db)} ends it."
        case DrainIssue.NOT_SET_UP:
            return (
                "The bot may not change ALLOW_CONNECTIONS here. A superuser runs, once, the SQL of "
                f"`pgconn-bot setup-sql --drain {db}` in the database this target connects to."
            )
        case DrainIssue.NOT_LISTED:
            allowed = f" It may drain: {others}." if others else ""
            return (
                f"{db} is not among the databases the bot may drain.{allowed} A superuser adds it by running "
                f"the SQL of `pgconn-bot setup-sql --drain {db}` again, with the others."
            )
        case DrainIssue.NOT_DRAINED:
            return f"{db}{where} is not drained by the bot; nothing changed."
        case _:
            assert_never(problem.issue)


def undrain_failed_text(problem: UndrainFailed) -> str:
    return f"{problem.database}{on(problem.target)} could not be undrained: {problem.reason}. It is tried again."


def undrained_document(result: Undrained) -> Document:
    who = f"undrained by {mention(result.by)}" if result.by else "its drain time was up"
    return Document(
        title=f"{result.database}{on(result.target)} accepts connections again ({who}).",
        lines=[f"Drained {moment(result.drain.drained_at)}" + _request(result.drain) + "."],
    )


def _request(drain: Drain) -> str:
    return f" by request #{drain.request_id}" if drain.request_id is not None else ""


def drain_lines(drains: tuple[Drain, ...]) -> list[str]:
    """For status: each database drained now, and for how much longer."""
    return [
        f"DRAINED: {d.database} refuses new connections, for {_left(d)} more "
        f"(until {moment(d.until)}; {slash('undrain ' + d.database + db_flag(d.target))} ends it)"
        for d in drains
    ]


def _left(drain: Drain) -> str:
    left = max(timedelta(0), drain.until - drain.now)
    return format_duration(left) if left >= timedelta(seconds=1) else "a moment"


def what_drain(request: SignalRequest) -> str:
    """The sentence an approver agrees to: the database, its sessions now, who is spared, for how long."""
    assert request.database_name is not None
    n = len(request.targets)
    by_role = Counter(strip(t.role) for t in request.targets)
    apps = Counter(strip(t.application or "(none)") for t in request.targets)
    sessions = plural(n, "client session")
    detail = ""
    if n:
        detail = " (" + ", ".join(f"{role} {count}" for role, count in by_role.most_common(5))
        detail += "; " + ", ".join(f"{app} {count}" for app, count in apps.most_common(5)) + ")"
    until = f"undrained after {format_duration(request.drain_for)}" if request.drain_for else ""
    spared = ""
    if request.spared:
        shown = ", ".join(_spared(s) for s in request.spared[:5])
        more = f" and {len(request.spared) - 5} more" if len(request.spared) > 5 else ""
        spared = f"; spared: {shown}{more}"
    return (
        f"drain database {strip(request.database_name)}{on(request.target)}: refuse new connections, then "
        f"terminate its {sessions} now{detail} and any that come before it is done{spared}; {until}"
    )


_SPARED = {
    Unsignallable.OWN: "the bot's own",
    Unsignallable.NOT_CLIENT: "not a client session",
    Unsignallable.SUPERUSER: "a superuser",
    Unsignallable.SUPERUSER_MEMBER: "a member of a superuser role",
    Unsignallable.PROTECTED_ROLE: "a protected role",
    Unsignallable.PROTECTED_MEMBER: "a member of a protected role",
}


def _spared(session: SparedSession) -> str:
    known = {member.value: member for member in Unsignallable}
    why = _SPARED.get(known[session.why], "protected") if session.why in known else "protected"
    return f"pid {session.pid} ({strip(session.role or '?')}: {why})"


def drain_took(request: SignalRequest) -> str:
    """How long the drain took, once done (from its approval to its outcomes)."""
    if request.finished_at is None or request.decided_at is None:
        return ""
    return f" in {max(0.0, (request.finished_at - request.decided_at).total_seconds()):.1f} s"


def drain_problem_document(problem: DrainRefused | UndrainFailed) -> Document:
    match problem:
        case DrainRefused():
            return Document(title=drain_refused_text(problem), tone=Tone.WARNING)
        case UndrainFailed():
            return Document(title=undrain_failed_text(problem), tone=Tone.PROBLEM)
        case _:
            assert_never(problem)
