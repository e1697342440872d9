"""``pgconn-bot setup-sql``: the least-privilege database role for the bot, as SQL to review and run."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Names PostgreSQL reserves for roles, or that mean something else where a role is expected.
_RESERVED = {"public", "none", "current_user", "current_role", "session_user", "user"}


def _checked(label: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{label} name {name!r}: use lower-case letters, digits and _ (at most 63)")
    if name.startswith("pg_") or name in _RESERVED:
        raise ValueError(f"{label} name {name!r} is reserved by PostgreSQL")
    return name


def setup_sql(role: str = "pgconn_bot", state_database: str | None = None) -> str:
    role = _checked("role", role)
    if state_database is not None:
        _checked("state database", state_database)
    # Identifiers are always double-quoted, so even a keyword such as "select" is a valid name.
    quoted = f'"{role}"'
    if state_database:
        grant = f'GRANT CREATE ON DATABASE "{state_database}" TO {quoted};'
    else:
        grant = (
            "DO $pgconn$ BEGIN\n"
            f"    EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), '{role}');\n"
            "END $pgconn$;"
        )
    state = f'database "{state_database}"' if state_database else "the database in PGCONN_STATE_URL"
    return f"""-- pgconn-bot: a least-privilege login role. Review, then run as a superuser (psql -f).
-- Never run the bot as a superuser: it does not need to be one, and superusers' sessions are the
-- ones it must never be able to end.

CREATE ROLE {quoted} LOGIN CONNECTION LIMIT 20;  -- pool size × targets, plus room for the monitor
-- No password is set here, so none ends up in a file or a shell history. Set one in psql with
--   \\password {role}
-- or use certificate / IAM authentication.

-- Functions and operators resolve only in pg_catalog for this role, whatever schemas other roles
-- can create objects in (the bot also pins this when it connects; this covers any other client).
ALTER ROLE {quoted} SET search_path = pg_catalog, pg_temp;

-- See every session's details (pid, backend_start, state, query) on each monitored server.
-- Without it PostgreSQL hides other users' sessions and the bot refuses kill/cancel requests.
GRANT pg_monitor TO {quoted};

-- Cancel and terminate other users' sessions (never superusers': PostgreSQL forbids that too).
GRANT pg_signal_backend TO {quoted};

-- Its own state (requests, approvals, audit, alerts) in schema pgconn of {state}.
-- The bot creates and migrates the schema itself at start; it needs only this
-- (run it connected to that database):
{grant}
-- Or, if you create the schema yourself:
--   CREATE SCHEMA pgconn AUTHORIZATION {quoted};

-- Then, for example:
--   PGCONN_DATABASE_URL=postgresql://{role}@db.example.org:5432/postgres
--   PGCONN_STATE_URL=postgresql://{role}@db.example.org:5432/{state_database or "pgconn"}
-- and check everything with:  pgconn-bot check
"""
