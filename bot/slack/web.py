"""The HTTP server for serve mode: Slack's requests, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.core.housekeeping import Housekeeper
from bot.errors import first_line
from bot.metrics import AUDIT_UNDELIVERABLE, AUDIT_UNDELIVERED, RATE_LIMITED_EVENTS
from bot.slack.guard import PayloadGuard

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
MAX_BODY_BYTES = 1024 * 1024


def build_web_app(
    app: AsyncApp,
    healthy: Callable[[], Awaitable[bool]],
    housekeeper: Housekeeper | None = None,
    *,
    slack_events: bool = True,
    guard: PayloadGuard | None = None,
) -> web.Application:
    async def handle_slack(request: web.Request) -> web.Response:
        if guard is not None:
            headers = {key.lower(): value for key, value in request.headers.items()}
            refusal = guard.refusal(await request.read(), headers, request.content_type)
            if refusal is not None:
                status, reason = refusal
                return web.json_response({"error": reason}, status=status)
        if guard is not None and guard.rate_limited(await request.read(), request.content_type):
            # Slack says it is dropping our events for a while; it wants a 2xx, nothing else.
            log.warning("Slack sent app_rate_limited: events are being dropped for a minute")
            RATE_LIMITED_EVENTS.inc()
            return web.json_response({})
        try:
            bolt_request = await to_bolt_request(request)
        except Exception as exc:  # a payload shape Bolt cannot read; Slack never sends one
            log.warning("unreadable Slack request: %s", first_line(exc))
            return web.json_response({"error": "malformed payload"}, status=400)
        bolt_response = await app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def healthz(_: web.Request) -> web.Response:
        if await healthy():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "state database unreachable"}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        if housekeeper is not None:
            AUDIT_UNDELIVERED.set(housekeeper.undelivered)
            AUDIT_UNDELIVERABLE.set(housekeeper.undeliverable)
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    web_app = web.Application(client_max_size=MAX_BODY_BYTES)
    if slack_events:
        web_app.router.add_post(EVENTS_PATH, handle_slack)
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/metrics", metrics)
    return web_app
