"""The one workspace (or Enterprise Grid organisation) this bot is installed in.

A request signed with the app's signing secret may still come from another workspace the app
is installed in, or from a user of another organisation in a shared channel. The bot serves
only the installation its token belongs to (``auth.test``); anything else is refused (403)
before any listener runs. If the installation cannot be learnt, requests are refused too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.errors import first_line

log = logging.getLogger(__name__)

RETRY_SECONDS = 10.0


class Installation:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._lock = asyncio.Lock()
        self._tried_at = -RETRY_SECONDS
        self.team_id: str | None = None
        self.enterprise_id: str | None = None
        self.enterprise_install = False

    @property
    def known(self) -> bool:
        return self.team_id is not None or self.enterprise_id is not None

    async def learn(self) -> bool:
        """Ask Slack once (again at most every RETRY_SECONDS while it fails)."""
        async with self._lock:
            if self.known or time.monotonic() - self._tried_at < RETRY_SECONDS:
                return self.known
            self._tried_at = time.monotonic()
            try:
                auth = await self._client.auth_test()
            except Exception as exc:
                log.error("cannot tell which workspace the bot token belongs to (auth.test): %s", first_line(exc))
                return False
            self.team_id = auth.get("team_id") or None
            self.enterprise_id = auth.get("enterprise_id") or None
            self.enterprise_install = bool(auth.get("is_enterprise_install"))
            return self.known

    async def admits(self, team_id: str | None, enterprise_id: str | None) -> bool:
        if not self.known and not await self.learn():
            return False
        if self.enterprise_install:
            return enterprise_id is not None and enterprise_id == self.enterprise_id
        if enterprise_id is not None and enterprise_id != self.enterprise_id:
            return False  # another organisation, whatever team it names
        return team_id is not None and team_id == self.team_id

    def middleware(self) -> Callable[..., Awaitable[Any]]:
        async def only_this_installation(
            context: AsyncBoltContext, body: dict[str, Any], next: Callable[[], Awaitable[Any]]
        ) -> BoltResponse | None:
            # The payload's workspace, and (in a shared channel) the clicking user's own workspace.
            user = body.get("user") if isinstance(body.get("user"), dict) else {}
            user_team = user.get("team_id") if isinstance(user, dict) else None
            if await self.admits(context.team_id, context.enterprise_id) and (
                user_team is None or self.enterprise_install or user_team == self.team_id
            ):
                return await next()  # type: ignore[no-any-return]
            log.warning(
                "refused a request from team %s / enterprise %s: not this installation",
                context.team_id,
                context.enterprise_id,
            )
            metrics.FOREIGN_REQUESTS.inc()
            return BoltResponse(status=403, body="")

        return only_this_installation
