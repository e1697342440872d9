"""Mentions and times inside result text, rendered by each adapter in its own way.

Slack shows ``<@U123>`` as the person's name and ``<!date^…>`` in the reader's time zone; the
console shows ``@U123`` and UTC. The core writes neutral markers; adapters expand them after
escaping, so text from database clients can never produce a marker of its own (see ``strip``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from bot.model.text import MARK as _MARK  # never let in from outside (see model.text.clean)

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_MARKER = re.compile(_MARK + r"(@|#|t)([^" + _MARK + r"]*)" + _MARK)
_SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def mention(user: str | None) -> str:
    if not user:
        return "someone"
    return f"{_MARK}@{user}{_MARK}"


def channel(channel_id: str) -> str:
    return f"{_MARK}#{channel_id}{_MARK}"


def moment(when: datetime) -> str:
    return f"{_MARK}t{int(when.timestamp())}{_MARK}"


def strip(text: str) -> str:
    return text.replace(_MARK, "")


def utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _expand(text: str, user: Callable[[str], str], room: Callable[[str], str], time: Callable[[datetime], str]) -> str:
    def replace(match: re.Match[str]) -> str:
        kind, value = match.group(1), match.group(2)
        if kind == "@":
            return user(value)
        if kind == "#":
            return room(value)
        try:
            return time(datetime.fromtimestamp(int(value), UTC))
        except (ValueError, OverflowError, OSError):
            return ""  # not a marker the core wrote: drop it rather than fail the answer

    return _MARKER.sub(replace, text)


def to_slack(text: str) -> str:
    """For already-escaped mrkdwn."""
    return _expand(
        text,
        lambda u: f"<@{u}>" if _SLACK_USER.match(u) else u,
        lambda c: f"<#{c}>" if _SLACK_CHANNEL.match(c) else f"#{c}",
        lambda t: f"<!date^{int(t.timestamp())}^{{date_short_pretty}} at {{time}}|{utc(t)}>",
    )


def to_plain(text: str) -> str:
    return _expand(text, lambda u: f"@{u}" if _SLACK_USER.match(u) else u, lambda c: f"#{c}", utc)
