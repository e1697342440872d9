"""Refuse malformed (but correctly signed) payloads with a 400 before Bolt sees them.

Bolt reads some fields without checking their shape (``actions[0]``, ``user["id"]``, …) while it
builds listener arguments, even for middleware, so a payload with an empty ``actions`` list or a
string where an object belongs would end in a 500 and a traceback. Slack never sends such
payloads; anything that does gets a plain 400. Only correctly signed requests are checked here,
so an unsigned one still gets Bolt's 401.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt.request.internals import parse_body
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)

_OBJECTS = ("user", "team", "channel", "container", "message", "view", "enterprise", "event", "authorizations")
_STRINGS = ("type", "command", "text", "user_id", "team_id", "channel_id", "response_url", "trigger_id", "api_app_id")


# What the bot handles; Bolt may crash on the shapes of others (view_submission without a view
# type, block_suggestion with a numeric action_id…), and the bot has no use for them.
HANDLED_TYPES = {"block_actions", "event_callback", "url_verification", "app_rate_limited"}


def malformed(body: Any) -> str | None:
    """Why ``body`` is not a payload Slack would send, or None."""
    if not isinstance(body, dict):
        return "the payload is not an object"
    kind = body.get("type")
    if kind is None and not isinstance(body.get("command"), str):
        return "neither a slash command nor a typed payload"
    if kind is not None and (not isinstance(kind, str) or kind not in HANDLED_TYPES):
        return f"payloads of type {str(kind)[:40]!r} are not handled"
    for key in _OBJECTS:
        if key in body and body[key] is not None and not isinstance(body[key], dict | list):
            return f"{key} is not an object"
    for key in ("user", "team", "channel", "container", "view", "event"):
        if isinstance(body.get(key), list):
            return f"{key} is not an object"
    for key in _STRINGS:
        if key in body and body[key] is not None and not isinstance(body[key], str):
            return f"{key} is not a string"
    for key in ("user", "team", "channel"):
        inner = body.get(key)
        if isinstance(inner, dict) and "id" in inner and not isinstance(inner["id"], str):
            return f"{key}.id is not a string"
    if "actions" in body:
        actions = body["actions"]
        if not isinstance(actions, list) or not actions:
            return "actions is not a non-empty list"
        for action in actions:
            if not isinstance(action, dict):
                return "an action is not an object"
            if not isinstance(action.get("action_id"), str):
                return "an action has no action_id"
            for key in ("action_id", "block_id", "value", "type"):
                if key in action and not isinstance(action[key], str):
                    return f"action {key} is not a string"
    event = body.get("event")
    if isinstance(event, dict):
        for key in ("type", "user", "tab", "channel"):
            if key in event and event[key] is not None and not isinstance(event[key], str):
                return f"event.{key} is not a string"
    return None


class PayloadGuard:
    """Decides, before Bolt, what never reaches it: unsigned requests (401) and malformed ones (400).

    Bolt would read the payload's shape while building the request object, before its own
    signature check, so junk could otherwise cause a 500 even without a valid signature.
    """

    def __init__(self, signing_secret: str) -> None:
        self._verifier = SignatureVerifier(signing_secret)

    def refusal(self, raw: bytes, headers: Mapping[str, str], content_type: str | None) -> tuple[int, str] | None:
        """(HTTP status, reason) to refuse with, or None to let Bolt handle the request."""
        raw_body = raw.decode("utf-8", errors="replace")  # Slack sends UTF-8; anything else is junk
        if _is_ssl_check(raw_body):
            return None  # Slack's certificate check comes unsigned; Bolt answers it with a 200
        try:
            signed = self._verifier.is_valid_request(raw_body, dict(headers))
        except (ValueError, TypeError):  # e.g. a timestamp header that is not a number
            signed = False
        if not signed:
            return 401, "invalid request"
        try:
            body = parse_body(raw_body, content_type)
        except ValueError:
            return 400, "malformed payload: not JSON"
        why = malformed(body)
        if why is not None:
            log.warning("refused a malformed Slack payload: %s", why)
            return 400, f"malformed payload: {why}"
        return None

    def rate_limited(self, raw: bytes, content_type: str | None) -> bool:
        """A (signed, already checked) ``app_rate_limited`` notice: answered 200 here, not by Bolt."""
        try:
            body = parse_body(raw.decode("utf-8", errors="replace"), content_type)
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("type") == "app_rate_limited"


def _is_ssl_check(raw_body: str) -> bool:
    fields = dict(parse_qsl(raw_body, keep_blank_values=True))
    return fields.get("ssl_check") == "1" and set(fields) <= {"ssl_check", "token"}
