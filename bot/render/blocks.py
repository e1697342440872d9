"""Block Kit adapter: Slack's view of a Document, always inside Block Kit's limits.

Every piece of text that a database client controls (role and application names, query text)
is escaped, so it cannot mention people, link, or break out of a code span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.model.alerts import SNOOZE_CHOICES, Alert, AlertKind
from bot.model.audit import AuditEntry
from bot.model.digest import Digest
from bot.model.durations import format_duration
from bot.model.ownership import SelfService
from bot.model.requests import DEFAULT_ESCALATION, SignalRequest
from bot.model.results import HomeView, Result
from bot.render.alerts import alert_document, headline, resolved_text
from bot.render.answers import render_failure, to_document
from bot.render.digest import digest_document
from bot.render.document import FREE_ACTION, Document, Tone, on, table_lines
from bot.render.markup import moment, to_slack
from bot.render.ownership import FREE_BUTTON
from bot.render.requests import audit_line, confirm_text, request_document, status_line, what

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_TABLE_ROWS = 40  # the rest become "and N more"
MAX_TABLE_BLOCKS = 8
MAX_FALLBACK_TEXT = 3000
MAX_LINE_BLOCKS = 20

_ICON = {Tone.INFO: "", Tone.WARNING: ":warning: ", Tone.PROBLEM: ":x: "}


@dataclass(frozen=True)
class SlackMessage:
    text: str
    blocks: list[dict[str, Any]]


def escape(text: str) -> str:
    """Slack mrkdwn escaping: the three control characters, plus no code-span breakouts.

    The core's mention/time markers survive escaping and become Slack's own syntax here.
    """
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _BROADCAST.sub("@\u2060\\1", text)  # a word joiner keeps "@here" from notifying anyone
    text = _EMOJI_CODE.sub(":\u2060", text)  # ":white_check_mark:" in a name stays text
    return to_slack(text.replace("`", "ˋ"))


_BROADCAST = re.compile(r"@(here|channel|everyone)\b", re.IGNORECASE)
# Emoji codes in text the bot did not write: its own icons are added after escaping.
# Any colon that could open an emoji code (one with a non-digit in it): a word joiner after it.
# Times (10:41:03) are left alone; SQL casts (a::text) get the invisible joiner too.
_EMOJI_CODE = re.compile(r":(?=[a-z0-9_+'-]{0,99}[a-z_+'-][a-z0-9_+'-]{0,99}:)", re.IGNORECASE)


def _clip(text: str, limit: int) -> str:
    """Cut escaped mrkdwn to ``limit`` without leaving half an entity (``&am``) or token (``<@U1``)."""
    if len(text) <= limit:
        return text
    return _OPEN_TOKEN.sub("", text[: limit - 1]) + "…"


_OPEN_TOKEN = re.compile(r"(&[a-z]{0,5}|<[^>]*)$")


def _section(text: str) -> dict[str, Any]:
    # verbatim: Slack must not auto-link or parse anything; mentions are written out explicitly.
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_TEXT), "verbatim": True}}


def _text_sections(lines: list[str]) -> list[dict[str, Any]]:
    """Escaped lines in as few sections as fit; a long list never loses its end to one cut."""
    blocks: list[dict[str, Any]] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        line = _clip(line, MAX_SECTION_TEXT)
        if chunk and size + len(line) + 1 > MAX_SECTION_TEXT:
            blocks.append(_section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    return blocks


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
        blocks.extend(_text_sections([escape(line) for line in doc.lines])[:MAX_LINE_BLOCKS])
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
    blocks = blocks[: MAX_BLOCKS - (1 if doc.buttons else 0)]
    if doc.buttons:
        elements = [
            {
                "type": "button",
                "text": _plain(button.text, 75),
                "action_id": button.action_id,
                "value": button.value[:2000],
            }
            for button in doc.buttons[:5]
        ]
        blocks.append({"type": "actions", "elements": elements})
    fallback = escape(f"{doc.title}" + (f" — {doc.lines[0]}" if doc.lines else ""))
    return SlackMessage(text=_clip(fallback, MAX_FALLBACK_TEXT), blocks=blocks)


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, 2000), "verbatim": True}]}


def render_blocks(result: Result) -> SlackMessage:
    """Any result as a message; if laying it out fails, a one-line error instead (never silence)."""
    try:
        return document_blocks(to_document(result))
    except Exception:
        return document_blocks(to_document(render_failure(result)))


# --- approval requests and audit entries ---------------------------------------------------

APPROVE_ACTION = "pgconn_approve"
DENY_ACTION = "pgconn_deny"
REQUEST_BLOCK = "pgconn_request"


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _clip(text, limit), "emoji": True}


def request_message(request: SignalRequest) -> SlackMessage:
    """The visible approval message; it carries the buttons only while the request is approvable."""
    message = document_blocks(request_document(request))
    blocks = list(message.blocks)
    if request.pending:
        # The value is only the id: what is executed always comes from the stored request.
        value = str(request.id)
        confirm_verb = "Terminate" if request.action == "terminate" else "Cancel queries"
        blocks.insert(
            len(blocks) - 1 if blocks and blocks[-1]["type"] == "context" else len(blocks),
            {
                "type": "actions",
                "block_id": f"{REQUEST_BLOCK}_{request.id}",  # unique in a view listing several requests
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "text": _plain("Approve", 75),
                        "style": "primary",
                        "value": value,
                        "confirm": {
                            "title": _plain(f"Approve request #{request.id}?", 100),
                            "text": {
                                "type": "mrkdwn",
                                "text": _clip(escape(confirm_text(request)), 300),
                                "verbatim": True,
                            },
                            "confirm": _plain(confirm_verb, 30),
                            "deny": _plain("Back", 30),
                            "style": "danger",
                        },
                    },
                    {
                        "type": "button",
                        "action_id": DENY_ACTION,
                        "text": _plain("Deny", 75),
                        "style": "danger",
                        "value": value,
                    },
                ],
            },
        )
    fallback = escape(f"Request #{request.id}: {what(request)} — {status_line(request)}")
    return SlackMessage(text=_clip(fallback, MAX_FALLBACK_TEXT), blocks=blocks[:MAX_BLOCKS])


def audit_message(entry: AuditEntry, request_ref: str | None) -> SlackMessage:
    """One audit entry: everything in the text itself, so it reads the same in notifications and search."""
    link = ""
    if request_ref and "/" in request_ref:
        channel, ts = request_ref.split("/", 1)
        link = f" · <https://slack.com/archives/{channel}/p{ts.replace('.', '')}|request message> ({channel} {ts})"
    text = _clip(escape("Audit: " + audit_line(entry)), MAX_SECTION_TEXT - len(link)) + link
    return SlackMessage(text=text, blocks=[_section(text)])


# --- alerts ----------------------------------------------------------------------------------

ALERT_REQUEST_ACTION = "pgconn_alert_request"
_ALERT_BUTTON = {
    AlertKind.ROLE_LIMIT: "Request cleanup",
    AlertKind.IDLE_IN_TRANSACTION: "Request termination",
    AlertKind.LONG_QUERY: f"Request cancel (then terminate after {format_duration(DEFAULT_ESCALATION)})",
}


# Acknowledge and snooze (requesters and up: the core decides). A button's value is the alert's id;
# a Snooze option's is "<alert id>:<one of SNOOZE_CHOICES>".
ALERT_ACK_ACTION = "pgconn_alert_ack"
ALERT_SNOOZE_ACTION = "pgconn_alert_snooze"
ALERT_UNSNOOZE_ACTION = "pgconn_alert_unsnooze"


def alert_message(alert: Alert) -> SlackMessage:
    """An open alert offers one click into the approval flow (for kinds with something to clean
    up), Acknowledge, Snooze (1h / 4h / 1d) and, while snoozed, Un-snooze; a resolved one offers
    nothing."""
    message = document_blocks(alert_document(alert))
    blocks = list(message.blocks)
    if alert.resolved_at is None:
        value = str(alert.id)
        elements: list[dict[str, Any]] = []
        label = _ALERT_BUTTON.get(alert.kind)
        if label:
            elements.append(_button(ALERT_REQUEST_ACTION, label, value))
        elements.append(_button(ALERT_ACK_ACTION, "Acknowledge", value))
        elements.append(
            {
                "type": "static_select",
                "action_id": ALERT_SNOOZE_ACTION,
                "placeholder": _plain("Snooze…", 150),
                "options": [
                    {"text": _plain(f"Snooze {word}", 75), "value": f"{alert.id}:{word}"} for word in SNOOZE_CHOICES
                ],
            }
        )
        if alert.snoozed:
            elements.append(_button(ALERT_UNSNOOZE_ACTION, "Un-snooze", value))
        blocks.insert(
            len(blocks) - 1 if blocks and blocks[-1]["type"] == "context" else len(blocks),
            {"type": "actions", "block_id": f"pgconn_alert_{alert.id}", "elements": elements},
        )
    return SlackMessage(text=message.text, blocks=blocks[:MAX_BLOCKS])


def _button(action_id: str, label: str, value: str) -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": _plain(label, 75), "value": value}


def resolved_reply(alert: Alert) -> SlackMessage:
    text = escape(resolved_text(alert))
    return SlackMessage(text=text, blocks=[_section(text)])


# --- App Home ----------------------------------------------------------------------------------

MAX_HOME_REQUESTS = 15  # two blocks each; a home view holds at most 100
MAX_HOME_ALERTS = 20


def _commands(*commands: str) -> str:
    return " · ".join(f"`{escape(command)}`" for command in commands)


_CAN_DO = {
    "none": [
        "You have no access to pgconn-bot's views yet: ask its administrators to add you. If you own a database "
        "role (a student's, say), `/pgconn link <role>` proves it; then `/pgconn mine` and `/pgconn free` work "
        "for you."
    ],
    "viewer": [
        "You are a *viewer*: you can see connections and limits.",
        _commands(
            "/pgconn list <role>",
            "/pgconn limit <role>",
            "/pgconn limits",
            "/pgconn stray <role>",
            "/pgconn status",
            "/pgconn requests",
            "/pgconn audit",
            "/pgconn alerts",
        ),
    ],
    "requester": [
        "You are a *requester*: everything a viewer can do, and ask for sessions to be ended.",
        _commands("/pgconn kill <pid>…", "/pgconn kill user <role>", "/pgconn kill idle <role> --older 30m")
        + " · "
        + _commands("/pgconn cancel <pid>")
        + " — an approver decides each request.",
    ],
    "approver": [
        "You are an *approver*: requests wait for your decision below and in the approval channel.",
    ],
}


def _owned_blocks(home: HomeView) -> list[dict[str, Any]]:
    """An owner's roles on the Home tab, with a Free button per target (self-service)."""
    if not home.owned:
        return []
    targets = sorted({o.target for o in home.owned})
    lines = ["*Your database roles:* " + escape(", ".join(f"{o.role}{on(o.target)}" for o in home.owned))]
    lines.append("`/pgconn mine` shows their sessions.")
    blocks: list[dict[str, Any]] = [{"type": "divider"}, _section("\n".join(lines))]
    if home.self_service is not SelfService.OFF:
        elements = [
            {
                "type": "button",
                "text": _plain(FREE_BUTTON + on(target), 75),
                "action_id": FREE_ACTION,
                "value": target,
            }
            for target in targets[:5]
        ]
        blocks.append({"type": "actions", "elements": elements})
    return blocks


def home_view(home: HomeView) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain("pgconn-bot", 150)},
    ]
    if home.note:
        blocks.append(_section(f":information_source: {escape(home.note)}"))
    if not (home.role == "none" and home.owned):
        blocks.append(_section("\n".join(_CAN_DO.get(home.role, _CAN_DO["none"]))))
    blocks.extend(_owned_blocks(home))
    if home.role == "none":
        return {"type": "home", "blocks": blocks}
    blocks.append({"type": "divider"})
    if home.role == "approver":
        blocks.append(
            _section(f"*Pending requests: {len(home.pending)}*" if home.pending else "*No pending requests.*")
        )
        for request in home.pending[:MAX_HOME_REQUESTS]:
            summary = escape(f"#{request.id}: {what(request)}") + "\n" + escape(status_line(request))
            blocks.append(_section(summary))
            message = request_message(request)
            blocks.extend(b for b in message.blocks if b["type"] == "actions")
        if len(home.pending) > MAX_HOME_REQUESTS:
            blocks.append(_context(f"… and {len(home.pending) - MAX_HOME_REQUESTS} more: /pgconn requests"))
    else:
        blocks.append(_section(f"Pending requests: {len(home.pending)} (approvers decide them)."))
    blocks.append({"type": "divider"})
    if not home.monitoring:
        blocks.append(_section("The monitor is off (PGCONN_MONITOR_INTERVAL=0)."))
    elif not home.alerts:
        blocks.append(_section("*No open alerts.*"))
    else:
        lines = [escape(f"{a.severity}: {headline(a)} · since {moment(a.opened_at)}") for a in home.alerts]
        blocks.extend(_text_sections([f"*Open alerts: {len(home.alerts)}*", *lines[:MAX_HOME_ALERTS]]))
    return {"type": "home", "blocks": blocks[:100]}


def digest_message(digest: Digest) -> SlackMessage:
    """The daily digest, laid out like any answer (escaped, within Slack's limits)."""
    return document_blocks(digest_document(digest))
