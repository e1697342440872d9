"""A server of the test's own, and a crowd that takes every connection slot it can get.

The machine's shared PostgreSQL is never filled: these tests start a throwaway cluster of the same
major version as the test server (tests/matrix/servers.py), fill it, and throw it away.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.budget import Budget
from bot.setup_sql import setup_sql
from tests.conftest import server_major
from tests.matrix.servers import Cluster, throwaway_cluster

BOT = "pgct_bot"
FILLER = "pgct_filler"


@contextlib.contextmanager
def own_server(max_connections: int = 20, **settings: str) -> Iterator[Cluster]:
    """A cluster of the test server's major version with the bot's role (exactly as setup-sql
    makes it) and a role for the crowd."""
    with throwaway_cluster(server_major() or 15, max_connections=max_connections, settings=settings) as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            admin.execute(setup_sql(BOT, budget=Budget(targets=1, pool=4, state_pool=4)).encode())
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(FILLER)))
        yield cluster


def dsn_as(cluster: Cluster, role: str, **extra: Any) -> str:
    params = conninfo_to_dict(cluster.dsn)
    params.update(user=role, **extra)
    return make_conninfo(**params)


class Crowd:
    """Client sessions that take every slot they can; with ``refill``, a freed one is taken again
    at once (as a connection pool in a hurry would)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.connections: list[psycopg.Connection[Any]] = []
        self._stop = threading.Event()
        self._refiller: threading.Thread | None = None

    def _connect(self) -> psycopg.Connection[Any] | None:
        try:
            return psycopg.connect(self._dsn, autocommit=True, connect_timeout=3, application_name="crowd")
        except psycopg.OperationalError:
            return None

    def fill(self) -> int:
        """Take slots until the server refuses; returns how many are held."""
        while (conn := self._connect()) is not None:
            self.connections.append(conn)
        return len(self.connections)

    def refill(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                alive = [c for c in self.connections if not c.closed and not c.broken and _answers(c)]
                self.connections = alive
                if (conn := self._connect()) is not None:
                    self.connections.append(conn)
                    continue
                self._stop.wait(0.02)

        self._refiller = threading.Thread(target=run, daemon=True)
        self._refiller.start()

    def free(self, count: int = 1) -> None:
        for conn in self.connections[:count]:
            conn.close()
        self.connections = self.connections[count:]

    def pids(self) -> list[int]:
        return [c.info.backend_pid for c in self.connections]

    def close(self) -> None:
        self._stop.set()
        if self._refiller is not None:
            self._refiller.join(timeout=5)
        for conn in self.connections:
            with contextlib.suppress(Exception):
                conn.close()


def _answers(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    """For state outside the bot (a server filling up): re-check until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)
