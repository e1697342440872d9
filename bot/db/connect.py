"""How every connection the bot opens is set up: one place, so none can be forgotten.

``search_path`` is pinned to ``pg_catalog, pg_temp`` in the startup packet (libpq ``options``).
Without it, a role that may create objects in a schema on the path (every login role in
``public`` up to PostgreSQL 14; a database's owner on 15+, who can also ``ALTER DATABASE … SET
search_path``) could plant ``public.lower(name)`` or an operator and have it run as the bot.
Client startup options take precedence over per-database and per-role settings, so nobody on
the server can undo the pin. The bot's own objects are always schema-qualified (``pgconn.…``).
"""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict

BOT_APPLICATION_NAME = "pgconn-bot"
SEARCH_PATH = "pg_catalog, pg_temp"
_PIN = "-c search_path=pg_catalog,pg_temp"


def pinned_options(dsn: str, extra: str = "") -> str:
    """The DSN's own ``options`` (if any), then ``extra``, then the pin: a later ``-c`` wins."""
    try:
        own = str(conninfo_to_dict(dsn).get("options") or "")
    except Exception:  # a malformed DSN fails at connect, with libpq's reason
        own = ""
    return " ".join(part for part in (own, extra, _PIN) if part)


def connect_kwargs(dsn: str, *, connect_timeout: float, extra_options: str = "", **more: Any) -> dict[str, Any]:
    """Keyword arguments for ``AsyncConnection.connect(dsn, …)`` / a pool's ``kwargs``."""
    return {
        "autocommit": True,
        "application_name": BOT_APPLICATION_NAME,
        "connect_timeout": max(1, round(connect_timeout)),
        "options": pinned_options(dsn, extra_options),
        **more,
    }
