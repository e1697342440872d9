"""Requests signed exactly as Slack signs them (v0 HMAC-SHA256 over ``v0:timestamp:body``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"


def sign(body: str, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash_command_body(text: str, *, user_id: str, response_url: str, channel_id: str = "C0TEST01") -> str:
    return urlencode(slash_command_fields(text, user_id=user_id, response_url=response_url, channel_id=channel_id))


def slash_command_fields(text: str, *, user_id: str, response_url: str, channel_id: str = "C0TEST01") -> dict[str, str]:
    """A slash command's fields: form-encoded over HTTP, a JSON object in Socket Mode."""
    return {
        "token": "legacy-verification-token",
        "team_id": "T0TEST01",
        "team_domain": "pgct",
        "channel_id": channel_id,
        "channel_name": "ops",
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": "/pgconn",
        "text": text,
        "api_app_id": "A0TEST01",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": "1.2.3",
    }


def block_actions_payload(
    *,
    user_id: str,
    action_id: str,
    value: str,
    channel_id: str,
    message_ts: str,
    response_url: str | None,
    block_id: str = "pgconn_request",
) -> dict[str, Any]:
    """A button click on a message, as the JSON Slack sends."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": "T0TEST01"},
        "api_app_id": "A0TEST01",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": False},
        "trigger_id": "1.2.3",
        "team": {"id": "T0TEST01", "domain": "pgct"},
        "channel": {"id": channel_id, "name": "approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "request"},
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "text": {"type": "plain_text", "text": "Approve"},
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    if response_url:
        payload["response_url"] = response_url
    return payload


def form_body(payload: dict[str, Any]) -> str:
    """Interactive payloads arrive as form field ``payload`` holding the JSON."""
    return urlencode({"payload": json.dumps(payload)})


def block_actions_body(**click: Any) -> str:
    return form_body(block_actions_payload(**click))


def event_body(event: dict[str, Any], event_id: str = "Ev0TEST") -> str:
    """An Events API callback, as JSON (sign it with Content-Type application/json)."""
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": "T0TEST01",
            "api_app_id": "A0TEST01",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
        }
    )
