"""A database booby-trapped the way a student who owns it (or may create in ``public``) could.

Every function, aggregate and operator the bot's SQL uses gets a look-alike in ``public`` that
counts each call in a sequence (sequences are not transactional, so a call is recorded even if
the statement fails afterwards) and then behaves like the original. The database's
``search_path`` is set to ``public, pg_catalog``, so for a session that does not pin its own
path, every look-alike wins over the built-in with the same signature.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql as pgsql

from bot.db.sql import session as session_sql
from bot.db.sql import state as state_sql
from bot.db.sql import targets as target_sql

HITS = "public.pgct_hits"
PINNED = "-c search_path=pg_catalog,pg_temp"

_CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\(", re.IGNORECASE)
_NOT_FUNCTIONS = {"in", "any", "all", "exists", "values", "as", "and", "or", "not", "array", "row", "over", "filter"}
_OPERATORS = ("=", "<>", "<", ">", "<=", ">=", "||", "+", "-", "*", "/", "^")
_TYPES = ("name", "text", "integer", "bigint", "oid", "timestamp with time zone", "interval", "double precision")
_POLYMORPHIC = {"anyelement", "anyarray", "anynonarray", "anycompatible", "anycompatiblearray"}


def functions_the_bot_calls() -> set[str]:
    names: set[str] = set()
    for module in (session_sql, state_sql, target_sql):
        for value in vars(module).values():
            if isinstance(value, str):
                names.update(m.group(1).lower() for m in _CALL.finditer(value))
    for _, migration in state_sql.STATE_MIGRATIONS:
        names.update(m.group(1).lower() for m in _CALL.finditer(migration))
    return names - _NOT_FUNCTIONS


def _pseudo_ok(type_name: str) -> bool:
    return type_name in _POLYMORPHIC or not type_name.startswith(("any", "internal", "cstring", "record"))


def plant(conn: psycopg.Connection[Any]) -> list[str]:
    """Plant the look-alikes as the connected role (the database's owner); returns what was planted."""
    conn.execute(f"CREATE SEQUENCE {HITS}")
    conn.execute(f"GRANT USAGE, SELECT ON SEQUENCE {HITS} TO PUBLIC")
    conn.execute("CREATE TABLE public.pgct_hit_log (fn text, by_role text DEFAULT current_user)")
    conn.execute("GRANT INSERT ON public.pgct_hit_log TO PUBLIC")
    planted: list[str] = []
    rows = conn.execute(
        """SELECT p.proname::text, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args,
                  pg_catalog.pg_get_function_result(p.oid) AS result, p.proretset, p.pronargs,
                  p.provariadic <> 0 AS variadic,
                  ARRAY(SELECT pg_catalog.format_type(t, NULL) FROM pg_catalog.unnest(p.proargtypes) t) AS types
             FROM pg_catalog.pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
              AND p.proname = ANY(%s)""",
        (sorted(functions_the_bot_calls()),),
    ).fetchall()
    for name, args, result, returns_set, nargs, variadic, types in rows:
        if not all(_pseudo_ok(t) for t in types) or "TABLE(" in result or result == "record":
            continue
        params = [f"${i + 1}" for i in range(nargs)]
        if variadic and params:
            params[-1] = "VARIADIC " + params[-1]
        call = f"pg_catalog.{pgsql.Identifier(name).as_string(conn)}({', '.join(params)})"
        body = f"RETURN QUERY SELECT {call}" if returns_set else f"RETURN {call}"
        _try(
            conn,
            planted,
            f"{name}({args})",
            f"""CREATE FUNCTION public.{pgsql.Identifier(name).as_string(conn)}({args}) RETURNS {result}
                LANGUAGE plpgsql AS $f$
                BEGIN
                    PERFORM pg_catalog.nextval('{HITS}');
                    INSERT INTO public.pgct_hit_log (fn) VALUES ('{name}({args.replace("'", "''")})');
                    {body};
                END $f$""",
        )
    _plant_aggregates(conn, planted)
    _plant_operators(conn, planted)
    return planted


def _plant_aggregates(conn: psycopg.Connection[Any], planted: list[str]) -> None:
    conn.execute(
        f"""CREATE FUNCTION public.pgct_count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS $f$
            BEGIN PERFORM pg_catalog.nextval('{HITS}'); RETURN $1 + 1; END $f$"""
    )
    conn.execute(
        f"""CREATE FUNCTION public.pgct_count_step(bigint, anyelement) RETURNS bigint LANGUAGE plpgsql AS $f$
            BEGIN PERFORM pg_catalog.nextval('{HITS}'); RETURN $1 + 1; END $f$"""
    )
    conn.execute(
        f"""CREATE FUNCTION public.pgct_json_step(json, anyelement) RETURNS json LANGUAGE plpgsql AS $f$
            BEGIN PERFORM pg_catalog.nextval('{HITS}'); RETURN pg_catalog.to_json(ARRAY[]::int[]); END $f$"""
    )
    conn.execute(
        f"""CREATE FUNCTION public.pgct_array_step(anyarray, anynonarray) RETURNS anyarray LANGUAGE plpgsql AS $f$
            BEGIN PERFORM pg_catalog.nextval('{HITS}'); RETURN pg_catalog.array_append($1, $2); END $f$"""
    )
    for label, statement in (
        ("count(*)", "CREATE AGGREGATE public.count(*) (SFUNC = public.pgct_count_step, STYPE = bigint, INITCOND = 0)"),
        (
            "count(anyelement)",
            "CREATE AGGREGATE public.count(anyelement) (SFUNC = public.pgct_count_step, STYPE = bigint, INITCOND = 0)",
        ),
        (
            "json_agg(anyelement)",
            "CREATE AGGREGATE public.json_agg(anyelement) (SFUNC = public.pgct_json_step, STYPE = json)",
        ),
        (
            "array_agg(anynonarray)",
            "CREATE AGGREGATE public.array_agg(anynonarray) (SFUNC = public.pgct_array_step, STYPE = anyarray)",
        ),
    ):
        _try(conn, planted, label, statement)


def _plant_operators(conn: psycopg.Connection[Any], planted: list[str]) -> None:
    rows = conn.execute(
        """SELECT o.oprname::text, pg_catalog.format_type(o.oprleft, NULL), pg_catalog.format_type(o.oprright, NULL),
                  pg_catalog.format_type(o.oprresult, NULL)
             FROM pg_catalog.pg_operator o
            WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprkind = 'b'
              AND o.oprname = ANY(%s)
              AND pg_catalog.format_type(o.oprleft, NULL) = ANY(%s)
              AND pg_catalog.format_type(o.oprright, NULL) = ANY(%s)""",
        (list(_OPERATORS), list(_TYPES), list(_TYPES)),
    ).fetchall()
    for index, (op, left, right, result) in enumerate(rows):
        function = f"public.pgct_op_{index}"
        _try(
            conn,
            planted,
            f"{left} {op} {right}",
            f"""CREATE FUNCTION {function}({left}, {right}) RETURNS {result} LANGUAGE plpgsql AS $f$
                BEGIN PERFORM pg_catalog.nextval('{HITS}'); RETURN $1 OPERATOR(pg_catalog.{op}) $2; END $f$;
                CREATE OPERATOR public.{op} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = {function})""",
        )


def _try(conn: psycopg.Connection[Any], planted: list[str], label: str, statement: str) -> None:
    try:
        with conn.transaction():
            conn.execute(statement)  # type: ignore[arg-type]
        planted.append(label)
    except psycopg.Error:
        pass  # a signature plpgsql cannot copy; the rest still stand


def hits(dsn: str) -> tuple[int, list[str]]:
    """How many times any look-alike ran, and which (read on a pinned connection of its own)."""
    with psycopg.connect(dsn, autocommit=True, options=PINNED) as conn:
        row = conn.execute(f"SELECT last_value, is_called FROM {HITS}").fetchone()
        assert row is not None
        log = [r[0] for r in conn.execute("SELECT DISTINCT fn FROM public.pgct_hit_log ORDER BY 1")]
    return (int(row[0]) if row[1] else 0), log
