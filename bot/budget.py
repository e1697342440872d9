"""How many connections the bot opens: what its role's CONNECTION LIMIT and a server's
reserved_connections must allow. ``setup-sql`` and ``check`` both count with this.

Per replica, on each server: for every target on it, one lifeline and up to
PGCONN_POOL_MAX_SIZE pooled connections; if the state database is on it too, up to
PGCONN_STATE_POOL_MAX_SIZE state connections and one more kept for health checks while the
state pool is busy. ``pgconn-bot check`` opens one connection per target and a few to the
state database while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECK_CONNECTIONS = 3  # room for a `pgconn-bot check` run beside the replicas


@dataclass(frozen=True)
class Budget:
    targets: int  # targets on the server (databases of it)
    pool: int  # PGCONN_POOL_MAX_SIZE
    state_pool: int  # PGCONN_STATE_POOL_MAX_SIZE
    state_here: bool = True  # the state database is on this server too
    replicas: int = 1

    @property
    def per_replica(self) -> int:
        state = self.state_pool + 1 if self.state_here else 0
        return self.targets * (self.pool + 1) + state

    @property
    def connection_limit(self) -> int:
        """For the role's CONNECTION LIMIT: every replica at its most, and a `check` run."""
        return self.replicas * self.per_replica + self.targets + CHECK_CONNECTIONS

    @property
    def when_full(self) -> int:
        """What the bot needs to keep working when the server is full: a lifeline per target, and
        (if the state is here) its state connections, for every replica: reserved_connections."""
        state = 2 if self.state_here else 0
        return self.replicas * (self.targets + state)
