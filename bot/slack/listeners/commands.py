"""``/pgconn``: acknowledge at once, then answer through the response URL.

Acknowledging in a function of its own (with the work in a lazy listener) returns the HTTP 200
immediately, whatever PostgreSQL is doing; the answer follows via ``respond``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot import metrics
from bot.core.service import CommandService
from bot.errors import first_line
from bot.logs import fields
from bot.model.access import Identity
from bot.model.problems import InternalError
from bot.model.results import RequestOpened
from bot.render.blocks import render_blocks
from bot.slack.escaping import unescape_command_text

log = logging.getLogger(__name__)


def slack_text(text: str) -> str:
    """Kept for older callers: ``bot.slack.escaping.unescape_command_text``."""
    return unescape_command_text(text)


async def acknowledge(ack: AsyncAck) -> None:
    await ack()


RESPOND_ATTEMPTS = 3
RESPOND_BACKOFF_SECONDS = 0.5


async def deliver(respond: AsyncRespond, *, text: str, blocks: list[dict[str, Any]]) -> bool:
    """Post an ephemeral answer to the response URL, retrying Slack's 5xx and dropped connections.

    A response URL takes up to five posts in 30 minutes, so a few retries are safe.
    """
    for attempt in range(RESPOND_ATTEMPTS):
        try:
            response = await respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
            status = getattr(response, "status_code", 200)
            if status < 500 and status != 429:
                if status >= 400:
                    log.warning("the response URL refused the answer: HTTP %s", status)
                return status < 400
            log.warning("response URL answered HTTP %s (attempt %d)", status, attempt + 1)
        except Exception as exc:
            log.warning("response URL failed (attempt %d): %s", attempt + 1, first_line(exc))
        await asyncio.sleep(RESPOND_BACKOFF_SECONDS * 2**attempt)
    return False


def make_answer(service: CommandService) -> Any:
    async def answer_pgconn(body: dict[str, Any], respond: AsyncRespond) -> None:
        started = time.perf_counter()
        identity = Identity(
            user_id=str(body.get("user_id") or ""),
            team_id=body.get("team_id"),
            display=body.get("user_name"),
        )
        text = unescape_command_text(str(body.get("text") or ""))
        try:
            outcome = await service.handle(text, identity, channel=body.get("channel_id"))
            result = outcome.result
            subcommand, status = outcome.subcommand, outcome.status
        except Exception:
            log.exception("unhandled error answering /pgconn for %s", identity.user_id)
            result = InternalError("Something went wrong; the details are in the bot's log.")
            subcommand, status = "unknown", "error"
        message = render_blocks(result)
        if not await deliver(respond, text=message.text, blocks=message.blocks):
            status = "undelivered"
            log.error("could not deliver the /pgconn answer to %s", identity.user_id)
        elapsed = time.perf_counter() - started
        metrics.COMMANDS.labels(subcommand=subcommand, outcome=status).inc()
        metrics.COMMAND_SECONDS.labels(subcommand=subcommand).observe(elapsed)
        request_id = result.request.id if isinstance(result, RequestOpened) else None
        log.info(
            "command /pgconn %s by %s: %s in %.0f ms%s",
            subcommand,
            identity.user_id,
            status,
            elapsed * 1000,
            f" (request #{request_id})" if request_id else "",
            extra=fields(
                event="command",
                user=identity.user_id,
                subcommand=subcommand,
                outcome=status,
                duration_ms=round(elapsed * 1000),
                request_id=request_id,
            ),
        )

    return answer_pgconn
