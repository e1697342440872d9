"""`history` over signed HTTP, and the role-at-limit alert's last 24 hours in Slack."""

from __future__ import annotations

from typing import Any

from tests.conftest import PgWorld
from tests.e2e.conftest import message_text, posted_messages
from tests.support.fake_slack import FakeSlack

ALERTS = "C0ALERTS"


async def test_history_over_http_and_in_the_alert(
    fresh_state_dsn: str, start_bot: Any, world: PgWorld, fake_slack: FakeSlack
) -> None:
    bot = await start_bot(
        state_url=fresh_state_dsn,
        alert_channel=ALERTS,
        monitor_interval=0,  # cycles are driven by the test
        alert_utilization_warn=0.98,
        alert_utilization_crit=0.99,
        alert_idle_in_tx_seconds=3600,
        alert_long_query_seconds=3600,
    )
    none_yet = message_text(await bot.ask("history"))
    assert "No history yet for the server in the last 24h" in none_yet, none_yet

    role = world.role("student", limit=2)
    for _ in range(2):
        world.connect(role, "DBeaver")
    for _ in range(3):
        assert await bot.server.runtime.monitor.run_cycle()

    answer = message_text(await bot.ask(f"history {role} --since 2h"))
    assert f"{role}, last 2h: peak 2/2 connections" in answer, answer
    assert "at or over its limit: 1 time" in answer and "/pgconn stray" in answer
    server = message_text(await bot.ask("history"))
    assert "the server, last 24h: peak" in server and "client backends" in server, server
    status = message_text(await bot.ask("status"))
    assert "last 24h: " in status, status

    alert = await fake_slack.wait_for(
        lambda: next((m for m in posted_messages(fake_slack, ALERTS) if role in m.text), None), 5.0
    )
    assert "last 24h: " in alert.text and "connections; a mark is 1h" in alert.text, alert.text

    wrong = message_text(await bot.ask("history --since 0s"))
    assert "--since is at least 1m" in wrong, wrong
