"""The bot as a real HTTP server on loopback, driven with Slack-signed requests."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
import pytest

from bot.server import HttpServer
from tests.conftest import PgWorld
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import SIGNING_SECRET, block_actions_body, sign, slash_command_body

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

    async def ask(
        self, text: str, user_id: str = "U0VIEWER", timeout: float = 5.0, channel_id: str = "C0TEST01"
    ) -> dict[str, Any]:
        """Send a command and return the answer the bot delivered to the response URL."""
        response_url = self.slack.new_response_url()
        body = slash_command_body(text, user_id=user_id, response_url=response_url, channel_id=channel_id)
        async with await self.post(body, sign(body)) as response:
            assert response.status == 200, await response.text()
        return await self.slack.wait_for_response(response_url, timeout)

    async def click(self, message: Posted, button: str, user_id: str, *, with_response_url: bool = True) -> Clicked:
        """Click a button ("Approve"/"Deny") on a posted message, as Slack would send it."""
        action_id, value = message.button(button)
        response_url = self.slack.new_response_url() if with_response_url else None
        body = block_actions_body(
            user_id=user_id,
            action_id=action_id,
            value=value,
            channel_id=message.channel,
            message_ts=message.ts,
            response_url=response_url,
        )
        started = time.perf_counter()
        async with await self.post(body, sign(body)) as response:
            text = await response.text()
            return Clicked(response.status, text, time.perf_counter() - started, response_url)


@dataclass
class Clicked:
    status: int
    body: str
    ack_seconds: float
    response_url: str | None


@dataclass
class Posted:
    """A message the bot posted with chat.postMessage, as it stands in the fake Slack now."""

    channel: str
    ts: str
    payload: dict[str, Any]

    def buttons(self) -> dict[str, tuple[str, str]]:
        found = {}
        for block in self.payload.get("blocks") or []:
            for element in block.get("elements", []):
                if element.get("type") == "button":
                    found[element["text"]["text"]] = (element["action_id"], element["value"])
        return found

    def button(self, label: str) -> tuple[str, str]:
        for text, ids in self.buttons().items():
            if label in text:
                return ids
        raise AssertionError(f"no {label!r} button in {self.payload}")

    @property
    def text(self) -> str:
        return message_text(self.payload)


def posted_messages(slack: FakeSlack, channel: str) -> list[Posted]:
    return [Posted(channel, ts, payload) for ts, payload in slack.messages.get(channel, {}).items()]


async def wait_for_request_message(slack: FakeSlack, channel: str, request_id: int, timeout: float = 5.0) -> Posted:
    def find() -> Posted | None:
        for message in posted_messages(slack, channel):
            if f"Request #{request_id}:" in message.payload.get("text", ""):
                return message
        return None

    return await slack.wait_for(find, timeout)  # type: ignore[no-any-return]


async def wait_for_message_state(slack: FakeSlack, message: Posted, predicate: Any, timeout: float = 8.0) -> Posted:
    """Wait until the message (re-read after chat.update calls) satisfies ``predicate``."""

    def current() -> Posted | None:
        now = Posted(message.channel, message.ts, slack.messages[message.channel][message.ts])
        return now if predicate(now) else None

    return await slack.wait_for(current, timeout)  # type: ignore[no-any-return]


@pytest.fixture
async def start_bot(make_settings: Callable[..., Any], fake_slack: FakeSlack) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[HttpServer, aiohttp.ClientSession]] = []

    async def start(socket_mode: bool = False, **overrides: Any) -> BotUnderTest:
        settings = make_settings(
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=fake_slack.api_url,
            **overrides,
        )
        server = HttpServer(settings, host="127.0.0.1", port=0, housekeeping_seconds=0.2, socket_mode=socket_mode)
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
            text = element.get("text", "")
            parts.append(text.get("text", "") if isinstance(text, dict) else text)
    # Read it as a person would: Slack shows &lt; as <.
    return html.unescape("\n".join(parts))


# --- the approval flow: a bot with requesters, approvers and channels, and helpers ------------

REQUESTER, APPROVER, APPROVER2, VIEWER = "U0REQ", "U0APP", "U0APP2", "U0VIEWER"
APPROVALS, AUDIT, ORIGIN = "C0APPROVE", "C0AUDIT", "C0TEST01"


@pytest.fixture
def start_approval_bot(fresh_state_dsn: str, start_bot: Any) -> Callable[..., Any]:
    # fresh_state_dsn first: it is then torn down after the bots have stopped.
    async def start(**overrides: Any) -> BotUnderTest:
        settings: dict[str, Any] = {
            "requesters": REQUESTER,
            "approvers": f"{APPROVER},{APPROVER2}",
            "approval_channel": APPROVALS,
            "audit_channel": AUDIT,
            "state_url": fresh_state_dsn,
        }
        settings.update(overrides)
        return await start_bot(**settings)  # type: ignore[no-any-return]

    return start


def request_id_of(answer: dict[str, Any]) -> int:
    match = re.search(r"Request #(\d+)", message_text(answer))
    assert match, message_text(answer)
    return int(match.group(1))


def alive(world: PgWorld, pids: list[int]) -> set[int]:
    rows = world.admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchall()
    return {row[0] for row in rows}


def audit_rows(dsn: str, request_id: int) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM pgconn.audit WHERE request_id = %s ORDER BY id", (request_id,)).fetchall()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """For state outside the fake Slack (the database): re-check until true."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the database cannot notify us; polling it is the wait
            await asyncio.sleep(0.05)


async def eventually_true(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """``eventually`` for a condition that must itself ask something (the bot's core, say)."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - nothing to notify us; re-asking is the wait
            await asyncio.sleep(0.05)


def no_buttons(message: Posted) -> bool:
    return not message.buttons()


async def open_request(bot: BotUnderTest, text: str, user: str = REQUESTER) -> tuple[int, Posted]:
    answer = await bot.ask(text, user_id=user)
    assert "sent for approval" in message_text(answer), message_text(answer)
    request_id = request_id_of(answer)
    return request_id, await wait_for_request_message(bot.slack, APPROVALS, request_id)


async def ephemeral_answer(bot: BotUnderTest, clicked: Any) -> str:
    assert clicked.status == 200, clicked.body
    return message_text(await bot.slack.wait_for_response(clicked.response_url))
