"""The words of a ``/pgconn`` command: splitting, options, and the values every subcommand reads.

The text comes from anyone in the workspace, so nothing here trusts it: lengths are capped,
control characters refused, and error messages quote input only in shortened form.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import timedelta

from bot.model.durations import DurationError, parse_duration
from bot.model.requests import MAX_PIDS_PER_REQUEST
from bot.model.servers import DEFAULT_TARGET
from bot.model.text import clean, is_clean, shorten

MAX_ROLE_BYTES = 63  # NAMEDATALEN - 1
MAX_REASON_LENGTH = 500
MAX_PID = 2**31 - 1
MAX_TARGET_LENGTH = 63
OPTIONS_WITH_VALUE = frozenset({"db", "idle", "older", "reason", "escalate", "for", "since"})
INT = re.compile(r"^[0-9]{1,10}$")


class Invalid(Exception):
    """What was wrong with the words, said to the person who typed them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Args:
    """Positional words and ``--options`` of one subcommand, consumed as its grammar asks; what
    is left over at the end is an error (``finish``)."""

    subcommand: str
    positional: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)

    def take_option(self, name: str) -> str | None:
        return self.options.pop(name, None)

    def finish(self) -> None:
        if self.options:
            unknown = ", ".join(f"--{name}" for name in self.options)
            raise Invalid(f"{self.subcommand} does not take {unknown}")
        if self.positional:
            extra = " ".join(shorten(word, 20) for word in self.positional[:3])
            raise Invalid(f"unexpected extra words after {self.subcommand}: {extra}")

    # --- values ------------------------------------------------------------------------------

    def role(self) -> str:
        """The next word, as a role name."""
        if not self.positional:
            raise Invalid(f"{self.subcommand} needs a role name")
        return role_name(self.positional.pop(0))

    def target(self) -> str:
        """``--db TARGET``, or the default target."""
        value = self.take_option("db")
        if value is None:
            return DEFAULT_TARGET
        if not value.strip():
            raise Invalid("--db needs a target name")
        if not is_clean(value) or len(value) > MAX_TARGET_LENGTH:
            raise Invalid("--db takes the name of a configured target (/pgconn help lists how to find them)")
        return value.strip()

    def duration(self, option: str) -> timedelta | None:
        """``--<option> 30m``, if given."""
        value = self.take_option(option)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise Invalid(f"--{option}: {exc}") from None

    def reason(self) -> str | None:
        """``--reason "…"``: one clean line."""
        reason = self.take_option("reason")
        if reason is None:
            return None
        reason = clean(reason, limit=MAX_REASON_LENGTH + 1)
        if not reason:
            raise Invalid("--reason is empty")
        if len(reason) > MAX_REASON_LENGTH:
            raise Invalid(f"--reason is limited to {MAX_REASON_LENGTH} characters")
        return reason

    def pids(self) -> tuple[int, ...]:
        """Every remaining word, as process ids (duplicates dropped, order kept)."""
        if not self.positional:
            raise Invalid(f"{self.subcommand} needs at least one pid")
        pids = [pid(word) for word in self.positional]
        self.positional.clear()
        if len(pids) > MAX_PIDS_PER_REQUEST:
            raise Invalid(f"at most {MAX_PIDS_PER_REQUEST} pids in one request")
        return tuple(dict.fromkeys(pids))

    def number(self, what: str, low: int, high: int) -> int | None:
        """The next word as a whole number from ``low`` to ``high``, if there is one."""
        if not self.positional:
            return None
        word = self.positional.pop(0)
        if not INT.match(word) or not low <= int(word) <= high:
            raise Invalid(f"{what} must be a whole number from {low} to {high}")
        return int(word)

    def database(self) -> str:
        """The next word, as a database name (the same rules as a role name)."""
        if not self.positional:
            raise Invalid(f"{self.subcommand} needs a database name")
        word = self.positional.pop(0)
        if word.startswith("-"):
            raise Invalid(f"expected a database name, got the option {shorten(word, 20)}")
        if not is_clean(word) or len(word.encode()) > MAX_ROLE_BYTES:
            raise Invalid("a database name is at most 63 bytes, without line breaks or control characters")
        return word

    def user(self) -> str | None:
        """The next word as a Slack user, if there is one: a mention as Slack sends it
        (``<@U123|name>``, ``<@U123>``) or a bare user ID (``U123``, ``W123``)."""
        if not self.positional:
            return None
        return slack_user(self.positional.pop(0))

    def request_id(self) -> int:
        if not self.positional:
            raise Invalid(f"{self.subcommand} needs a request id")
        word = self.positional.pop(0).lstrip("#")
        if not INT.match(word) or int(word) == 0:
            raise Invalid(f"{shorten(word, 20)!r} is not a request id")
        return int(word)

    def alert_id(self) -> int:
        if not self.positional:
            raise Invalid(f"{self.subcommand} needs an alert id (/pgconn alerts lists them)")
        word = self.positional.pop(0).lstrip("#")
        if not INT.match(word) or int(word) == 0:
            raise Invalid(f"{shorten(word, 20)!r} is not an alert id")
        return int(word)


def role_name(word: str) -> str:
    if word.startswith("-"):
        raise Invalid(f"expected a role name, got the option {shorten(word, 20)}")
    if not is_clean(word):
        raise Invalid("a role name cannot contain line breaks, tabs or control characters")
    if len(word.encode()) > MAX_ROLE_BYTES:
        raise Invalid(f"a role name is at most {MAX_ROLE_BYTES} bytes; {shorten(word, 20)!r} is longer")
    return word


_MENTION = re.compile(r"^<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>$")
_USER_ID = re.compile(r"^@?([UW][A-Z0-9]{2,})$")


def slack_user(word: str) -> str:
    """A Slack user ID from a mention (``<@U123|name>``, ``<@U123>``) or a bare ID (``U123``)."""
    found = _MENTION.match(word) or _USER_ID.match(word)
    if found is None:
        raise Invalid(f"{shorten(word, 30)!r} is not a Slack user: mention them (@name) or give their member ID (U…)")
    return found.group(1)


def pid(word: str) -> int:
    if not INT.match(word) or not (0 < int(word) <= MAX_PID):
        raise Invalid(f"{shorten(word, 20)!r} is not a process id (a positive whole number)")
    return int(word)


def split(text: str) -> list[str]:
    """Words as a shell would split them (quotes group, nothing is expanded)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:
        raise Invalid("a quote is not closed (or the text ends with a backslash)") from None


def collect(subcommand: str, words: list[str]) -> Args:
    """Sort the words after the subcommand into positional words and ``--options``."""
    args = Args(subcommand)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("--") and len(word) > 2:
            name, has_value, value = word[2:].partition("=")
            name = name.lower()
            if name not in OPTIONS_WITH_VALUE:
                raise Invalid(f"unknown option --{shorten(name, 20)}")
            if name in args.options:
                raise Invalid(f"--{name} is given twice")
            if not has_value:
                if index >= len(words) or (words[index].startswith("--") and len(words[index]) > 2):
                    raise Invalid(f"--{name} needs a value")
                value = words[index]
                index += 1
            args.options[name] = value
        else:
            args.positional.append(word)
    return args
