"""The lifeline: one connection per target, kept for ever, and what it says when it cannot get in."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import bot.db.lifeline as lifeline_module
from bot.db.lifeline import full_kind
from bot.db.targets import TargetPools


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute", "server"),
        ("FATAL:  remaining connection slots are reserved for non-replication superuser connections", "server"),
        ("FATAL:  sorry, too many clients already", "server"),
        ('FATAL:  too many connections for role "pgconn_bot"', "role"),
        ('FATAL:  too many connections for database "exam"', "database"),
        ("connection refused", None),
        ('FATAL:  password authentication failed for user "bot"', None),
        (None, None),
    ],
)
def test_what_counts_as_full(reason: str | None, kind: str | None) -> None:
    assert full_kind(reason) == kind


async def test_a_refusing_target_is_logged_once_per_change_not_per_retry(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, pg_dsn: str
) -> None:
    monkeypatch.setattr(lifeline_module, "DOWN_RETRY_SECONDS", (0.02, 0.05))
    caplog.set_level(logging.INFO, logger="bot.db.lifeline")
    pools = TargetPools({"down": "postgresql://nobody@127.0.0.1:1/postgres"}, command_timeout=1.0)
    attempts = 0
    lifeline = pools.lifeline("down")
    connect = lifeline._connect

    async def counted() -> Any:
        nonlocal attempts
        attempts += 1
        return await connect()

    lifeline._connect = counted
    await pools.open()
    try:
        async with asyncio.timeout(10):
            while attempts < 5:  # noqa: ASYNC110 - the lifeline retrying is what is waited for
                await asyncio.sleep(0.02)
    finally:
        await pools.close()
    refusals = [r for r in caplog.records if "refuses the bot" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
    assert "127.0.0.1" in refusals[0].getMessage() and "port 1" in refusals[0].getMessage()  # libpq's reason
