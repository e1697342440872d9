"""`pgconn-bot setup-sql` against the real PostgreSQL: its SQL, pasted into psql as a superuser,
makes a role that can log in and see every session; a role that is a superuser on the configured
server is refused. Roles and databases are pgct_… and dropped afterwards (PgWorld)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bot.setup_sql import setup_sql
from tests.conftest import PgWorld
from tests.unit.test_setup_sql import run_setup_sql

PSQL = shutil.which("psql")


def psql(dsn: str, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` fed to psql as a file would be (each statement on its own, autocommit)."""
    assert PSQL is not None, "psql (PostgreSQL's client) is needed: apt-get install postgresql-client"
    return subprocess.run(
        [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )


def sees_other_sessions(world: PgWorld, role: str, database: str | None = None) -> None:
    """As ``role``: logs in, sees another role's session with its query, and has the pinned path."""
    someone = world.role(f"other{len(world.roles)}", limit=None)
    other = world.connect(someone)
    other.execute("SELECT 'pgct marker'")
    with psycopg.connect(world.dsn_for(role, database), autocommit=True, connect_timeout=3) as conn:
        row = conn.execute(
            "SELECT usename::text, query FROM pg_stat_activity WHERE pid = %s", (other.info.backend_pid,)
        ).fetchone()
        assert row == (someone, "SELECT 'pgct marker'")
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog, pg_temp",)


def role_row(world: PgWorld, role: str) -> Any:
    return world.admin.execute(
        "SELECT rolsuper, rolcanlogin, rolconnlimit, pg_has_role(rolname, 'pg_monitor', 'MEMBER'),"
        " pg_has_role(rolname, 'pg_signal_backend', 'MEMBER') FROM pg_roles WHERE rolname = %s",
        (role,),
    ).fetchone()


def test_the_default_sql_pasted_into_psql_makes_a_working_role(world: PgWorld, fresh_state_dsn: str) -> None:
    role = f"pgct_{world.tag}_bot"
    world.roles.append(role)  # dropped at teardown (after the fresh database it was granted on)
    done = psql(fresh_state_dsn, setup_sql(role))
    assert done.returncode == 0, done.stderr
    assert role_row(world, role) == (False, True, 14, True, True)
    state_db = conninfo_to_dict(fresh_state_dsn)["dbname"]
    granted = world.admin.execute("SELECT has_database_privilege(%s, %s, 'CREATE')", (role, state_db)).fetchone()
    assert granted == (True,)  # where the bot will create schema pgconn
    sees_other_sessions(world, role)
    sees_other_sessions(world, role, state_db)


def test_a_state_database_of_its_own_is_created_by_the_sql(world: PgWorld, tmp_path: Path) -> None:
    role, state_db = f"pgct_{world.tag}_bot", f"pgct_{world.tag}_state"
    world.roles.append(role)
    world.databases.append(state_db)  # dropped before the role
    done = psql(world.dsn, setup_sql(role, state_db))
    assert done.returncode == 0, done.stderr
    granted = world.admin.execute("SELECT has_database_privilege(%s, %s, 'CREATE')", (role, state_db)).fetchone()
    assert granted == (True,)
    with psycopg.connect(world.dsn_for(role, state_db), autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE SCHEMA pgconn AUTHORIZATION "{role}"')  # what the bot does at start
        conn.execute("DROP SCHEMA pgconn")
    sees_other_sessions(world, role, state_db)


def test_a_superuser_on_the_configured_server_is_refused(world: PgWorld, pg_dsn: str, tmp_path: Path) -> None:
    superuser = world.role("su", superuser=True)
    done = run_setup_sql(tmp_path, "--role", superuser, PGCONN_DATABASE_URL=pg_dsn)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and repr(superuser) in lines[0] and "superuser" in lines[0], done.stderr

    ordinary = world.role("plain")  # exists, not a superuser: printed (its grants can still be run)
    done = run_setup_sql(tmp_path, "--role", ordinary, PGCONN_DATABASE_URL=pg_dsn)
    assert done.returncode == 0 and f'CREATE ROLE "{ordinary}"' in done.stdout, done.stderr
