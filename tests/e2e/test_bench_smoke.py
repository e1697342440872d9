"""The benchmark in smoke mode, so it cannot rot (its goals are judged by the full run, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import PgWorld

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke_runs_every_measurement(pg_dsn: str, world: PgWorld) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--dsn", pg_dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for row in (
        "list: bot, signed request → answer",
        "list: framework floor",
        "list: raw query, warm connection",
        "commands at once",
        "approve click → backend gone",
        "status with",
        "limits with",
        "monitor cycle with history",
        "history size",
        "bot RSS after the load",
        "server full (max_connections 30, slots refilled), bot running before",
        "the bot started into the full server, PostgreSQL 16",
        "PostgreSQL 15, the bot started into the full server",
        "then one slot freed",
        "the bot's role at setup-sql's CONNECTION LIMIT",
        "targets that are databases of one server",
        "one frozen target among 20",
        "SIGSTOP the leader",
        "finished requests: slowest periodic statement",
    ):
        assert row in done.stdout, row
    leftovers = world.admin.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgct_bench_%'").fetchone()
    assert leftovers == (0,)
