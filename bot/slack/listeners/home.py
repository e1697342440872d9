"""The App Home tab: published when someone opens it, and again after a click made on it."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.service import CommandService
from bot.model.access import Identity
from bot.render.blocks import home_view
from bot.slack.gateway import publish_home

log = logging.getLogger(__name__)


async def acknowledge(ack: AsyncAck) -> None:
    await ack()


async def refresh(service: CommandService, client: AsyncWebClient, identity: Identity, note: str | None = None) -> None:
    try:
        view = home_view(await service.home(identity, note))
        await publish_home(client, identity.user_id, view)
    except Exception as exc:
        log.warning("could not publish the App Home of %s: %s", identity.user_id, exc)


def make_home_handler(service: CommandService) -> Any:
    async def handle_home_opened(body: dict[str, Any], client: AsyncWebClient) -> None:
        event = body.get("event") or {}
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        await refresh(service, client, Identity(user_id=str(event["user"]), team_id=body.get("team_id")))

    return handle_home_opened
