"""Monitored servers ("targets") and how full they are."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

DEFAULT_TARGET = "default"


@dataclass(frozen=True)
class Fill:
    """How full a server was when the bot last looked (status or the monitor's snapshot)."""

    client_backends: int
    usable_slots: int
    max_connections: int
    observed_at: datetime


def usable_slots(max_connections: int, superuser_reserved: int, reserved: int) -> int:
    """The connection slots ordinary roles can use: max_connections less those kept for
    superusers (superuser_reserved_connections) and, on 16+, for pg_use_reserved_connections."""
    return max(1, max_connections - superuser_reserved - reserved)


class ServerSlots:
    """How full a server is, for anything that carries its settings and its client backends."""

    max_connections: int
    superuser_reserved: int
    reserved: int
    client_backends: int

    @property
    def usable_slots(self) -> int:
        return usable_slots(self.max_connections, self.superuser_reserved, self.reserved)

    @property
    def fill(self) -> float:
        return self.client_backends / self.usable_slots


@dataclass(frozen=True)
class Link:
    """The bot's own connection to a target (its lifeline): up, or why not."""

    connected: bool
    error: str | None = None
    full: Fullness | None = None


class Fullness(enum.StrEnum):
    """What refused the bot for lack of a connection slot."""

    SERVER = "server"  # every slot of the server is taken (53300, "remaining connection slots …")
    ROLE = "role"  # the bot's login role is at its CONNECTION LIMIT
    DATABASE = "database"  # the database is at its CONNECTION LIMIT
