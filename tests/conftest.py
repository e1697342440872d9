"""Shared fixtures: a real PostgreSQL (PGCONN_TEST_DSN), prefixed throwaway roles and connections.

Everything a test creates is named ``pgct_…`` and removed afterwards; leftovers from a crashed
run are swept at the start. Nothing else on the server is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.fake_slack import FakeSlack

TEST_DSN = os.environ.get("PGCONN_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "pgct_"
RUN_LOCK_KEY = 7_261_904_213
_RUN_LOCK: psycopg.Connection[Any] | None = None


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(TEST_DSN, autocommit=True, connect_timeout=3)


def _sweep(conn: psycopg.Connection[Any], like: str) -> None:
    roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (like,))]
    for role in roles:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def server_major() -> int | None:
    """The major version of the test server (None if it does not answer)."""
    try:
        with psycopg.connect(TEST_DSN, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
    except psycopg.OperationalError:
        return None
    return int(row[0]) // 10000 if row else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pg(min=None, max=None): runs only where the test server's major version is in range "
        "(the matrix runs every supported version; elsewhere the test is deselected)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gated = [item for item in items if item.get_closest_marker("pg") is not None]
    if not gated:
        return
    major = server_major()
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("pg")
        low = marker.kwargs.get("min") if marker else None
        high = marker.kwargs.get("max") if marker else None
        fits = major is None or ((low is None or major >= low) and (high is None or major <= high))
        (kept if fits else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The admin DSN of the test server; stops the whole run at once if none answers."""
    global _RUN_LOCK
    try:
        # Every run holds the lock shared for as long as it runs; leftovers of crashed runs are
        # swept only by a run that can take it exclusively (no other run in progress on this
        # server, before it made anything), so concurrent runs never drop each other's objects.
        _RUN_LOCK = _admin()
        alone = _RUN_LOCK.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,)).fetchone()
        if alone and alone[0]:
            with _admin() as conn:
                for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                _sweep(conn, PREFIX + "%")
            _RUN_LOCK.execute("SELECT pg_advisory_unlock(%s)", (RUN_LOCK_KEY,))
        _RUN_LOCK.execute("SELECT pg_advisory_lock_shared(%s)", (RUN_LOCK_KEY,))
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0]
        pytest.exit(
            f"No PostgreSQL at {TEST_DSN} ({first}). Start one (e.g. pg_ctlcluster 15 main start) "
            "or point PGCONN_TEST_DSN at a server where tests may create pgct_ roles.",
            returncode=3,
        )
    return TEST_DSN


def _throwaway_database(pg_dsn: str) -> Iterator[str]:
    name = f"{PREFIX}state_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(pg_dsn)
    params["dbname"] = name
    yield make_conninfo(**params)
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def state_dsn(pg_dsn: str) -> Iterator[str]:
    """A throwaway database for the bot's own state, shared by the tests that need no clean slate."""
    yield from _throwaway_database(pg_dsn)


@pytest.fixture
def fresh_state_dsn(pg_dsn: str) -> Iterator[str]:
    """A state database of this test's own: no other test's requests or audit entries in it."""
    yield from _throwaway_database(pg_dsn)


class PgWorld:
    """Roles and live connections a test makes; all removed at teardown."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.tag = uuid.uuid4().hex[:6]
        self.roles: list[str] = []
        self.connections: list[psycopg.Connection[Any]] = []
        self.databases: list[str] = []
        self.admin = _admin()

    def database(self, suffix: str = "db", *, limit: int = -1) -> str:
        name = f"{PREFIX}{self.tag}_{suffix}"
        self.admin.execute(
            sql.SQL("CREATE DATABASE {} CONNECTION LIMIT {}").format(sql.Identifier(name), sql.Literal(limit))
        )
        self.databases.append(name)
        return name

    def dsn_for(self, role: str | None = None, database: str | None = None, **extra: Any) -> str:
        params = conninfo_to_dict(self.dsn)
        if role:
            params["user"] = role
        if database:
            params["dbname"] = database
        params.update(extra)
        return make_conninfo(**params)

    def role(self, suffix: str = "user", *, limit: int | None = 5, superuser: bool = False) -> str:
        name = f"{PREFIX}{self.tag}_{suffix}"
        options = sql.SQL("LOGIN")
        if limit is not None:
            options += sql.SQL(" CONNECTION LIMIT {}").format(sql.Literal(limit))
        if superuser:
            options += sql.SQL(" SUPERUSER")
        self.admin.execute(sql.SQL("CREATE ROLE {} ").format(sql.Identifier(name)) + options)
        self.roles.append(name)
        return name

    def connect(self, role: str, application: str = "pgct", database: str | None = None) -> psycopg.Connection[Any]:
        dsn = self.dsn_for(role, database, application_name=application, connect_timeout=3)
        conn = psycopg.connect(dsn, autocommit=True)
        self.connections.append(conn)
        return conn

    def pid_of(self, conn: psycopg.Connection[Any]) -> int:
        return conn.info.backend_pid

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        # Databases first: a test role may own one.
        for name in self.databases:
            self.admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in self.roles:
            self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            self.admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        self.admin.close()


@pytest.fixture
def world(pg_dsn: str) -> Iterator[PgWorld]:
    w = PgWorld(pg_dsn)
    yield w
    w.close()


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    slack = await FakeSlack().start()
    yield slack
    await slack.stop()


@pytest.fixture
def make_settings(pg_dsn: str, state_dsn: str) -> Callable[..., Any]:
    from bot.config import load_settings

    def make(**overrides: Any) -> Any:
        base: dict[str, Any] = {
            "database_url": pg_dsn,
            "state_url": state_dsn,
            "monitor_interval": 0,
            "command_timeout": 2.0,
        }
        base.update(overrides)
        return load_settings(**base)

    return make
