"""Operating the bot: `setup-sql` gives a role that really works, `check` says what is missing."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from bot.doctor import run_check
from bot.model.access import Identity
from bot.model.requests import TargetOutcome
from bot.model.results import Decided, RequestOpened
from bot.runtime import Runtime
from bot.setup_sql import setup_sql
from tests.conftest import PgWorld
from tests.e2e.conftest import BOT_TOKEN
from tests.e2e.test_processes import bot_env
from tests.support.fake_slack import FakeSlack


def test_setup_sql_prints_and_rejects_bad_names() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "setup-sql", "--role", "ops_bot"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    for expected in (
        'CREATE ROLE "ops_bot" LOGIN',
        'GRANT pg_monitor TO "ops_bot"',
        'GRANT pg_signal_backend TO "ops_bot"',
    ):
        assert expected in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "bot", "setup-sql", "--role", "x; DROP"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "use lower-case letters" in bad.stderr
    for bad in ("Robert'); DROP TABLE students;--", "x$$", "pg_bot", "public", "current_user"):
        with pytest.raises(ValueError):
            setup_sql(bad)
    assert 'CREATE ROLE "select" LOGIN' in setup_sql("select")  # a keyword, but quoted it is valid
    assert "PASSWORD" not in setup_sql()


@pytest.fixture
def least_privilege_role(world: PgWorld, fresh_state_dsn: str) -> Any:
    """The role exactly as setup-sql creates it, with its state in the fresh state database."""
    role = f"pgct_{world.tag}_bot"
    with psycopg.connect(fresh_state_dsn, autocommit=True) as admin:
        admin.execute(setup_sql(role).encode())
    world.roles.append(role)
    yield role
    for dsn in (fresh_state_dsn, world.dsn):
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
            admin.execute(f'DROP OWNED BY "{role}"')


async def test_the_setup_sql_role_can_do_everything_the_bot_needs(
    make_settings: Any, world: PgWorld, fresh_state_dsn: str, least_privilege_role: str
) -> None:
    role = least_privilege_role
    state_as_bot = psycopg.conninfo.make_conninfo(fresh_state_dsn, user=role)
    settings = make_settings(
        database_url=world.dsn_for(role), state_url=state_as_bot, requesters="U0REQ", approvers="U0APP"
    )
    out = io.StringIO()
    assert await run_check(settings, out) == 0, out.getvalue()
    report = out.getvalue()
    assert "✓ target default: can see other sessions' details" in report
    assert "✓ target default: can cancel/terminate other sessions" in report
    assert "✓ state database: database " in report and "schema pgconn is not there yet: `serve` creates it" in report
    assert "superuser" not in report
    with psycopg.connect(fresh_state_dsn) as conn:  # check looked, and created nothing
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgconn'").fetchone() == (0,)

    runtime = Runtime.build(settings)
    await runtime.start()
    out = io.StringIO()
    assert await run_check(settings, out) == 0, out.getvalue()
    assert "✓ state database: schema pgconn at version" in out.getvalue(), out.getvalue()
    try:
        student = world.role("student")
        pid = world.pid_of(world.connect(student))
        opened = (await runtime.service.handle(f"kill {pid}", Identity("U0REQ"))).result
        assert isinstance(opened, RequestOpened), opened
        decided = (await runtime.service.handle(f"approve {opened.request.id}", Identity("U0APP"))).result
        assert isinstance(decided, Decided)
        assert [t.outcome for t in decided.request.targets] == [TargetOutcome.TERMINATED]
    finally:
        await runtime.stop()


async def test_check_names_every_missing_privilege(make_settings: Any, world: PgWorld, fresh_state_dsn: str) -> None:
    weak = world.role("weak", limit=None)
    settings = make_settings(database_url=world.dsn_for(weak), state_url=fresh_state_dsn)
    out = io.StringIO()
    assert await run_check(settings, out) == 1
    report = out.getvalue()
    assert f"✗ target default: cannot see other users' sessions: GRANT pg_monitor TO {weak}" in report
    assert f"✗ target default: cannot signal other sessions: GRANT pg_signal_backend TO {weak}" in report


async def test_check_reports_unreachable_databases_without_passwords(make_settings: Any) -> None:
    secret_dsn = "postgresql://pgct_nobody:hunter2-secret@127.0.0.1:1/postgres"
    settings = make_settings(database_url=secret_dsn, state_url=secret_dsn)
    out = io.StringIO()
    assert await run_check(settings, out) == 1
    report = out.getvalue()
    assert "✗ target default: not reachable" in report and "✗ state database: not reachable" in report
    assert "hunter2" not in report


async def test_check_against_slack(make_settings: Any, fake_slack: FakeSlack, fresh_state_dsn: str) -> None:
    fake_slack.channels = {
        "C0APPROVE": {"name": "approvals", "is_member": True},
        "C0AUDIT": {"name": "audit", "is_private": True, "is_member": False},
    }
    fake_slack.usergroups = {"S0DBAS": ["U1", "U2"]}
    fake_slack.scopes = "commands,chat:write"
    settings = make_settings(
        state_url=fresh_state_dsn,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret="s",
        slack_api_url=fake_slack.api_url,
        approval_channel="C0APPROVE",
        audit_channel="C0AUDIT",
        alert_channel="C0GONE",
        approvers="S0DBAS,S0MISSING",
    )
    out = io.StringIO()
    assert await run_check(settings, out) == 1
    report = out.getvalue()
    assert "✓ Slack: token valid for team pgct, bot user UBOT" in report
    assert "✗ Slack: the token lacks scopes usergroups:read, chat:write.public, channels:read, groups:read" in report
    assert "✓ approval channel #approvals: the bot is a member" in report
    assert "✗ audit channel #audit: private and the bot is not in it" in report
    assert "✗ alert channel C0GONE: channel_not_found" in report
    assert "✓ user group S0DBAS: 2 members" in report and "✗ user group S0MISSING" in report
    assert BOT_TOKEN not in report


def test_check_as_a_process(pg_dsn: str, fresh_state_dsn: str) -> None:
    env = bot_env(PGCONN_DATABASE_URL=pg_dsn, PGCONN_STATE_URL=fresh_state_dsn, PGCONN_APPROVERS="U0APP")
    done = subprocess.run([sys.executable, "-m", "bot", "check"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All good." in done.stdout and "superuser" in done.stdout  # the test server's postgres: a warning
