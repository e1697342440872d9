"""``pgconn-bot setup-sql``: the least-privilege database role for the bot, as SQL to review and run."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")


def setup_sql(role: str = "pgconn_bot", state_database: str | None = None) -> str:
    for label, name in (("role", role), ("state database", state_database)):
        if name is not None and not _NAME.match(name):
            raise ValueError(f"{label} name {name!r}: use lower-case letters, digits and _ (at most 63)")
    state = state_database or "the database in PGCONN_STATE_URL"
    if state_database:
        grant = f"GRANT CREATE ON DATABASE {state_database} TO {role};"
    else:
        grant = (
            f"DO $$ BEGIN\n    EXECUTE format('GRANT CREATE ON DATABASE %I TO {role}', current_database());\nEND $$;"
        )
    return f"""-- pgconn-bot: a least-privilege login role. Review, then run as a superuser (psql -f).
-- Never run the bot as a superuser: it does not need to be one, and superusers' sessions are the
-- ones it must never be able to end.

CREATE ROLE {role} LOGIN PASSWORD 'change-me';   -- or certificate / IAM authentication
ALTER ROLE {role} CONNECTION LIMIT 20;           -- pool size × targets, plus room for the monitor

-- See every session's details (pid, backend_start, state, query) on each monitored server.
-- Without it PostgreSQL hides other users' sessions and the bot refuses kill/cancel requests.
GRANT pg_monitor TO {role};

-- Cancel and terminate other users' sessions (never superusers': PostgreSQL forbids that too).
GRANT pg_signal_backend TO {role};

-- Its own state (requests, approvals, audit, alerts) in schema pgconn of {state}.
-- The bot creates and migrates the schema itself at start; it needs only this
-- (run it connected to that database):
{grant}
-- Or, if you create the schema yourself:
--   CREATE SCHEMA pgconn AUTHORIZATION {role};

-- Then, for example:
--   PGCONN_DATABASE_URL=postgresql://{role}@db.example.org:5432/postgres
--   PGCONN_STATE_URL=postgresql://{role}@db.example.org:5432/{state_database or "pgconn"}
-- and check everything with:  pgconn-bot check
"""
