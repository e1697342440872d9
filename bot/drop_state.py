"""``pgconn-bot drop-state``: remove the bot's own state (schema pgconn) from its database.

The audit table refuses DELETE and UPDATE on purpose, so there is no other way to empty it short of
SQL: ``DROP SCHEMA pgconn CASCADE``. This says what would go, asks, and refuses while a replica of
the bot is running on it (it would recreate the schema, and lose what it was doing).
"""

from __future__ import annotations

from typing import TextIO

from bot.config import Settings
from bot.db.state import StateStore
from bot.errors import first_line
from bot.redact import redact

CONNECT_SECONDS = 5.0


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


async def drop_state(settings: Settings, *, yes: bool, stdin: TextIO, out: TextIO) -> int:
    """0: removed, or nothing to remove; 1: refused or failed; 2: not confirmed."""
    store = StateStore(settings.state_dsn(), timeout=CONNECT_SECONDS, max_size=1)
    try:
        await store.open()
        there = await store.presence()
        place = f"database {there.database} on {there.where} ({settings.state_variable()})"
        if not there.exists:
            out.write(f"Nothing to remove: there is no schema pgconn in {place}.\n")
            return 0
        if (problem := await store.ownership_problem()) is not None:
            out.write(f"Not removed: {problem}\n")
            return 1
        held = await store.contents()
        if held.live_replicas:
            out.write(
                f"Not removed: {_plural(held.live_replicas, 'replica', 'replicas')} of the bot ran on it in the "
                "last minute; stop every `serve`/`socket` first.\n"
            )
            return 1
        out.write(
            f"This removes schema pgconn from {place}: "
            f"{_plural(held.requests, 'request', 'requests')}, "
            f"{_plural(held.audit_entries, 'audit entry', 'audit entries')}, "
            f"{_plural(held.alerts, 'alert', 'alerts')}. The audit trail cannot be recovered.\n"
        )
        if not yes:
            if not stdin.isatty():
                out.write("Not removed: run it again with --yes to remove it.\n")
                return 2
            out.write(f"Type the database name ({there.database}) to remove it: ")
            out.flush()
            if stdin.readline().strip() != there.database:
                out.write("Not removed.\n")
                return 2
        await store.drop()
        out.write(f"Removed schema pgconn from {place}.\n")
        return 0
    except Exception as exc:
        out.write(f"Not removed: {redact(first_line(exc))}\n")
        return 1
    finally:
        await store.close()
