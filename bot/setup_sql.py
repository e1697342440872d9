"""``pgconn-bot setup-sql``: the least-privilege database role for the bot, as SQL to review and run."""

from __future__ import annotations

import re

from bot.budget import Budget

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Names PostgreSQL reserves for roles, or that mean something else where a role is expected.
_RESERVED = {"public", "none", "current_user", "current_role", "session_user", "user"}


def _checked(label: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{label} name {name!r}: use lower-case letters, digits and _ (at most 63)")
    if name.startswith("pg_") or name in _RESERVED:
        raise ValueError(f"{label} name {name!r} is reserved by PostgreSQL")
    return name


def setup_sql(role: str = "pgconn_bot", state_database: str | None = None, budget: Budget | None = None) -> str:
    """``budget``: what the bot will open (targets, pool sizes, replicas); one target by default."""
    role = _checked("role", role)
    budget = budget or Budget(targets=1, pool=4, state_pool=4)
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
    replicas = f"{budget.replicas} replica" + ("s" if budget.replicas != 1 else "")
    return f"""-- pgconn-bot: a least-privilege login role. Review, then run as a superuser (psql -f).
-- Never run the bot as a superuser: it does not need to be one, and superusers' sessions are the
-- ones it must never be able to end.

-- Each replica opens, on a server holding all its databases: per target (here {budget.targets}) one
-- lifeline and up to {budget.pool} pooled connections, and up to {budget.state_pool} + 1 to its state database:
-- {budget.per_replica}. For {replicas} and a `pgconn-bot check` run beside them:
CREATE ROLE {quoted} LOGIN CONNECTION LIMIT {budget.connection_limit};
-- (setup-sql --targets N --replicas R computes it for other setups.)
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

-- When every ordinary connection slot is taken (the emergency the bot exists for), PostgreSQL 16
-- and later keep reserved_connections slots for members of pg_use_reserved_connections:
DO $pgconn$ BEGIN
    IF current_setting('server_version_num')::int >= 160000 THEN
        EXECUTE format('GRANT pg_use_reserved_connections TO %I', '{role}');
    END IF;
END $pgconn$;
-- and set on each monitored server (postgresql.conf or ALTER SYSTEM, then restart) at least
--   reserved_connections = {budget.when_full}
-- (a lifeline per target and the state database's connections, per replica; {budget.connection_limit}
-- would let it open everything). Before 16 nothing can be reserved for it: the bot keeps the
-- connections it holds (its lifelines) and takes the first slot that frees.

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
