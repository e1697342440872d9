"""Turn ``/pgconn`` text into a typed command, or a ParseError that says what was wrong.

Generic: which subcommand it is, and its grammar, come from ``commands.SPECS``.
"""

from __future__ import annotations

import re

from bot.core.commands import BY_WORD, SPECS, Command, Help, ParseError
from bot.core.grammar import Invalid, collect, split
from bot.model.text import shorten

MAX_TEXT_LENGTH = 2000

_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "\u00a0": " "})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def parse_command(text: str) -> Command | ParseError:
    """Parse the text after ``/pgconn`` (a leading ``/pgconn`` is tolerated, as typed in the console)."""
    if len(text) > MAX_TEXT_LENGTH:
        return ParseError(f"the command is too long ({len(text)} characters; at most {MAX_TEXT_LENGTH})", usage_line())
    if _CONTROL.search(text):
        return ParseError("the command contains control characters", usage_line())
    text = text.translate(_SMART_QUOTES).strip()
    if text.lower().startswith("/pgconn"):
        text = text[len("/pgconn") :].strip()
    if not text:
        return Help()
    try:
        words = split(text)
    except Invalid as exc:
        return ParseError(exc.message, usage_line())
    if not words:
        return Help()
    spec = BY_WORD.get(words[0].lower())
    if spec is None:
        names = ", ".join(spec.name for spec in SPECS)
        return ParseError(f"unknown subcommand {shorten(words[0], 30)!r}; try one of: {names}", usage_line())
    try:
        args = collect(spec.name, words[1:])
        command = spec.parse(args)
        args.finish()
    except Invalid as exc:
        return ParseError(exc.message, spec.usage, spec.name)
    return command


def usage_line() -> str:
    return "/pgconn " + " | ".join(spec.name for spec in SPECS) + "   (/pgconn help for examples)"
