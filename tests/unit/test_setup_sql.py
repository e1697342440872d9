"""`pgconn-bot setup-sql` offline: what it prints, that the README shows exactly that, and the
names it refuses (one line on stderr, exit 2, nothing on stdout). Against a real server:
tests/e2e/test_setup_sql.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.budget import Budget
from bot.setup_sql import setup_sql

ROOT = Path(__file__).resolve().parents[2]


def run_setup_sql(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m bot setup-sql`` with no configuration but ``env`` (and no .env: ``cwd``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PGCONN_", "SLACK_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", "setup-sql", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def readme_block() -> str:
    """The ```sql block of the README's "Database privileges" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Database privileges\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sql\n(.*?)```", section, re.DOTALL)
    assert found, "no ```sql block under ## Database privileges"
    return found.group(1)


def test_the_readme_shows_exactly_what_setup_sql_prints_by_default(tmp_path: Path) -> None:
    done = run_setup_sql(tmp_path)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert done.stdout == setup_sql() == readme_block()


@pytest.mark.parametrize("role", ["postgres", "pg_monitor", "public"])
def test_the_cli_refuses_reserved_names_with_one_line(tmp_path: Path, role: str) -> None:
    done = run_setup_sql(tmp_path, "--role", role)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgconn-bot setup-sql: ") and repr(role) in lines[0]
    assert "reserved" in lines[0] or "superuser" in lines[0]


@pytest.mark.parametrize(
    "role",
    [
        *("postgres", "Postgres", "pg_monitor", "pg_signal_backend", "pg_bot", "public", "PUBLIC", "none"),
        *("current_user", "session_user", "current_role", "user"),
    ],
)
def test_reserved_role_names_are_refused(role: str) -> None:
    with pytest.raises(ValueError, match=r"reserved|superuser"):
        setup_sql(role)


@pytest.mark.parametrize("role", ["x; DROP", "Robert'); DROP TABLE students;--", "x$$", "a" * 64, "1bot", ""])
def test_malformed_role_names_are_refused(role: str) -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        setup_sql(role)


def test_ordinary_names_are_quoted_and_no_password_is_set() -> None:
    assert 'CREATE ROLE "select" LOGIN' in setup_sql("select")  # a keyword, but quoted it is valid
    assert 'CREATE ROLE "postgres_bot" LOGIN' in setup_sql("postgres_bot")
    assert "PASSWORD" not in setup_sql()


def test_by_default_the_state_goes_where_the_sql_runs_and_no_other_database_is_suggested() -> None:
    text = setup_sql()
    assert "CREATE DATABASE" not in text and "current_database()" in text
    urls = re.findall(r"PGCONN_(?:DATABASE|STATE)_URL=postgresql://pgconn_bot@[^/]+/(\w+)", text)
    assert urls == ["postgres", "postgres"]  # the database it tells you to run it in


def test_a_state_database_of_its_own_is_created_and_suggested() -> None:
    text = setup_sql(state_database="pgconn_state")
    assert 'CREATE DATABASE "pgconn_state";\nGRANT CREATE ON DATABASE "pgconn_state" TO "pgconn_bot";' in text
    assert "PGCONN_STATE_URL=postgresql://pgconn_bot@db.example.org:5432/pgconn_state" in text
    assert "current_database()" not in text
    existing = setup_sql(state_database="postgres")  # exists in every cluster: granted, not created
    assert 'CREATE DATABASE "' not in existing and 'GRANT CREATE ON DATABASE "postgres"' in existing
    for bad in ("template1", "template0", "pg_state", "State", "x; DROP"):
        with pytest.raises(ValueError, match="state database"):
            setup_sql(state_database=bad)


def test_the_budget_sets_the_limit_and_reserved_connections() -> None:
    text = setup_sql(budget=Budget(targets=3, pool=4, state_pool=4, replicas=2))
    assert "CONNECTION LIMIT 46;" in text and "reserved_connections = 10 " in text
    assert "2 replicas open: per target (here 3)" in text
    assert all(len(line) <= 110 for line in text.splitlines())


def test_options_out_of_range_are_refused(tmp_path: Path) -> None:
    done = run_setup_sql(tmp_path, "--targets", "0")
    assert done.returncode == 2 and done.stdout == "" and "--targets and --replicas" in done.stderr


def test_an_unreachable_configured_server_does_not_stop_it(tmp_path: Path) -> None:
    done = run_setup_sql(tmp_path, PGCONN_DATABASE_URL="postgresql://pgct_nobody@127.0.0.1:1/postgres")
    assert done.returncode == 0 and done.stdout == setup_sql(), done.stderr
