"""``pgconn-bot setup-sql``: the least-privilege database role for the bot, as SQL to review and run.

What it prints for the default options is copied verbatim into the README ("Database
privileges"); ``tests/unit/test_setup_sql.py`` keeps the two the same.

It refuses, offline, role names PostgreSQL reserves (``pg_…``, ``public``, ``none``,
``current_user``, ``session_user``, ``current_role``, ``user``) and ``postgres`` (by convention the
bootstrap superuser). When PGCONN_DATABASE_URL is set and the server answers within 2 seconds, it
also refuses a role that exists there and is a superuser (``pg_roles.rolsuper``). Each refusal is
one line on stderr and exit status 2, with nothing on stdout.

``--drain DB[,DB…]`` adds, opt-in, what ``/pgconn drain`` needs (see ``_drain_section``): a schema
``pgconn_drain`` owned by whoever runs the SQL (a superuser) with a SECURITY DEFINER function that
can only switch ``ALLOW_CONNECTIONS`` of the databases listed, executable by the bot's role alone.
It refuses template databases, malformed names and the bot's state database.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence

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


def _checked_database(name: str, what: str = "state database") -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} name {name!r}: use lower-case letters, digits and _ (at most 63)")
    if name in _TEMPLATES:
        raise ValueError(f"{what} name {name!r} is a template database, reserved by PostgreSQL")
    if name.startswith("pg_"):
        raise ValueError(f"{what} name {name!r} is reserved by PostgreSQL")
    return name


def drain_databases(values: Iterable[str]) -> list[str]:
    """The databases of ``--drain`` (repeated, or comma-separated), in order, each once."""
    names = [name.strip() for value in values for name in value.split(",")]
    return list(dict.fromkeys(names))


def _checked_drain(names: Sequence[str], state_db: str, named: bool) -> list[str]:
    """``names`` checked like the state database's name, and never the state database itself
    (``state_db``: the one ``--state-database`` named, else postgres, where the SQL says it goes)."""
    for name in names:
        _checked_database(name, "drain database")
        if name == state_db:
            where = "--state-database" if named else "this SQL, without --state-database, puts it there"
            raise ValueError(
                f"drain database {name!r} holds the bot's state ({where}); the bot's own state must never be drained"
            )
    return list(names)


def _comment(text: str) -> str:
    """``text`` as SQL comment lines of at most 100 characters."""
    return "".join(f"-- {line}\n" for line in textwrap.wrap(text, 97, break_on_hyphens=False))


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


DRAIN_HELP = "also let the bot drain these databases (/pgconn drain), through a function only the bot may call"


def add_drain_argument(parser: argparse.ArgumentParser) -> None:
    """``--drain DB[,DB…]`` on setup-sql's parser (repeatable; ``main`` splits the commas)."""
    parser.add_argument("--drain", action="append", default=[], metavar="DB[,DB…]", help=DRAIN_HELP)


def _drain_section(role: str, databases: Sequence[str]) -> str:
    """What ``/pgconn drain`` needs: a function that can only switch ALLOW_CONNECTIONS of
    ``databases``, running as its owner (the superuser running this), executable by ``role`` only.
    The SQL the bot runs against it is in ``bot/db/sql/targets.py`` (DRAIN_SETUP, DRAINABLE, …)."""
    quoted = f'"{role}"'
    listed = "ARRAY[" + ", ".join(_literal(name) for name in databases) + "]::pg_catalog.name[]"
    function = target_sql.DRAIN_FUNCTION  # pgconn_drain.set_allow_connections(name, boolean)
    intro = _comment(
        f"Draining (/pgconn drain): the bot may refuse new connections to {', '.join(databases)}, and allow "
        "them again. ALTER DATABASE needs the database's owner or a superuser, and the bot is neither: it "
        "may only call this function, which runs as its owner (you, the superuser running this) and does "
        "nothing but switch ALLOW_CONNECTIONS of the databases it lists."
    )
    where = _comment(
        "The function must be in the database the bot connects to (each target's database; by default "
        "also the one its state is in). If targets connect to several databases on this server, run this "
        'part, from "Draining" to "end of draining", in each of them (psql -U postgres -d DB -f PART). '
        "PostgreSQL never lets a session disallow connections to its own database, so the database the "
        "function is in is never drained through it. To change the list: DROP SCHEMA pgconn_drain CASCADE; "
        "then run this part again with the new --drain."
    )
    return f"""{intro}{where}CREATE SCHEMA pgconn_drain;  -- yours: nobody else may own or replace what is in it
REVOKE CREATE ON SCHEMA pgconn_drain FROM PUBLIC;  -- the default for a new schema, made explicit
CREATE FUNCTION pgconn_drain.set_allow_connections(db name, allow boolean) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $pgconn$
BEGIN
    IF db IS NULL OR allow IS NULL OR db <> ALL ({listed}) THEN
        RAISE EXCEPTION 'pgconn_drain: database % is not one this function may drain', db
            USING ERRCODE = 'insufficient_privilege', HINT = 'pgconn-bot setup-sql --drain lists them';
    END IF;
    -- format's %s of a boolean gives t/f, which ALTER DATABASE refuses: spelled out
    EXECUTE pg_catalog.format('ALTER DATABASE %I WITH ALLOW_CONNECTIONS %s', db,
                              CASE WHEN allow THEN 'true' ELSE 'false' END);
END
$pgconn$;
-- The databases it may drain, for the bot to tell (and `pgconn-bot check` to show).
CREATE FUNCTION pgconn_drain.drainable() RETURNS name[] LANGUAGE sql STABLE
    AS $pgconn$ SELECT {listed} $pgconn$;
REVOKE ALL ON FUNCTION {function} FROM PUBLIC;
REVOKE ALL ON FUNCTION pgconn_drain.drainable() FROM PUBLIC;
GRANT USAGE ON SCHEMA pgconn_drain TO {quoted};
GRANT EXECUTE ON FUNCTION {function} TO {quoted};
GRANT EXECUTE ON FUNCTION pgconn_drain.drainable() TO {quoted};
-- (end of draining)

"""


def setup_sql(
    role: str = "pgconn_bot",
    state_database: str | None = None,
    budget: Budget | None = None,
    drain: Sequence[str] = (),
) -> str:
    """The SQL, with comments. ``state_database``: a database of its own for the bot's state
    (created here), else the database the SQL is run in. ``budget``: what the bot will open
    (targets, pool sizes, replicas); one target by default. ``drain``: databases the bot may
    drain (``--drain``), an opt-in section; none by default. Raises ValueError for a bad name."""
    role = _checked_role(role)
    budget = budget or Budget(targets=1, pool=4, state_pool=4)
    if state_database is not None:
        state_database = _checked_database(state_database)
    drain = _checked_drain(drain, state_database or _USUAL_SUPERUSER, named=state_database is not None)
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

{_drain_section(role, drain) if drain else ""}-- {after}
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
        drain = drain_databases(getattr(args, "drain", None) or [])  # bot/cli.py: add_drain_argument
        text = setup_sql(args.role, args.state_database, _budget(args, settings), drain)
        dsn = settings.database_url.get_secret_value().strip() if settings else ""
        if dsn:
            refuse_a_superuser(args.role, dsn)
    except ValueError as exc:
        print(f"pgconn-bot setup-sql: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
