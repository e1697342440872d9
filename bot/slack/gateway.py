"""Every Slack Web API call the bot makes goes through here (to SLACK_API_URL)."""

from __future__ import annotations

import logging

from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


def build_web_client(token: str | None, api_url: str) -> AsyncWebClient:
    """A client that honours 429 Retry-After and retries dropped connections."""
    return AsyncWebClient(
        token=token,
        base_url=api_url,
        timeout=10,
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
        ],
    )


class SlackGroupDirectory:
    """Resolves user-group members with ``usergroups.users.list`` (scope ``usergroups:read``)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def members(self, group_id: str) -> frozenset[str]:
        response = await self._client.usergroups_users_list(usergroup=group_id)
        return frozenset(response.get("users") or [])
