"""Acknowledge and snooze over signed HTTP: the alert's message edited in place naming the clicker,
the Snooze menu and Un-snooze, and a viewer's click refused privately, changing nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from bot.render.blocks import ALERT_SNOOZE_ACTION
from tests.conftest import PgWorld
from tests.e2e.conftest import (
    BotUnderTest,
    Posted,
    ephemeral_answer,
    message_text,
    posted_messages,
    wait_for_message_state,
)
from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import block_actions_payload, form_body, sign

ALERTS = "C0ALERTS"
REQUESTER, APPROVER, VIEWER = "U0REQ", "U0APP", "U0VIEWER"


@pytest.fixture
def start_monitored_bot(fresh_state_dsn: str, start_bot: Any) -> Callable[..., Any]:
    async def start(**overrides: Any) -> BotUnderTest:
        settings: dict[str, Any] = {
            "requesters": REQUESTER,
            "approvers": APPROVER,
            "approval_channel": "C0APPROVE",
            "alert_channel": ALERTS,
            "state_url": fresh_state_dsn,
            "monitor_interval": 0,  # cycles are driven by the test
            # Other sessions on the test server must not raise alerts of their own.
            "alert_utilization_warn": 0.98,
            "alert_utilization_crit": 0.99,
            "alert_idle_in_tx_seconds": 3600,
            "alert_long_query_seconds": 3600,
        }
        settings.update(overrides)
        return await start_bot(**settings)  # type: ignore[no-any-return]

    return start


async def role_alert(bot: BotUnderTest, world: PgWorld, name: str) -> tuple[str, Posted]:
    role = world.role(name, limit=1)
    world.connect(role)
    assert await bot.server.runtime.monitor.run_cycle()
    (alert,) = [m for m in posted_messages(bot.slack, ALERTS) if "thread_ts" not in m.payload and role in m.text]
    return role, alert


def snooze_choices(message: Posted) -> dict[str, str]:
    """The Snooze menu's options: label → value."""
    return {
        option["text"]["text"]: option["value"]
        for block in message.payload.get("blocks") or []
        for element in block.get("elements", [])
        if element.get("type") == "static_select" and element.get("action_id") == ALERT_SNOOZE_ACTION
        for option in element["options"]
    }


async def choose(bot: BotUnderTest, message: Posted, label: str, user_id: str) -> Any:
    """Pick an option of the Snooze menu, as Slack sends it (a static_select's block_actions)."""
    value = snooze_choices(message)[label]
    response_url = bot.slack.new_response_url()
    payload = block_actions_payload(
        user_id=user_id,
        action_id=ALERT_SNOOZE_ACTION,
        value="",
        channel_id=message.channel,
        message_ts=message.ts,
        response_url=response_url,
        block_id=f"pgconn_alert_{value.split(':')[0]}",
    )
    payload["actions"] = [
        {
            "type": "static_select",
            "action_id": ALERT_SNOOZE_ACTION,
            "block_id": f"pgconn_alert_{value.split(':')[0]}",
            "selected_option": {"text": {"type": "plain_text", "text": label}, "value": value},
            "placeholder": {"type": "plain_text", "text": "Snooze…"},
            "action_ts": f"{time.time():.6f}",
        }
    ]
    body = form_body(payload)
    async with await bot.post(body, sign(body)) as response:
        assert response.status == 200, await response.text()
    return message_text(await bot.slack.wait_for_response(response_url))


def acked_by(dsn: str, ts: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as state:
        return state.execute("SELECT acked_by FROM pgconn.alert WHERE message_ts = %s", (ts,)).fetchall()


async def test_acknowledge_edits_the_message_naming_the_clicker_and_can_be_taken_over(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack, fresh_state_dsn: str
) -> None:
    bot = await start_monitored_bot()
    role, alert = await role_alert(bot, world, "acked")
    assert {"Request cleanup", "Acknowledge"} <= set(alert.buttons()) and "Un-snooze" not in alert.buttons()
    assert set(snooze_choices(alert)) == {"Snooze 1h", "Snooze 4h", "Snooze 1d"}

    answer = await ephemeral_answer(bot, await bot.click(alert, "Acknowledge", REQUESTER))
    assert "You are on alert #" in answer
    edited = await wait_for_message_state(fake_slack, alert, lambda m: f"<@{REQUESTER}> is on it since" in m.text)
    assert edited.ts == alert.ts and "<!date^" in edited.text and role in edited.text
    assert acked_by(fresh_state_dsn, alert.ts) == [(REQUESTER,)]

    taken = await ephemeral_answer(bot, await bot.click(edited, "Acknowledge", APPROVER))
    assert f"over from <@{REQUESTER}>" in taken
    await wait_for_message_state(fake_slack, alert, lambda m: f"<@{APPROVER}> is on it since" in m.text)
    assert len([m for m in posted_messages(fake_slack, ALERTS) if role in m.text]) == 1  # edited, never re-posted

    listing = message_text(await bot.ask("alerts", user_id=VIEWER))
    assert f"<@{APPROVER}> is on it since" in listing


async def test_snooze_from_the_menu_then_unsnooze(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_monitored_bot()
    _, alert = await role_alert(bot, world, "snoozed")

    answer = await choose(bot, alert, "Snooze 1h", REQUESTER)
    assert "is snoozed until" in answer and "unsnooze" in answer
    snoozed = await wait_for_message_state(fake_slack, alert, lambda m: "snoozed until" in m.text)
    assert f"by <@{REQUESTER}>" in snoozed.text and "Un-snooze" in snoozed.buttons()
    assert "snoozed until" in message_text(await bot.ask("alerts", user_id=VIEWER))

    woken = await ephemeral_answer(bot, await bot.click(snoozed, "Un-snooze", REQUESTER))
    assert "not snoozed any more" in woken
    plain = await wait_for_message_state(fake_slack, alert, lambda m: "snoozed until" not in m.text)
    assert "Un-snooze" not in plain.buttons() and "Acknowledge" in plain.buttons()


async def test_a_viewers_click_is_refused_privately_and_changes_nothing(
    start_monitored_bot: Any, world: PgWorld, fake_slack: FakeSlack, fresh_state_dsn: str
) -> None:
    bot = await start_monitored_bot()
    _, alert = await role_alert(bot, world, "viewed")
    before = dict(fake_slack.messages[ALERTS][alert.ts])

    refused = await ephemeral_answer(bot, await bot.click(alert, "Acknowledge", VIEWER))
    assert "needs the requester role" in refused
    assert "needs the requester role" in await choose(bot, alert, "Snooze 4h", VIEWER)

    assert fake_slack.messages[ALERTS][alert.ts] == before and fake_slack.api_calls("chat.update", ALERTS) == []
    assert acked_by(fresh_state_dsn, alert.ts) == [(None,)]
    with psycopg.connect(fresh_state_dsn) as state:
        assert state.execute("SELECT count(*) FROM pgconn.alert_snooze").fetchone() == (0,)
        events = state.execute("SELECT count(*) FROM pgconn.audit WHERE event IN ('acknowledged', 'snoozed')")
        assert events.fetchone() == (0,)
