"""`pgconn-bot setup-sql --drain` against the real PostgreSQL: its SQL, run in psql as a superuser
in a database of the test's own, lets the bot's role switch ALLOW_CONNECTIONS of the listed
databases and of nothing else; nobody else may call the function or create in its schema; and
`pgconn-bot check` says so. Everything is pgct_…; schema pgconn_drain is made only in pgct_
databases, dropped afterwards, and every database allows connections again before it is dropped."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot.db.sql import targets as target_sql
from bot.doctor import run_check
from bot.setup_sql import setup_sql
from tests.conftest import PgWorld
from tests.e2e.test_setup_sql import psql


@dataclass
class Drainable:
    role: str  # the bot's role, made by setup-sql's SQL
    home: str  # the database the SQL ran in: the one the bot connects to, where the function is
    drained: str  # the database --drain listed

    def as_bot(self, world: PgWorld) -> psycopg.Connection[Any]:
        return world.connect(self.role, database=self.home)


def allows_connections(world: PgWorld, database: str) -> bool:
    row = world.admin.execute("SELECT datallowconn FROM pg_catalog.pg_database WHERE datname = %s", (database,))
    found = row.fetchone()
    assert found is not None, database
    return bool(found[0])


def drain_part(text: str) -> str:
    """The part of setup-sql's output the README says to run in each further database."""
    start = text.index("-- Draining (/pgconn drain)")
    end = text.index("-- (end of draining)\n") + len("-- (end of draining)\n")
    return text[start:end]


def undo(world: PgWorld, homes: list[str]) -> None:
    """Every test database allows connections again, and schema pgconn_drain is gone."""
    for name in world.databases:
        world.admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
    for home in homes:
        with psycopg.connect(world.dsn_for(database=home), autocommit=True, connect_timeout=3) as admin:
            admin.execute("DROP SCHEMA IF EXISTS pgconn_drain CASCADE")


@pytest.fixture
def drainable(world: PgWorld) -> Iterator[Drainable]:
    home, drained = world.database("home"), world.database("db")
    role = f"pgct_{world.tag}_bot"
    world.roles.append(role)  # dropped at teardown, after the databases it has grants in
    try:
        done = psql(world.dsn_for(database=home), setup_sql(role, drain=[drained]))
        assert done.returncode == 0, done.stderr
        yield Drainable(role, home, drained)
    finally:
        undo(world, [home])


def set_allow(conn: psycopg.Connection[Any], database: str | None, allow: bool | None) -> None:
    conn.execute(target_sql.SET_ALLOW_CONNECTIONS, {"database": database, "allow": allow})


def test_the_bot_drains_and_undrains_a_listed_database(world: PgWorld, drainable: Drainable) -> None:
    bot = drainable.as_bot(world)
    assert bot.execute(target_sql.DRAINABLE).fetchone() == ([drainable.drained],)
    set_allow(bot, drainable.drained, False)
    assert not allows_connections(world, drainable.drained)
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(world.dsn_for(database=drainable.drained), connect_timeout=3).close()
    set_allow(bot, drainable.drained, True)
    assert allows_connections(world, drainable.drained)
    psycopg.connect(world.dsn_for(database=drainable.drained), connect_timeout=3).close()


def test_it_drains_nothing_it_does_not_list(world: PgWorld, drainable: Drainable) -> None:
    other = world.database("other")
    bot = drainable.as_bot(world)
    for database, allow in ((other, False), (drainable.home, False), ("postgres", False), (None, False)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is not one this function may drain"):
            set_allow(bot, database, allow)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        set_allow(bot, drainable.drained, None)
    assert allows_connections(world, other) and allows_connections(world, drainable.drained)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):  # and it cannot be bypassed
        bot.execute(f"ALTER DATABASE {other} WITH ALLOW_CONNECTIONS false")


def test_nobody_else_may_call_it_or_create_in_its_schema(world: PgWorld, drainable: Drainable) -> None:
    plain = world.role("plain")
    outsider = world.connect(plain, database=drainable.home)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="schema pgconn_drain"):
        set_allow(outsider, drainable.drained, False)
    # Even with the schema usable, the function itself is not granted to PUBLIC.
    with psycopg.connect(world.dsn_for(database=drainable.home), autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA pgconn_drain TO {}").format(sql.Identifier(plain)))
    for call in (target_sql.SET_ALLOW_CONNECTIONS, target_sql.DRAINABLE):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="function"):
            outsider.execute(call, {"database": drainable.drained, "allow": False} if "%(" in call else None)
    assert allows_connections(world, drainable.drained)
    # Neither the outsider nor the bot may put anything in the schema, or replace the function.
    for conn in (outsider, drainable.as_bot(world)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE pgconn_drain.squat (i int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "CREATE OR REPLACE FUNCTION pgconn_drain.drainable() RETURNS name[] LANGUAGE sql "
                "AS $$ SELECT ARRAY['postgres']::name[] $$"
            )
    with psycopg.connect(world.dsn_for(database=drainable.home), autocommit=True) as admin:
        functions = admin.execute(
            "SELECT p.proname::text, pg_catalog.pg_get_userbyid(p.proowner)::text, p.prosecdef,"
            "       pg_catalog.pg_get_userbyid(n.nspowner)::text"
            "  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'pgconn_drain' ORDER BY 1"
        ).fetchall()
        superuser = admin.execute("SELECT current_user::text").fetchone()
    assert superuser is not None
    (me,) = superuser  # who ran the SQL owns it all: the schema, and both functions
    assert functions == [("drainable", me, False, me), ("set_allow_connections", me, True, me)]


def test_postgresql_never_drains_the_database_the_function_is_in(world: PgWorld) -> None:
    home = world.database("home")
    role = f"pgct_{world.tag}_bot"
    world.roles.append(role)
    try:
        done = psql(world.dsn_for(database=home), setup_sql(role, drain=[home]))  # listed, even so
        assert done.returncode == 0, done.stderr
        with pytest.raises(psycopg.Error, match="cannot disallow connections for current database"):
            set_allow(world.connect(role, database=home), home, False)
        assert allows_connections(world, home)
    finally:
        undo(world, [home])


def test_the_drain_part_alone_sets_up_a_further_database(world: PgWorld, drainable: Drainable) -> None:
    """Targets on several databases of one server: the part the README names, in each of them."""
    second = world.database("second")
    try:
        text = setup_sql(drainable.role, drain=[drainable.drained])
        done = psql(world.dsn_for(database=second), drain_part(text))
        assert done.returncode == 0, done.stderr
        bot = world.connect(drainable.role, database=second)
        set_allow(bot, drainable.drained, False)
        assert not allows_connections(world, drainable.drained)
        set_allow(bot, drainable.drained, True)
        assert allows_connections(world, drainable.drained)
    finally:
        undo(world, [second])


async def test_check_tells_whether_drain_is_possible(
    make_settings: Any, world: PgWorld, drainable: Drainable, fresh_state_dsn: str
) -> None:
    async def check(database_url: str) -> str:
        out = io.StringIO()
        await run_check(make_settings(database_url=database_url, state_url=fresh_state_dsn), out)
        return out.getvalue()

    report = await check(world.dsn_for(drainable.role, drainable.home))
    assert f"✓ target default: drain possible for databases {drainable.drained}\n" in report, report

    elsewhere = world.database("elsewhere")  # the bot connects where the function is not
    report = await check(world.dsn_for(drainable.role, elsewhere))
    assert f"! target default: drain is not set up in database {elsewhere} (optional: " in report, report
    assert "superuser" not in report

    with psycopg.connect(world.dsn_for(database=drainable.home), autocommit=True) as admin:
        admin.execute(
            sql.SQL("REVOKE EXECUTE ON FUNCTION pgconn_drain.set_allow_connections(name, boolean) FROM {}").format(
                sql.Identifier(drainable.role)
            )
        )
    report = await check(world.dsn_for(drainable.role, drainable.home))
    assert (
        f"✗ target default: the bot's role may not execute pgconn_drain.set_allow_connections: GRANT EXECUTE ON "
        f"FUNCTION pgconn_drain.set_allow_connections(name, boolean) TO {drainable.role}\n"
    ) in report, report

    report = await check(world.dsn_for(database=drainable.home))  # the test server's postgres
    assert "✓ target default: drain possible (superuser)\n" in report, report
