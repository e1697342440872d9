"""Socket Mode: the same app over a WebSocket, against a local stand-in for Slack's socket server."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import PgWorld
from tests.e2e.conftest import BOT_TOKEN, message_text, wait_for_message_state, wait_for_request_message
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import slash_command_fields

APP_TOKEN = "xapp-1-test-not-real"


def command_payload(text: str, user_id: str, response_url: str) -> dict[str, Any]:
    return slash_command_fields(text, user_id=user_id, response_url=response_url)


async def test_socket_mode_answers_commands_and_clicks(
    start_bot: Any, world: PgWorld, fake_slack: FakeSlack, fresh_state_dsn: str
) -> None:
    bot = await start_bot(
        socket_mode=True,
        slack_app_token=APP_TOKEN,
        state_url=fresh_state_dsn,
        requesters="U0REQ",
        approvers="U0APP",
        approval_channel="C0APPROVE",
    )
    (opened,) = await fake_slack.wait_for(lambda: fake_slack.api_calls("apps.connections.open"))
    assert opened.headers.get("Authorization") == f"Bearer {APP_TOKEN}"
    await fake_slack.wait_for(lambda: fake_slack.sockets)

    role = world.role("sock", limit=1)
    pid = world.pid_of(world.connect(role))
    response_url = fake_slack.new_response_url()
    envelope = await fake_slack.send_envelope(
        "slash_commands", command_payload(f"limit {role}", "U0VIEWER", response_url)
    )
    await fake_slack.wait_for(lambda: fake_slack.acked(envelope))
    assert "1/1 — at limit" in message_text(await fake_slack.wait_for_response(response_url))

    response_url = fake_slack.new_response_url()
    await fake_slack.send_envelope("slash_commands", command_payload(f"kill {pid}", "U0REQ", response_url))
    answer = message_text(await fake_slack.wait_for_response(response_url))
    request_id = int(re.search(r"Request #(\d+)", answer).group(1))  # type: ignore[union-attr]
    message = await wait_for_request_message(fake_slack, "C0APPROVE", request_id)
    action_id, value = message.button("Approve")
    click = {
        "type": "block_actions",
        "user": {"id": "U0APP", "username": "u0app", "team_id": "T0TEST01"},
        "api_app_id": "A0TEST01",
        "team": {"id": "T0TEST01"},
        "container": {"type": "message", "message_ts": message.ts, "channel_id": "C0APPROVE"},
        "channel": {"id": "C0APPROVE"},
        "message": {"ts": message.ts},
        "response_url": fake_slack.new_response_url(),
        "actions": [{"type": "button", "action_id": action_id, "block_id": "pgconn_request", "value": value}],
    }
    envelope = await fake_slack.send_envelope("interactive", click)
    await fake_slack.wait_for(lambda: fake_slack.acked(envelope))
    done = await wait_for_message_state(fake_slack, message, lambda m: not m.buttons())
    assert "terminated" in done.text

    # Health and metrics are served in Socket Mode too; Slack's HTTP path is not.
    async with bot.session.get(bot.url + "/healthz") as health:
        assert health.status == 200
    async with bot.session.post(bot.url + "/slack/events", data=b"x") as events:
        assert events.status == 404
    assert BOT_TOKEN  # the bot token is used for Web API calls, the app token only to open the socket
