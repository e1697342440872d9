"""The bot as a real HTTP server on loopback, driven with Slack-signed requests."""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bot.server import HttpServer
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import SIGNING_SECRET, sign, slash_command_body

BOT_TOKEN = "xoxb-test-token-not-real"


@dataclass
class Sent:
    status: int
    body: str
    ack_seconds: float
    response_url: str


@dataclass
class BotUnderTest:
    url: str
    slack: FakeSlack
    session: aiohttp.ClientSession
    server: HttpServer

    async def post(self, body: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        return await self.session.post(self.url + "/slack/events", data=body.encode(), headers=headers)

    async def command(self, text: str, user_id: str = "U0VIEWER", **sign_args: Any) -> Sent:
        response_url = self.slack.new_response_url()
        body = slash_command_body(text, user_id=user_id, response_url=response_url)
        started = time.perf_counter()
        async with await self.post(body, sign(body, **sign_args)) as response:
            text_body = await response.text()
            elapsed = time.perf_counter() - started
            return Sent(response.status, text_body, elapsed, response_url)

    async def ask(self, text: str, user_id: str = "U0VIEWER", timeout: float = 5.0) -> dict[str, Any]:
        """Send a command and return the answer the bot delivered to the response URL."""
        sent = await self.command(text, user_id)
        assert sent.status == 200, sent.body
        return await self.slack.wait_for_response(sent.response_url, timeout)


@pytest.fixture
async def start_bot(make_settings: Callable[..., Any], fake_slack: FakeSlack) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[HttpServer, aiohttp.ClientSession]] = []

    async def start(**overrides: Any) -> BotUnderTest:
        settings = make_settings(
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=fake_slack.api_url,
            **overrides,
        )
        server = HttpServer(settings, host="127.0.0.1", port=0)
        await server.start(state_wait=2)
        session = aiohttp.ClientSession()
        started.append((server, session))
        return BotUnderTest(f"http://127.0.0.1:{server.port}", fake_slack, session, server)

    yield start
    for server, session in started:
        await session.close()
        await server.stop()


@pytest.fixture
async def bot(start_bot: Any) -> BotUnderTest:
    return await start_bot()  # type: ignore[no-any-return]


def message_text(answer: dict[str, Any]) -> str:
    """Everything a person would read in a Block Kit answer, joined."""
    parts = [answer.get("text", "")]
    for block in answer.get("blocks", []):
        if "text" in block:
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            parts.append(element.get("text", ""))
    # Read it as a person would: Slack shows &lt; as <.
    return html.unescape("\n".join(parts))
