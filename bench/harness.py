"""What every benchmark scenario uses: the results table, a bot process, a Slack-signed driver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from tests.support.fake_slack import FakeSlack
from tests.support.slack_requests import block_actions_body, sign, slash_command_body

SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench-not-real"
REQUESTER, APPROVER, APPROVALS = "U0BREQ", "U0BAPP", "C0BENCH"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Table:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, what: str, value: str, goal: str = "", met: bool | None = None) -> None:
        self.rows.append((what, value, goal, "" if met is None else ("yes" if met else "NO")))

    def print(self) -> None:
        headers = ("measurement", "result", "goal", "met")
        widths = [max(len(r[i]) for r in [headers, *self.rows]) for i in range(4)]
        for row in [headers, tuple("-" * w for w in widths), *self.rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Process:
    """A server process on loopback, waited for on /healthz (or, with ``healthy=False``, only until
    it listens: a bot started without its state database answers 503 there)."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, *, healthy: bool = True) -> None:
        self.args, self.env, self.port, self.healthy = args, env, port, healthy
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Process:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, env=self.env, cwd=ROOT, stderr=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
        )
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    if self.proc.returncode is not None:
                        raise RuntimeError(f"{self.args} exited with {self.proc.returncode}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(self.url + "/healthz") as response:
                            if response.status == 200 or not self.healthy:
                                return self
                    await asyncio.sleep(0.05)

    async def __aexit__(self, *_: object) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 15)


class Driver:
    """Sends Slack-signed requests and waits for what arrives at the fake Slack."""

    def __init__(self, session: aiohttp.ClientSession, slack: FakeSlack) -> None:
        self.session, self.slack = session, slack

    async def command(self, url: str, text: str, user: str = "U0BVIEW") -> tuple[float, float, dict[str, Any]]:
        """(ack seconds, answer seconds, answer) for one slash command."""
        response_url = self.slack.new_response_url()
        body = slash_command_body(text, user_id=user, response_url=response_url)
        started = time.perf_counter()
        async with self.session.post(url + "/slack/events", data=body.encode(), headers=sign(body, SECRET)) as r:
            assert r.status == 200, await r.text()
        acked = time.perf_counter() - started
        answer = await self.slack.wait_for_response(response_url, timeout=30)
        return acked, time.perf_counter() - started, answer


async def timed(samples: int, one: Callable[[], Awaitable[Any]]) -> list[float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await one()
        times.append((time.perf_counter() - started) * 1000)
    return times


STILL_THERE = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"


async def kill_and_approve(driver: Driver, url: str, admin: psycopg.AsyncConnection[Any], pid: int) -> float | None:
    """``kill <pid>`` as a requester, Approve as an approver: ms from the click until the backend is
    gone from pg_stat_activity (None if the request was not made)."""
    _, _, answer = await driver.command(url, f"kill {pid}", user=REQUESTER)
    text = json.dumps(answer)
    if "Request #" not in text or "sent for approval" not in text:
        return None
    request_id = text.split("Request #", 1)[1].split(" ", 1)[0]
    ts, value = await driver.slack.wait_for(lambda: _request_message(driver.slack, request_id), timeout=10)
    body = block_actions_body(
        user_id=APPROVER,
        action_id="pgconn_approve",
        value=value,
        channel_id=APPROVALS,
        message_ts=ts,
        response_url=driver.slack.new_response_url(),
    )
    started = time.perf_counter()
    async with driver.session.post(url + "/slack/events", data=body.encode(), headers=sign(body, SECRET)) as response:
        assert response.status == 200
    async with asyncio.timeout(10):
        while await (await admin.execute(STILL_THERE, (pid,))).fetchone():  # noqa: ASYNC110
            await asyncio.sleep(0.002)  # polling pg_stat_activity is the measurement itself
    return (time.perf_counter() - started) * 1000


def _request_message(slack: FakeSlack, request_id: str) -> tuple[str, str] | None:
    for ts, message in slack.messages.get(APPROVALS, {}).items():
        if f"Request #{request_id}:" in message.get("text", ""):
            return ts, request_id
    return None
