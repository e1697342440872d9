"""Plain-text adapter: the console's view of a Document."""

from __future__ import annotations

import re

from bot.model.results import Result
from bot.render.answers import render_failure, to_document
from bot.render.document import Surface, Tone, shown_on, table_lines
from bot.render.markup import to_plain

_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARK = {Tone.INFO: "", Tone.WARNING: "! ", Tone.PROBLEM: "✗ "}


def _clean(text: str) -> str:
    # Application names and queries come from database clients: keep them from driving the terminal.
    return _UNPRINTABLE.sub("?", to_plain(text))


CONSOLE = Surface.CONSOLE


def render_text(result: Result, surface: Surface = Surface.SLACK) -> str:
    """``result`` as plain text: the console's answers (``CONSOLE``), and short notes in Slack."""
    with shown_on(surface):
        try:
            return _render(result)
        except Exception:
            return _render(render_failure(result))


def state_created_note(database: str, where: str) -> str:
    """Said once, when the console first needs somewhere to keep requests and the audit trail."""
    return _clean(
        f"note: pgconn-bot keeps requests and the audit trail in schema pgconn of database {database} on "
        f"{where} (PGCONN_STATE_URL, else PGCONN_DATABASE_URL); `pgconn-bot drop-state` removes it."
    )


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
