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


async def test_work_cancelled_midway_gives_the_lifeline_back(pg_dsn: str) -> None:
    pools = TargetPools({"t": pg_dsn}, command_timeout=5.0)
    await pools.open()
    lifeline = pools.lifeline("t")
    try:
        await lifeline.wait_settled(10)
        assert lifeline.connected
        running = asyncio.Event()

        async def slow(conn: Any) -> None:
            running.set()
            await conn.execute("SELECT pg_catalog.pg_sleep(2)")

        work = asyncio.create_task(pools.run("t", slow))
        await asyncio.wait_for(running.wait(), timeout=5)
        assert lifeline.busy
        work.cancel()  # the bot stopping, or a caller giving up
        with pytest.raises(asyncio.CancelledError):
            await work
        async with asyncio.timeout(10):  # given back (or replaced), not held for ever
            while lifeline.busy or not lifeline.connected:  # noqa: ASYNC110 - the background hand-back is waited for
                await asyncio.sleep(0.02)

        async def answer(conn: Any) -> int:
            cur = await conn.execute("SELECT 1 AS one")
            row = await cur.fetchone()
            return int(row["one"])

        assert await pools.run("t", answer) == 1
    finally:
        await pools.close()
