"""App Home, /metrics and what never appears in logs or messages."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.conftest import PgWorld
from tests.e2e.conftest import BOT_TOKEN, BotUnderTest, message_text, wait_for_message_state, wait_for_request_message
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import SIGNING_SECRET, block_actions_payload, event_body, form_body, sign


async def open_home(bot: BotUnderTest, user: str) -> dict[str, Any]:
    before = len(bot.slack.api_calls("views.publish"))
    body = event_body({"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home"})
    headers = {**sign(body), "Content-Type": "application/json"}
    async with await bot.post(body, headers) as response:
        assert response.status == 200
    calls = await bot.slack.wait_for(lambda: bot.slack.api_calls("views.publish")[before:] or None)
    call = calls[-1]
    assert call.payload["user_id"] == user
    view = call.payload["view"]
    return json.loads(view) if isinstance(view, str) else view  # type: ignore[no-any-return]


def text_of(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


async def test_app_home_for_approvers_and_others(
    fresh_state_dsn: str, start_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_bot(
        state_url=fresh_state_dsn,
        requesters="U0REQ",
        approvers="U0APP",
        approval_channel="C0APPROVE",
        default_role="none",
        viewers="U0VIEW",
    )
    role = world.role("home")
    pid = world.pid_of(world.connect(role))
    answer = await bot.ask(f"kill {pid}", user_id="U0REQ")
    assert "sent for approval" in message_text(answer)

    approver = await open_home(bot, "U0APP")
    assert approver["type"] == "home"
    assert "Pending requests: 1" in text_of(approver) and f"terminate pid {pid}" in text_of(approver)
    assert any(b["type"] == "actions" for b in approver["blocks"])

    requester = await open_home(bot, "U0REQ")
    assert "You are a *requester*" in text_of(requester) and not any(
        b["type"] == "actions" for b in requester["blocks"]
    )
    stranger = await open_home(bot, "U0NOBODY")
    assert "no access" in text_of(stranger) and "terminate" not in text_of(stranger)

    # Approving from the tab: executed, and the tab is published again with the outcome.
    message = await wait_for_request_message(fake_slack, "C0APPROVE", 1)
    action_id, value = next(
        (e["action_id"], e["value"])
        for b in approver["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if "Approve" in e["text"]["text"]
    )
    click = block_actions_payload(
        user_id="U0APP", action_id=action_id, value=value, channel_id="", message_ts="", response_url=None
    )
    click["container"] = {"type": "view", "view_id": "V0HOME"}
    del click["channel"], click["message"]
    form = form_body(click)
    before = len(fake_slack.api_calls("views.publish"))
    async with await bot.post(form, sign(form)) as response:
        assert response.status == 200
    await wait_for_message_state(fake_slack, message, lambda m: not m.buttons())
    published = await fake_slack.wait_for(lambda: fake_slack.api_calls("views.publish")[before:] or None)
    refreshed = published[-1].payload["view"]
    refreshed = json.loads(refreshed) if isinstance(refreshed, str) else refreshed
    assert "No pending requests" in text_of(refreshed) and "terminated" in text_of(refreshed)


async def test_metrics_count_requests_outcomes_and_queries(
    fresh_state_dsn: str, start_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_bot(
        state_url=fresh_state_dsn, requesters="U0REQ", approvers="U0APP", approval_channel="C0APPROVE"
    )
    role = world.role("metered")
    pid = world.pid_of(world.connect(role))
    await bot.ask(f"kill {pid}", user_id="U0REQ")
    message = await wait_for_request_message(fake_slack, "C0APPROVE", 1)
    await bot.click(message, "Approve", "U0APP")
    await wait_for_message_state(fake_slack, message, lambda m: not m.buttons())
    async with bot.session.get(bot.url + "/metrics") as response:
        assert response.status == 200
        metrics = await response.text()
    for expected in (
        'pgconn_requests_total{action="terminate",outcome="opened"}',
        'pgconn_decisions_total{decision="approved"}',
        'pgconn_target_outcomes_total{action="terminate",outcome="terminated"}',
        "pgconn_execution_seconds_count",
        "pgconn_request_decision_seconds_count",
        'pgconn_target_query_seconds_count{target="default"}',
        'pgconn_commands_total{outcome="ok",subcommand="kill"}',
        "pgconn_audit_undelivered",
    ):
        assert expected in metrics, expected


async def test_secrets_never_reach_logs_or_slack(
    start_bot: Any, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture, world: PgWorld
) -> None:
    password = "s3cret-Pa55word"
    dead = f"postgresql://pgct_nobody:{password}@127.0.0.1:1/postgres"
    caplog.set_level(logging.DEBUG)
    bot = await start_bot(targets=json.dumps({"vault": dead}))
    answer = message_text(await bot.ask("status --db vault"))
    assert "unreachable" in answer
    fake_slack.overrides["chat.postMessage"] = lambda p: None
    everything = caplog.text + answer + json.dumps([c.payload for c in fake_slack.calls])
    for secret in (password, BOT_TOKEN, SIGNING_SECRET):
        assert secret not in everything
