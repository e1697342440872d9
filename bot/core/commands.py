"""Every ``/pgconn`` subcommand, each in one place: its typed command, its grammar, the role it
needs and its help. ``SPECS`` drives the parser, ``help``, the policy and the console; the service
runs a command with the handler registered for its type, and render words its result.

To add a subcommand: its command type, its parse function and its ``CommandSpec`` here, its
handler in ``service.py``, its renderer in ``render`` (see CONTRIBUTING.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.core.grammar import Args, Invalid
from bot.model.access import AccessRole
from bot.model.alerts import DEFAULT_SNOOZE, MAX_SNOOZE, MIN_SNOOZE
from bot.model.history import DEFAULT_SINCE, MIN_SINCE
from bot.model.requests import (
    DEFAULT_DRAIN,
    MAX_DRAIN,
    MAX_ESCALATION,
    MIN_DRAIN,
    MIN_ESCALATION,
    KillScope,
    SignalAction,
)
from bot.model.results import HelpEntry, HelpResult
from bot.model.servers import DEFAULT_TARGET
from bot.model.text import shorten

MAX_AUDIT_ENTRIES = 100


@dataclass(frozen=True)
class Command:
    target: str = DEFAULT_TARGET


@dataclass(frozen=True)
class Help(Command):
    topic: str | None = None  # a subcommand's name (an alias is read as its subcommand)
    unknown: str | None = None  # the word asked about, when it names no subcommand (shortened)


@dataclass(frozen=True)
class ListConnections(Command):
    role: str = ""


@dataclass(frozen=True)
class ShowLimit(Command):
    role: str = ""


@dataclass(frozen=True)
class ShowLimits(Command):
    pass


@dataclass(frozen=True)
class FindStray(Command):
    role: str = ""
    min_idle: timedelta | None = None


@dataclass(frozen=True)
class ShowStatus(Command):
    pass


@dataclass(frozen=True)
class ShowHistory(Command):
    """``history [<role>] [--since 24h]``: the server's (or the role's) connections over time."""

    role: str | None = None
    since: timedelta = DEFAULT_SINCE


@dataclass(frozen=True)
class RequestSignal(Command):
    """``kill …`` / ``cancel …``: becomes an approval request, never a direct signal."""

    action: SignalAction = SignalAction.TERMINATE
    scope: KillScope = KillScope.PIDS
    pids: tuple[int, ...] = ()
    role: str | None = None
    older_than: timedelta | None = None
    reason: str | None = None
    # From an alert's button: the pid must still be the session the alert was about (its
    # backend_start), still in the same transaction (idle in transaction: xact_start) or the same
    # query (long query: query_start).
    expected_starts: tuple[tuple[int, datetime], ...] = ()
    expected_marks: tuple[tuple[int, datetime], ...] = ()
    # cancel … --escalate 30s: after the grace time, terminate what still runs the same query.
    escalate_after: timedelta | None = None
    database: str | None = None  # drain <database> (scope DATABASE)
    drain_for: timedelta | None = None


@dataclass(frozen=True)
class ListRequests(Command):
    pass


@dataclass(frozen=True)
class ShowAudit(Command):
    count: int = 10


@dataclass(frozen=True)
class ListAlerts(Command):
    pass


@dataclass(frozen=True)
class Acknowledge(Command):
    """``ack N``, or the Acknowledge button: the asker is on alert N."""

    alert_id: int = 0


@dataclass(frozen=True)
class Snooze(Command):
    """``snooze N [--for 4h]``, or the Snooze menu: alert N's problem stays quiet that long."""

    alert_id: int = 0
    snooze_for: timedelta = DEFAULT_SNOOZE


@dataclass(frozen=True)
class Unsnooze(Command):
    """``unsnooze N``, or the Un-snooze button: the snooze of alert N's problem ends now."""

    alert_id: int = 0


@dataclass(frozen=True)
class Decide(Command):
    """``approve N`` / ``deny N``: the console's way to click a button."""

    request_id: int = 0
    approve: bool = True


@dataclass(frozen=True)
class Undrain(Command):
    database: str = ""


@dataclass(frozen=True)
class ShowWhoAmI(Command):
    pass


@dataclass(frozen=True)
class LinkRole(Command):
    """``link <role>``: a one-time code to prove a login; ``link <role> <@user>``: an approver's link."""

    role: str = ""
    user: str | None = None


@dataclass(frozen=True)
class UnlinkRole(Command):
    role: str = ""
    user: str | None = None  # None: the asker's own link


@dataclass(frozen=True)
class ShowMine(Command):
    pass


@dataclass(frozen=True)
class FreeMine(Command):
    older_than: timedelta | None = None


@dataclass(frozen=True)
class ParseError:
    """Input that is not a command: ``message`` says what was wrong, ``usage`` how to say it."""

    message: str
    usage: str
    subcommand: str | None = None


# --- grammars ----------------------------------------------------------------------------------


def _help(args: Args) -> Command:
    word = args.positional.pop(0) if args.positional else None
    args.positional.clear()
    if word is None:
        return Help()
    spec = BY_WORD.get(word.lower())
    return Help(topic=spec.name) if spec is not None else Help(unknown=shorten(word, 30))


def _list(args: Args) -> Command:
    return ListConnections(role=args.role(), target=args.target())


def _limit(args: Args) -> Command:
    return ShowLimit(role=args.role(), target=args.target())


def _limits(args: Args) -> Command:
    return ShowLimits(target=args.target())


def _stray(args: Args) -> Command:
    role = args.role()
    return FindStray(role=role, min_idle=args.duration("idle"), target=args.target())


def _status(args: Args) -> Command:
    return ShowStatus(target=args.target())


def _history(args: Args) -> Command:
    target = args.target()
    since = args.duration("since")
    if since is None:
        since = DEFAULT_SINCE
    if since < MIN_SINCE:
        raise Invalid("--since is at least 1m (for example 24h or 7d); the default is 24h")
    role = args.role() if args.positional else None
    return ShowHistory(role=role, since=since, target=target)


def _kill(args: Args) -> Command:
    target, reason = args.target(), args.reason()
    first = args.positional[0].lower() if args.positional else ""
    if first in ("user", "idle"):
        args.positional.pop(0)
        role = args.role()
        if first == "user" and "older" in args.options:
            raise Invalid("--older goes with kill idle <role>, not kill user")
        older = args.duration("older")
        scope = KillScope.USER if first == "user" else KillScope.IDLE
        return RequestSignal(scope=scope, role=role, older_than=older, reason=reason, target=target)
    return RequestSignal(pids=args.pids(), reason=reason, target=target)


def _cancel(args: Args) -> Command:
    target, reason = args.target(), args.reason()
    escalate = args.duration("escalate")
    if escalate is not None and not MIN_ESCALATION <= escalate <= MAX_ESCALATION:
        raise Invalid("--escalate takes a grace time from 1s to 10m (for example 30s)")
    return RequestSignal(
        action=SignalAction.CANCEL, pids=args.pids(), reason=reason, target=target, escalate_after=escalate
    )


def _drain(args: Args) -> Command:
    target, reason = args.target(), args.reason()
    database = args.database()
    drain_for = args.duration("for") or DEFAULT_DRAIN
    if not MIN_DRAIN <= drain_for <= MAX_DRAIN:
        raise Invalid("--for is from 1m to 24h (a forgotten drain must not become an outage); the default is 1h")
    return RequestSignal(scope=KillScope.DATABASE, database=database, drain_for=drain_for, reason=reason, target=target)


def _undrain(args: Args) -> Command:
    target = args.target()
    return Undrain(database=args.database(), target=target)


def _requests(args: Args) -> Command:
    return ListRequests()


def _audit(args: Args) -> Command:
    count = args.number("N", 1, MAX_AUDIT_ENTRIES)
    return ShowAudit() if count is None else ShowAudit(count=count)


def _alerts(args: Args) -> Command:
    return ListAlerts()


def _ack(args: Args) -> Command:
    return Acknowledge(alert_id=args.alert_id())


def _snooze(args: Args) -> Command:
    alert_id = args.alert_id()
    snooze_for = args.duration("for") or DEFAULT_SNOOZE
    if not MIN_SNOOZE <= snooze_for <= MAX_SNOOZE:
        raise Invalid("--for is from 1m to 7d (the menu on an alert offers 1h, 4h and 1d); the default is 1h")
    return Snooze(alert_id=alert_id, snooze_for=snooze_for)


def _unsnooze(args: Args) -> Command:
    return Unsnooze(alert_id=args.alert_id())


def _whoami(args: Args) -> Command:
    return ShowWhoAmI()


def _link(args: Args) -> Command:
    target, role = args.target(), args.role()
    return LinkRole(role=role, user=args.user(), target=target)


def _unlink(args: Args) -> Command:
    target, role = args.target(), args.role()
    return UnlinkRole(role=role, user=args.user(), target=target)


def _mine(args: Args) -> Command:
    return ShowMine(target=args.target())


def _free(args: Args) -> Command:
    return FreeMine(older_than=args.duration("older"), target=args.target())


def _approve(args: Args) -> Command:
    return Decide(request_id=args.request_id(), approve=True)


def _deny(args: Args) -> Command:
    return Decide(request_id=args.request_id(), approve=False)


# --- the table ---------------------------------------------------------------------------------


def _always(command: Command) -> bool:
    return True


@dataclass(frozen=True)
class CommandSpec:
    """One subcommand. ``command``: the type it parses to (``selects`` tells subcommands that
    share one apart). ``role``: the least role that may run it. ``example``: shown in ``help``.
    ``uses_target``: takes ``--db``. ``needs_state``: works only with the state database."""

    name: str
    usage: str
    summary: str
    parse: Callable[[Args], Command]
    command: type[Command]
    selects: Callable[[Command], bool] = _always
    role: AccessRole = AccessRole.VIEWER
    aliases: tuple[str, ...] = ()
    example: str | None = None
    uses_target: bool = True
    needs_state: bool = False


SPECS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "list",
        "/pgconn list <role> [--db TARGET]",
        "a role's sessions: where from, which application, how long idle",
        _list,
        ListConnections,
        aliases=("ls",),
        example="/pgconn list bob",
    ),
    CommandSpec(
        "limit",
        "/pgconn limit <role> [--db TARGET]",
        "a role's CONNECTION LIMIT, how many it uses and how many are left",
        _limit,
        ShowLimit,
        example="/pgconn limit bob",
    ),
    CommandSpec(
        "limits",
        "/pgconn limits [--db TARGET]",
        "the roles close to their CONNECTION LIMIT",
        _limits,
        ShowLimits,
        example="/pgconn limits",
    ),
    CommandSpec(
        "stray",
        "/pgconn stray <role> [--idle 30m] [--db TARGET]",
        "a role's idle sessions, longest idle first, and the kill request that would end them",
        _stray,
        FindStray,
        example="/pgconn stray bob --idle 30m",
    ),
    CommandSpec(
        "status",
        "/pgconn status [--db TARGET]",
        "how full the server is, by state, role, client and application",
        _status,
        ShowStatus,
        example="/pgconn status --db reporting",
    ),
    CommandSpec(
        "history",
        "/pgconn history [<role>] [--since 24h] [--db TARGET]",
        "connections over time from the monitor's history: a sparkline, the peak, when it was at its limit",
        _history,
        ShowHistory,
        example="/pgconn history bob --since 7d",
        needs_state=True,
    ),
    CommandSpec(
        "kill",
        '/pgconn kill <pid> [<pid>…] | kill user <role> | kill idle <role> [--older 30m]  [--db TARGET] [--reason "…"]',
        "ask to end sessions; an approver has to approve it",
        _kill,
        RequestSignal,
        selects=lambda c: (
            isinstance(c, RequestSignal) and c.action is SignalAction.TERMINATE and c.scope is not KillScope.DATABASE
        ),
        role=AccessRole.REQUESTER,
        aliases=("terminate",),
        example='/pgconn kill idle bob --older 30m --reason "locked out before the exam"',
        needs_state=True,
    ),
    CommandSpec(
        "cancel",
        '/pgconn cancel <pid> [<pid>…] [--escalate 30s] [--db TARGET] [--reason "…"]',
        "ask to cancel running queries (the sessions stay; with --escalate, a query still running after "
        "the grace time is terminated); an approver has to approve it",
        _cancel,
        RequestSignal,
        selects=lambda c: isinstance(c, RequestSignal) and c.action is SignalAction.CANCEL,
        role=AccessRole.REQUESTER,
        needs_state=True,
    ),
    CommandSpec(
        "drain",
        '/pgconn drain <database> [--for 1h] [--db TARGET] [--reason "…"]',
        "ask to empty a database for maintenance: new connections refused, its sessions ended; "
        "undrained by itself after --for (1h; at most 24h); an approver has to approve it",
        _drain,
        RequestSignal,
        selects=lambda c: isinstance(c, RequestSignal) and c.scope is KillScope.DATABASE,
        role=AccessRole.REQUESTER,
        example='/pgconn drain coursework --for 30m --reason "restore from backup"',
        needs_state=True,
    ),
    CommandSpec(
        "undrain",
        "/pgconn undrain <database> [--db TARGET]",
        "a drained database accepts connections again, at once",
        _undrain,
        Undrain,
        role=AccessRole.REQUESTER,
        needs_state=True,
    ),
    CommandSpec(
        "requests",
        "/pgconn requests",
        "the requests waiting for approval",
        _requests,
        ListRequests,
        example="/pgconn requests",
        uses_target=False,
        needs_state=True,
    ),
    CommandSpec(
        "audit",
        "/pgconn audit [N]",
        "the last N entries of the audit trail",
        _audit,
        ShowAudit,
        example="/pgconn audit 20",
        uses_target=False,
        needs_state=True,
    ),
    CommandSpec(
        "alerts",
        "/pgconn alerts",
        "the monitor's open alerts",
        _alerts,
        ListAlerts,
        uses_target=False,
        needs_state=True,
    ),
    CommandSpec(
        "ack",
        "/pgconn ack <alert-id>   (in Slack, the Acknowledge button)",
        "say you are on an alert (its message then names you); someone else's ack moves it to them",
        _ack,
        Acknowledge,
        role=AccessRole.REQUESTER,
        aliases=("acknowledge",),
        example="/pgconn ack 12",
        uses_target=False,
        needs_state=True,
    ),
    CommandSpec(
        "snooze",
        "/pgconn snooze <alert-id> [--for 1h]",
        "keep an alert's problem quiet for a while (1h; at most 7d): not posted again, not escalated; "
        "its resolution is still posted",
        _snooze,
        Snooze,
        role=AccessRole.REQUESTER,
        example="/pgconn snooze 12 --for 4h",
        uses_target=False,
        needs_state=True,
    ),
    CommandSpec(
        "unsnooze",
        "/pgconn unsnooze <alert-id>",
        "end an alert's snooze now",
        _unsnooze,
        Unsnooze,
        role=AccessRole.REQUESTER,
        uses_target=False,
        needs_state=True,
    ),
    CommandSpec(
        "approve",
        "approve <request-id>   (console; in Slack use the button)",
        "approve a request",
        _approve,
        Decide,
        selects=lambda c: isinstance(c, Decide) and c.approve,
        role=AccessRole.APPROVER,
        uses_target=False,
        needs_state=True,
    ),
    CommandSpec(
        "deny",
        "deny <request-id>   (console; in Slack use the button)",
        "deny a request",
        _deny,
        Decide,
        selects=lambda c: isinstance(c, Decide) and not c.approve,
        role=AccessRole.APPROVER,
        uses_target=False,
        needs_state=True,
    ),
    CommandSpec(
        "whoami",
        "/pgconn whoami",
        "your role in the bot, the database roles you own, and your pending link codes",
        _whoami,
        ShowWhoAmI,
        role=AccessRole.NONE,
        uses_target=False,
    ),
    CommandSpec(
        "link",
        "/pgconn link <role> [<@user>] [--db TARGET]",
        "prove you can log in as a role, and own it here (approvers: link someone else)",
        _link,
        LinkRole,
        role=AccessRole.NONE,
        example="/pgconn link bob",
        needs_state=True,
    ),
    CommandSpec(
        "unlink",
        "/pgconn unlink <role> [<@user>] [--db TARGET]",
        "give up owning a role (approvers: someone else's link)",
        _unlink,
        UnlinkRole,
        role=AccessRole.NONE,
        needs_state=True,
    ),
    CommandSpec(
        "mine",
        "/pgconn mine [--db TARGET]",
        "the roles you own: how full, their sessions, what looks stray",
        _mine,
        ShowMine,
        role=AccessRole.NONE,
        example="/pgconn mine",
    ),
    CommandSpec(
        "free",
        "/pgconn free [--older 10m] [--db TARGET]",
        "end your own roles' idle sessions (when you are locked out at the limit)",
        _free,
        FreeMine,
        role=AccessRole.NONE,
        example="/pgconn free",
        needs_state=True,
    ),
    CommandSpec(
        "help",
        "/pgconn help [subcommand]",
        "what each subcommand does",
        _help,
        Help,
        role=AccessRole.NONE,
        aliases=("?", "-h", "--help"),
        example="/pgconn help <subcommand>",
        uses_target=False,
    ),
)

BY_NAME: dict[str, CommandSpec] = {spec.name: spec for spec in SPECS}
BY_WORD: dict[str, CommandSpec] = {word: spec for spec in SPECS for word in (spec.name, *spec.aliases)}


def spec_of(command: Command) -> CommandSpec:
    """The subcommand a command was typed as (kill and cancel, approve and deny share a type)."""
    for spec in SPECS:
        if isinstance(command, spec.command) and spec.selects(command):
            return spec
    raise TypeError(f"no subcommand for {type(command).__name__}")


def help_for(topic: str | None = None, unknown: str | None = None) -> HelpResult:
    """What ``help`` (or ``help <subcommand>``) shows, from the specs; ``unknown``: the word
    asked about when it names no subcommand."""
    entries = [HelpEntry(spec.name, spec.usage, spec.summary, spec.example) for spec in SPECS]
    return HelpResult(entries, next((entry for entry in entries if entry.name == topic), None), unknown)
