"""Untrusted text, made safe once, where it enters the bot.

Role and database names, application names and query text come from PostgreSQL (any role that
can log in, or create a role, chooses them); reasons and role names come from whoever types a
command. None of it may carry a line break into the audit, the bot's internal markers into an
answer, or terminal/bidirectional control characters into anything. ``clean`` is applied where
such text enters (the db layer's row readers, the parser, the stores' writers); renderers then
escape what remains for their medium.
"""

from __future__ import annotations

import re

MARK = "\x1d"  # the core's internal marker (see ``markup``): never allowed in from outside

# C0 and C1 controls (line breaks and tabs too), DEL, bidirectional marks, overrides and
# isolates, zero-width and invisible characters, lone surrogates, the line/paragraph separators,
# interlinear annotations, the byte-order mark, and tag characters.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb"
    "\ud800-\udfff\U000e0000-\U000e007f]"
)

DEFAULT_LIMIT = 1000


NAME_LIMIT = 128  # NAMEDATALEN is 64 bytes; application_name too; leave room for multibyte text
REPLACEMENT = "\ufffd"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def clean(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """Free text (a query, a reason, an error) as one line: unsafe characters and line breaks
    become spaces, runs of spaces one space, at most ``limit`` characters."""
    return _cut(" ".join(_UNSAFE.sub(" ", text).split()), limit)


def clean_name(name: str, limit: int = NAME_LIMIT) -> str:
    """A name (role, database, application): an unsafe character stays visible as U+FFFD, so a
    name never looks like another one; spaces are kept as they are."""
    return _cut(_UNSAFE.sub(REPLACEMENT, name), limit)


def clean_optional(text: str | None, limit: int = DEFAULT_LIMIT) -> str | None:
    return None if text is None else clean(text, limit)


def clean_name_optional(name: str | None, limit: int = NAME_LIMIT) -> str | None:
    return None if name is None else clean_name(name, limit)


def is_clean(text: str) -> bool:
    return _UNSAFE.search(text) is None


_FIRST_WORD = re.compile(r"^\s*(?:(?:/\*.*?\*/|--[^\n]*(?:\n|$))\s*)*([A-Za-z]{1,20})\b", re.DOTALL)


def query_summary(query: str | None, length: int | None = None) -> str | None:
    """What anyone may read of another session's SQL: its first keyword and its length, e.g.
    ``UPDATE … (412 chars)``. The text itself may hold passwords or personal data."""
    if query is None:
        return None
    match = _FIRST_WORD.match(query)
    keyword = match.group(1).upper() if match else "statement"
    return f"{keyword} … ({length if length is not None else len(query)} chars)"


def shorten(text: str, limit: int = 40) -> str:
    """At most ``limit`` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
