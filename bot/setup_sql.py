"""``pgconn-bot setup-sql``: the least-privilege database role for the bot, as SQL to review and run.

What it prints for the default options is copied verbatim into the README ("Database
privileges"); ``tests/unit/test_setup_sql.py`` keeps the two the same.

It refuses, offline, role names PostgreSQL reserves (``pg_…``, ``public``, ``none``,
``current_user``, ``session_user``, ``current_role``, ``user``) and ``postgres`` (by convention the
bootstrap superuser). When PGCONN_DATABASE_URL is set and the server answers within 2 seconds, it
also refuses a role that exists there and is a superuser (``pg_roles.rolsuper``). Each refusal is
one line on stderr and exit status 2, with nothing on stdout.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap

import psycopg

from bot.budget import Budget
from bot.config import ConfigError, Settings, load_settings
from bot.db.connect import connect_kwargs
from bot.db.sql import targets as target_sql

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Names PostgreSQL reserves for roles, or that mean something else where a role is expected.
_RESERVED = {"public", "none", "current_user", "current_role", "session_user", "user"}
_USUAL_SUPERUSER = "postgres"  # initdb's bootstrap superuser, in nearly every installation
_TEMPLATES = {"template0", "template1"}
_CHECK_TIMEOUT = 2.0  # seconds setup-sql waits for the configured server before printing anyway


def _checked_role(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("pg_") or lowered in _RESERVED:
        raise ValueError(f"role name {name!r} is reserved by PostgreSQL; choose another, such as pgconn_bot")
    if lowered == _USUAL_SUPERUSER:
        raise ValueError(
            f"role name {name!r} is the usual superuser; the bot needs a role of its own and must never be a superuser"
        )
    if not _NAME.match(name):
        raise ValueError(f"role name {name!r}: use lower-case letters, digits and _ (at most 63)")
    return name


def _checked_database(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"state database name {name!r}: use lower-case letters, digits and _ (at most 63)")
    if name.startswith("pg_") or name in _TEMPLATES:
        raise ValueError(f"state database name {name!r} is reserved by PostgreSQL")
    return name


def _comment(text: str) -> str:
    """``text`` as SQL comment lines of at most 100 characters."""
    return "".join(f"-- {line}\n" for line in textwrap.wrap(text, 97, break_on_hyphens=False))


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def setup_sql(role: str = "pgconn_bot", state_database: str | None = None, budget: Budget | None = None) -> str:
    """The SQL, with comments. ``state_database``: a database of its own for the bot's state
    (created here), else the database the SQL is run in. ``budget``: what the bot will open
    (targets, pool sizes, replicas); one target by default. Raises ValueError for a bad name."""
    role = _checked_role(role)
    budget = budget or Budget(targets=1, pool=4, state_pool=4)
    if state_database is not None:
        state_database = _checked_database(state_database)
    # Identifiers are always double-quoted, so even a keyword such as "select" is a valid name.
    quoted = f'"{role}"'
    replicas = _count(budget.replicas, "replica") + (" opens" if budget.replicas == 1 else " open")
    state_share = f", up to {budget.state_pool} + 1 for its state" if budget.state_here else ""
    reserved_state = " and 2 for its state" if budget.state_here else ""
    if state_database:
        create = "" if state_database == _USUAL_SUPERUSER else f'CREATE DATABASE "{state_database}";\n'
        where = "as a superuser" + (
            " (CREATE DATABASE cannot run in a transaction: not with psql -1)" if create else ""
        )
        state = _comment(
            "Its state (requests, approvals, audit, alerts): schema pgconn, which the bot creates and migrates "
            f'itself at start, in database "{state_database}"'
            + (" (leave out CREATE DATABASE if it exists)." if create else ".")
        )
        state += create + f'GRANT CREATE ON DATABASE "{state_database}" TO {quoted};\n'
        state_db, after = state_database, "Then, with your server's address:"
    else:
        where = "as a superuser, connected to the database that will hold the bot's state (here postgres)"
        state = _comment(
            "Its state (requests, approvals, audit, alerts): schema pgconn, which the bot creates and migrates "
            "itself at start, in the database you run this in."
        )
        state += (
            "DO $pgconn$ BEGIN\n"
            f"    EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), '{role}');\n"
            "END $pgconn$;\n"
        )
        state_db, after = "postgres", "Then, with your server's address (and the database you ran this in):"
    header = _comment(
        f"pgconn-bot setup-sql: a least-privilege login role for the bot. Review it, then run it {where}:"
    )
    limit = _comment(
        f"The CONNECTION LIMIT counts what {replicas}: per target (here {budget.targets}) a lifeline and up to "
        f"{budget.pool} pooled connections{state_share}; and a `pgconn-bot check` run beside it."
    )
    limit += "-- (setup-sql --targets N --replicas R counts for other setups.)\n"
    return f"""{header}--   psql -U postgres -d postgres -f FILE
-- Never run the bot as a superuser: superusers' sessions are the ones it must never end.

{limit}CREATE ROLE {quoted} LOGIN CONNECTION LIMIT {budget.connection_limit};
-- No password is set, so none ends up in a file or a shell history: in psql, \\password {role}
-- (or use certificate or IAM authentication).
ALTER ROLE {quoted} SET search_path = pg_catalog, pg_temp;  -- the bot also pins it when it connects
GRANT pg_monitor TO {quoted};         -- see every session's details (pid, backend_start, query)
GRANT pg_signal_backend TO {quoted};  -- cancel/terminate other sessions (never superusers')
-- PostgreSQL 16+: it may use the slots reserved_connections keeps, to get in when the server is full
DO $pgconn$ BEGIN
    IF current_setting('server_version_num')::int >= 160000 THEN
        EXECUTE format('GRANT pg_use_reserved_connections TO %I', '{role}');
    END IF;
END $pgconn$;
-- and set on each monitored server, 16+ (postgresql.conf or ALTER SYSTEM, then restart):
--   reserved_connections = {budget.when_full}   (per replica: a lifeline per target{reserved_state})

{state}-- (Or, instead of that GRANT, in that database: CREATE SCHEMA pgconn AUTHORIZATION {quoted};)

-- {after}
--   PGCONN_DATABASE_URL=postgresql://{role}@db.example.org:5432/postgres
--   PGCONN_STATE_URL=postgresql://{role}@db.example.org:5432/{state_db}
--   pgconn-bot check
"""


def refuse_a_superuser(role: str, dsn: str, timeout: float = _CHECK_TIMEOUT) -> None:
    """Raise ValueError when ``role`` exists on the server at ``dsn`` and is a superuser. A server
    that does not answer within ``timeout`` is not asked: setup-sql works offline too."""
    kwargs = connect_kwargs(dsn, connect_timeout=timeout, extra_options=f"-c statement_timeout={int(timeout * 1000)}")
    try:
        with psycopg.connect(dsn, **kwargs) as conn:
            row = conn.execute(target_sql.ROLE_IS_SUPERUSER, (role,)).fetchone()
    except psycopg.Error:
        return
    if row is not None and row[0]:
        raise ValueError(
            f"role {role!r} is a superuser on the server in PGCONN_DATABASE_URL; the bot must never be one: "
            "choose another name"
        )


def _budget(args: argparse.Namespace, settings: Settings | None) -> Budget:
    """What the bot will open, from the options and (when it reads) the configuration."""
    targets = args.targets if args.targets is not None else len(settings.target_dsns()) if settings else 1
    if targets < 1 or args.replicas < 1:
        raise ValueError("--targets and --replicas must be 1 or more")
    return Budget(
        targets=targets,
        pool=settings.pool_max_size if settings else 4,
        state_pool=settings.state_pool_max_size if settings else 4,
        replicas=args.replicas,
    )


def main(args: argparse.Namespace) -> int:
    """``pgconn-bot setup-sql``: the SQL on stdout and exit 0, or one line on stderr and exit 2."""
    try:
        settings: Settings | None = load_settings()
    except ConfigError:
        settings = None
    try:
        text = setup_sql(args.role, args.state_database, _budget(args, settings))
        dsn = settings.database_url.get_secret_value().strip() if settings else ""
        if dsn:
            refuse_a_superuser(args.role, dsn)
    except ValueError as exc:
        print(f"pgconn-bot setup-sql: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
