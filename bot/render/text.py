"""Plain-text adapter: the console's view of a Document."""

from __future__ import annotations

import re

from bot.model.results import Result
from bot.render.answers import render_failure, to_document
from bot.render.document import Tone, table_lines
from bot.render.markup import to_plain

_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARK = {Tone.INFO: "", Tone.WARNING: "! ", Tone.PROBLEM: "✗ "}


def _clean(text: str) -> str:
    # Application names and queries come from database clients: keep them from driving the terminal.
    return _UNPRINTABLE.sub("?", to_plain(text))


def render_text(result: Result) -> str:
    try:
        return _render(result)
    except Exception:
        return _render(render_failure(result))


def _render(result: Result) -> str:
    doc = to_document(result)
    out = [_MARK[doc.tone] + doc.title, *doc.lines]
    if doc.table:
        out.append("")
        out.extend(table_lines(doc.table))
    if doc.commands:
        out.append("")
        if doc.commands_intro:
            out.append(doc.commands_intro)
        out.extend(f"  {command}" for command in doc.commands)
    if doc.notes:
        out.append("")
        out.extend(f"note: {note}" for note in doc.notes)
    return "\n".join(_clean(line) for line in out)
