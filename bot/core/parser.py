"""Turn ``/pgconn`` text into a typed command, or a ParseError that says what was wrong.

The text comes from anyone in the workspace, so nothing here trusts it: lengths are capped,
control characters refused, and error messages quote input only in shortened form.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from bot.config import DEFAULT_TARGET
from bot.core.commands import (
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
from bot.core.durations import DurationError, parse_duration
from bot.core.text import clean, is_clean

MAX_TEXT_LENGTH = 2000
MAX_ROLE_BYTES = 63  # NAMEDATALEN - 1
MAX_PIDS = 50
MAX_REASON_LENGTH = 500
MAX_AUDIT_ENTRIES = 100
MAX_PID = 2**31 - 1
MAX_TARGET_LENGTH = 63

USAGE: dict[str, str] = {
    "list": "/pgconn list <role> [--db TARGET]",
    "limit": "/pgconn limit <role> [--db TARGET]",
    "limits": "/pgconn limits [--db TARGET]",
    "stray": "/pgconn stray <role> [--idle 30m] [--db TARGET]",
    "status": "/pgconn status [--db TARGET]",
    "kill": (
        '/pgconn kill <pid> [<pid>…] | kill user <role> | kill idle <role> [--older 30m]  [--db TARGET] [--reason "…"]'
    ),
    "cancel": '/pgconn cancel <pid> [<pid>…] [--db TARGET] [--reason "…"]',
    "requests": "/pgconn requests",
    "audit": "/pgconn audit [N]",
    "alerts": "/pgconn alerts",
    "approve": "approve <request-id>   (console; in Slack use the button)",
    "deny": "deny <request-id>   (console; in Slack use the button)",
    "help": "/pgconn help [subcommand]",
}
SUBCOMMANDS = tuple(USAGE)

_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "\u00a0": " "})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_INT = re.compile(r"^[0-9]{1,10}$")


def shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Args:
    """Positional words and ``--options`` of one subcommand, consumed as the grammar asks."""

    subcommand: str
    positional: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)

    def take_option(self, name: str) -> str | None:
        return self.options.pop(name, None)

    def finish(self) -> None:
        if self.options:
            unknown = ", ".join(f"--{name}" for name in self.options)
            raise _Invalid(f"{self.subcommand} does not take {unknown}")
        if self.positional:
            extra = " ".join(shorten(word, 20) for word in self.positional[:3])
            raise _Invalid(f"unexpected extra words after {self.subcommand}: {extra}")

    def role(self) -> str:
        if not self.positional:
            raise _Invalid(f"{self.subcommand} needs a role name")
        return _role_name(self.positional.pop(0))


_OPTIONS_WITH_VALUE = {"db", "idle", "older", "reason"}


def _role_name(word: str) -> str:
    if word.startswith("-"):
        raise _Invalid(f"expected a role name, got the option {shorten(word, 20)}")
    if not is_clean(word):
        raise _Invalid("a role name cannot contain line breaks, tabs or control characters")
    if len(word.encode()) > MAX_ROLE_BYTES:
        raise _Invalid(f"a role name is at most {MAX_ROLE_BYTES} bytes; {shorten(word, 20)!r} is longer")
    return word


def _pid(word: str) -> int:
    if not _INT.match(word) or not (0 < int(word) <= MAX_PID):
        raise _Invalid(f"{shorten(word, 20)!r} is not a process id (a positive whole number)")
    return int(word)


def _duration(option: str, value: str) -> timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise _Invalid(f"--{option}: {exc}") from None


def _split(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:
        raise _Invalid("a quote is not closed (or the text ends with a backslash)") from None


def _collect(subcommand: str, words: list[str]) -> _Args:
    args = _Args(subcommand)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("--") and len(word) > 2:
            name, has_value, value = word[2:].partition("=")
            name = name.lower()
            if name not in _OPTIONS_WITH_VALUE:
                raise _Invalid(f"unknown option --{shorten(name, 20)}")
            if name in args.options:
                raise _Invalid(f"--{name} is given twice")
            if not has_value:
                if index >= len(words) or (words[index].startswith("--") and len(words[index]) > 2):
                    raise _Invalid(f"--{name} needs a value")
                value = words[index]
                index += 1
            args.options[name] = value
        else:
            args.positional.append(word)
    return args


def _target(args: _Args) -> str:
    value = args.take_option("db")
    if value is None:
        return DEFAULT_TARGET
    if not value.strip():
        raise _Invalid("--db needs a target name")
    if not is_clean(value) or len(value) > MAX_TARGET_LENGTH:
        raise _Invalid("--db takes the name of a configured target (/pgconn help lists how to find them)")
    return value.strip()


def _parse_list(args: _Args) -> Command:
    return ListConnections(role=args.role(), target=_target(args))


def _parse_limit(args: _Args) -> Command:
    return ShowLimit(role=args.role(), target=_target(args))


def _parse_limits(args: _Args) -> Command:
    return ShowLimits(target=_target(args))


def _parse_stray(args: _Args) -> Command:
    role = args.role()
    idle = args.take_option("idle")
    return FindStray(role=role, min_idle=_duration("idle", idle) if idle is not None else None, target=_target(args))


def _parse_status(args: _Args) -> Command:
    return ShowStatus(target=_target(args))


def _reason(args: _Args) -> str | None:
    reason = args.take_option("reason")
    if reason is None:
        return None
    reason = clean(reason, limit=MAX_REASON_LENGTH + 1)
    if not reason:
        raise _Invalid("--reason is empty")
    if len(reason) > MAX_REASON_LENGTH:
        raise _Invalid(f"--reason is limited to {MAX_REASON_LENGTH} characters")
    return reason


def _pids(args: _Args) -> tuple[int, ...]:
    if not args.positional:
        raise _Invalid(f"{args.subcommand} needs at least one pid")
    pids = [_pid(word) for word in args.positional]
    args.positional.clear()
    if len(pids) > MAX_PIDS:
        raise _Invalid(f"at most {MAX_PIDS} pids in one request")
    return tuple(dict.fromkeys(pids))


def _parse_kill(args: _Args) -> Command:
    target, reason = _target(args), _reason(args)
    first = args.positional[0].lower() if args.positional else ""
    if first in ("user", "idle"):
        args.positional.pop(0)
        role = args.role()
        older = args.take_option("older")
        if first == "user" and older is not None:
            raise _Invalid("--older goes with kill idle <role>, not kill user")
        return RequestSignal(
            action=SignalAction.TERMINATE,
            scope=KillScope.USER if first == "user" else KillScope.IDLE,
            role=role,
            older_than=_duration("older", older) if older is not None else None,
            reason=reason,
            target=target,
        )
    return RequestSignal(
        action=SignalAction.TERMINATE, scope=KillScope.PIDS, pids=_pids(args), reason=reason, target=target
    )


def _parse_cancel(args: _Args) -> Command:
    target, reason = _target(args), _reason(args)
    return RequestSignal(
        action=SignalAction.CANCEL,
        scope=KillScope.PIDS,
        pids=_pids(args),
        reason=reason,
        target=target,
        name="cancel",
    )


def _parse_requests(args: _Args) -> Command:
    return ListRequests()


def _parse_audit(args: _Args) -> Command:
    if not args.positional:
        return ShowAudit()
    word = args.positional.pop(0)
    if not _INT.match(word) or not 1 <= int(word) <= MAX_AUDIT_ENTRIES:
        raise _Invalid(f"N must be a whole number from 1 to {MAX_AUDIT_ENTRIES}")
    return ShowAudit(count=int(word))


def _parse_alerts(args: _Args) -> Command:
    return ListAlerts()


def _decision(approve: bool) -> Callable[[_Args], Command]:
    def parse(args: _Args) -> Command:
        if not args.positional:
            raise _Invalid(f"{args.subcommand} needs a request id")
        word = args.positional.pop(0).lstrip("#")
        if not _INT.match(word) or int(word) == 0:
            raise _Invalid(f"{shorten(word, 20)!r} is not a request id")
        return Decide(request_id=int(word), approve=approve, name=args.subcommand)

    return parse


def _parse_help(args: _Args) -> Command:
    topic = args.positional.pop(0).lower() if args.positional else None
    args.positional.clear()
    return Help(topic=topic if topic in USAGE else None)


_PARSERS: dict[str, Callable[[_Args], Command]] = {
    "list": _parse_list,
    "limit": _parse_limit,
    "limits": _parse_limits,
    "stray": _parse_stray,
    "status": _parse_status,
    "kill": _parse_kill,
    "cancel": _parse_cancel,
    "requests": _parse_requests,
    "audit": _parse_audit,
    "alerts": _parse_alerts,
    "approve": _decision(True),
    "deny": _decision(False),
    "help": _parse_help,
}
_ALIASES = {"ls": "list", "terminate": "kill", "?": "help", "-h": "help", "--help": "help"}


def parse_command(text: str) -> Command | ParseError:
    """Parse the text after ``/pgconn`` (a leading ``/pgconn`` is tolerated, as typed in the console)."""
    if len(text) > MAX_TEXT_LENGTH:
        return ParseError(f"the command is too long ({len(text)} characters; at most {MAX_TEXT_LENGTH})", _usage_line())
    if _CONTROL.search(text):
        return ParseError("the command contains control characters", _usage_line())
    text = text.translate(_SMART_QUOTES).strip()
    if text.lower().startswith("/pgconn"):
        text = text[len("/pgconn") :].strip()
    if not text:
        return Help()
    try:
        words = _split(text)
    except _Invalid as exc:
        return ParseError(exc.message, _usage_line())
    if not words:
        return Help()
    subcommand = words[0].lower()
    subcommand = _ALIASES.get(subcommand, subcommand)
    parser = _PARSERS.get(subcommand)
    if parser is None:
        return ParseError(
            f"unknown subcommand {shorten(words[0], 30)!r}; try one of: {', '.join(SUBCOMMANDS)}",
            _usage_line(),
        )
    try:
        args = _collect(subcommand, words[1:])
        command = parser(args)
        args.finish()
    except _Invalid as exc:
        return ParseError(exc.message, USAGE[subcommand], subcommand)
    return command


def _usage_line() -> str:
    return "/pgconn " + " | ".join(SUBCOMMANDS) + "   (/pgconn help for examples)"
