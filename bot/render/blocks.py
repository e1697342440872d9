"""Block Kit adapter: Slack's view of a Document, always inside Block Kit's limits.

Every piece of text that a database client controls (role and application names, query text)
is escaped, so it cannot mention people, link, or break out of a code span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.core.results import Result
from bot.render.document import Document, Tone, table_lines, to_document

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_TABLE_ROWS = 40  # the rest become "and N more"
MAX_TABLE_BLOCKS = 8
MAX_FALLBACK_TEXT = 3000

_ICON = {Tone.INFO: "", Tone.WARNING: ":warning: ", Tone.PROBLEM: ":x: "}


@dataclass(frozen=True)
class SlackMessage:
    text: str
    blocks: list[dict[str, Any]]


def escape(text: str) -> str:
    """Slack mrkdwn escaping: the three control characters, plus no code-span breakouts."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("`", "ˋ")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_TEXT)}}


def _code_sections(lines: list[str]) -> list[dict[str, Any]]:
    """Monospace blocks of whole lines, each under the section limit."""
    blocks: list[dict[str, Any]] = []
    chunk: list[str] = []
    size = 0
    budget = MAX_SECTION_TEXT - 8  # the ``` fences
    for line in lines:
        line = _clip(escape(line), 400)
        if chunk and size + len(line) + 1 > budget:
            blocks.append(_section("```" + "\n".join(chunk) + "```"))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        blocks.append(_section("```" + "\n".join(chunk) + "```"))
    return blocks


def document_blocks(doc: Document) -> SlackMessage:
    blocks: list[dict[str, Any]] = [_section(f"{_ICON[doc.tone]}*{escape(doc.title)}*")]
    if doc.lines:
        blocks.append(_section("\n".join(escape(line) for line in doc.lines)))
    if doc.table:
        shown = doc.table.rows[:MAX_TABLE_ROWS]
        hidden = len(doc.table.rows) - len(shown)
        lines = table_lines(type(doc.table)(doc.table.headers, shown))
        table_blocks = _code_sections(lines)
        if len(table_blocks) > MAX_TABLE_BLOCKS:
            kept = table_blocks[:MAX_TABLE_BLOCKS]
            hidden += sum(b["text"]["text"].count("\n") + 1 for b in table_blocks[MAX_TABLE_BLOCKS:])
            table_blocks = kept
        blocks.extend(table_blocks)
        if hidden > 0:
            blocks.append(_context(f"… and {hidden} more not shown"))
    if doc.commands:
        intro = [escape(doc.commands_intro)] if doc.commands_intro else []
        blocks.append(_section("\n".join(intro + [f"`{escape(command)}`" for command in doc.commands])))
    for note in doc.notes:
        blocks.append(_context(escape(note)))
    blocks = blocks[:MAX_BLOCKS]
    fallback = _clip(f"{doc.title}" + (f" — {doc.lines[0]}" if doc.lines else ""), MAX_FALLBACK_TEXT)
    return SlackMessage(text=escape(fallback), blocks=blocks)


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, 2000)}]}


def render_blocks(result: Result) -> SlackMessage:
    return document_blocks(to_document(result))
