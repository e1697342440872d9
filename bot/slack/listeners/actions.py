"""Approve / Deny buttons: acknowledge at once, decide through the core, explain refusals privately.

Everything executed comes from the stored request; the button's value is only its id. Who
clicked is taken from the signed payload, never from anything the message carries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.policy import Identity
from bot.core.results import Decided, InternalError, Problem, Result
from bot.core.service import CommandService
from bot.render.blocks import render_blocks
from bot.slack import metrics
from bot.slack.gateway import post_ephemeral

log = logging.getLogger(__name__)


async def acknowledge(ack: AsyncAck) -> None:
    await ack()


def _request_id(body: dict[str, Any]) -> int | None:
    actions = body.get("actions") or [{}]
    value = str(actions[0].get("value") or "")
    return int(value) if value.isdigit() and 0 < int(value) < 2**63 else None


def _message_of(body: dict[str, Any]) -> tuple[str, str] | None:
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
    if container.get("is_ephemeral") or not channel or not ts:
        return None
    return str(channel), str(ts)


def make_click_handler(service: CommandService, *, approve: bool) -> Any:
    decision = "approve" if approve else "deny"

    async def handle_click(body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        started = time.perf_counter()
        user = body.get("user") or {}
        identity = Identity(
            user_id=str(user.get("id") or ""),
            team_id=(body.get("team") or {}).get("id"),
            display=user.get("username") or user.get("name"),
        )
        request_id = _request_id(body)
        result: Result
        status = "ok"
        if request_id is None:
            result, status = Problem("This button does not belong to a pgconn-bot request."), "invalid"
        else:
            try:
                outcome = await service.decide(request_id, approve, identity, clicked_on=_message_of(body))
                result, status = outcome.result, outcome.status
            except Exception:
                log.exception("unhandled error deciding request %s for %s", request_id, identity.user_id)
                result, status = InternalError("Something went wrong; the details are in the bot's log."), "error"
        # The message itself shows executions and denials; the clicker hears only about the rest.
        if not (isinstance(result, Decided) and result.effect in ("executed", "denied")):
            message = render_blocks(result)
            try:
                if body.get("response_url"):
                    await respond(
                        text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=False
                    )
                else:
                    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
                    await post_ephemeral(client, channel, identity.user_id, message.text, message.blocks)
            except Exception as exc:
                log.error("could not tell %s about their %s click: %s", identity.user_id, decision, exc)
        metrics.CLICKS.labels(decision=decision, outcome=status).inc()
        log.info(
            "click %s on request #%s by %s: %s in %.0f ms",
            decision,
            request_id,
            identity.user_id,
            status,
            (time.perf_counter() - started) * 1000,
        )

    return handle_click
