"""Every SQL statement the bot runs, in one place. Always parameterised.

PostgreSQL 13–17 differences are handled here and nowhere else:
- ``reserved_connections`` exists from 16 on: read with ``current_setting(name, true)``, which
  yields NULL (→ 0) on older servers instead of an error.
- ``pg_terminate_backend(pid, timeout)`` exists from 14 on (used by the approval flow).
Everything else used here (``backend_type``, ``pg_roles``, ``state_change``) exists on all of them.
"""

from __future__ import annotations

BOT_APPLICATION_NAME = "pgconn-bot"
QUERY_PREVIEW_CHARS = 200

# --- connection set-up ---------------------------------------------------------------------

# ``SET`` cannot take bind parameters; set_config can.
CONFIGURE_SESSION = """
SELECT pg_catalog.set_config('statement_timeout', %(statement_timeout)s, false),
       pg_catalog.set_config('lock_timeout', %(lock_timeout)s, false)
"""

PING = "SELECT 1"

# --- monitored server ----------------------------------------------------------------------

# Without pg_read_all_stats the server reports other users' backend_type as NULL; those are still
# sessions that count against limits, so NULL is read as a client backend (and the answer is marked
# restricted, since their details are hidden too).
_CLIENT_BACKEND = (
    "({alias}.backend_type = 'client backend' OR ({alias}.backend_type IS NULL AND {alias}.usesysid IS NOT NULL))"
)

# A backend is the bot's own when it is this very connection, or another connection of the bot's
# login role carrying the bot's application_name (its other pool members, other replicas).
# Requiring both keeps a user from hiding a session by naming it "pgconn-bot".
_ACTIVITY = f"""
SELECT a.pid,
       a.usesysid,
       a.usename::text            AS role,
       a.datname::text            AS database,
       a.application_name,
       host(a.client_addr)        AS client_addr,
       a.client_port,
       a.state,
       a.backend_start,
       a.xact_start,
       a.query_start,
       a.state_change,
       CASE WHEN a.wait_event IS NOT NULL THEN a.wait_event_type || ': ' || a.wait_event END AS wait_event,
       left(a.query, {QUERY_PREVIEW_CHARS}) AS query,
       now()                      AS observed_at,
       (a.pid = pg_catalog.pg_backend_pid()
        OR (a.usename = session_user AND a.application_name = %(bot_app)s)) AS own
  FROM pg_catalog.pg_stat_activity a
 WHERE {_CLIENT_BACKEND.format(alias="a")}
"""

# Exact match first; case-insensitive matches become "did you mean" suggestions.
ROLE_LOOKUP = """
SELECT r.oid, r.rolname::text AS name, r.rolconnlimit, r.rolsuper, r.rolcanlogin,
       r.rolname = %(role)s AS exact
  FROM pg_catalog.pg_roles r
 WHERE lower(r.rolname) = lower(%(role)s)
 ORDER BY exact DESC, r.rolname
 LIMIT 5
"""

ROLE_CONNECTIONS = f"""
SELECT * FROM ({_ACTIVITY}) activity
 WHERE NOT own AND usesysid = %(role_oid)s
 ORDER BY backend_start NULLS LAST, pid
"""

# Idle time counts from state_change: when the backend last went idle.
ROLE_IDLE_CONNECTIONS = f"""
SELECT * FROM ({_ACTIVITY}) activity
 WHERE NOT own AND usesysid = %(role_oid)s
   AND state IN ('idle', 'idle in transaction', 'idle in transaction (aborted)')
   AND state_change <= observed_at - %(min_idle)s::interval
 ORDER BY state_change, pid
"""

ALL_CLIENT_BACKENDS = f"SELECT * FROM ({_ACTIVITY}) activity ORDER BY backend_start NULLS LAST, pid"

# Counts include every client backend of the role, the bot's too: that is what the server
# enforces CONNECTION LIMIT against.
ROLE_USAGE = f"""
SELECT count(*) AS used
  FROM pg_catalog.pg_stat_activity a
 WHERE {_CLIENT_BACKEND.format(alias="a")} AND a.usesysid = %(role_oid)s
"""

DATABASE_LIMITS_FOR_ROLE = f"""
SELECT d.datname::text AS database, d.datconnlimit AS limit,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity x
         WHERE x.datid = d.oid AND {_CLIENT_BACKEND.format(alias="x")}) AS used
  FROM pg_catalog.pg_database d
 WHERE d.datconnlimit >= 0
   AND (d.datname = current_database()
        OR d.oid IN (SELECT a.datid FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = %(role_oid)s))
 ORDER BY d.datname
"""

# Roles at or above ``percent`` of their limit, fullest first. Superusers are never limited;
# a limit of 0 with connections present (possible after ALTER ROLE) is over the limit.
ROLES_NEAR_LIMIT = f"""
SELECT r.rolname::text AS role, r.rolconnlimit AS limit, count(a.pid) AS used
  FROM pg_catalog.pg_roles r
  LEFT JOIN pg_catalog.pg_stat_activity a
         ON a.usesysid = r.oid AND {_CLIENT_BACKEND.format(alias="a")}
 WHERE r.rolconnlimit >= 0 AND NOT r.rolsuper
 GROUP BY r.rolname, r.rolconnlimit
HAVING (r.rolconnlimit > 0 AND count(a.pid) * 100 >= r.rolconnlimit * %(percent)s)
    OR (r.rolconnlimit = 0 AND count(a.pid) > 0)
 ORDER BY count(a.pid)::float8 / nullif(r.rolconnlimit, 0) DESC NULLS FIRST, count(a.pid) DESC, r.rolname
"""

SERVER_SETTINGS = """
SELECT current_setting('server_version') AS server_version,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved
"""

# --- state database (requests, approvals, audit, alerts) -----------------------------------

STATE_SCHEMA = "pgconn"

# Serialises migrations across replicas starting at once (key: crc32 of "pgconn-bot migrate").
MIGRATION_LOCK = "SELECT pg_catalog.pg_advisory_xact_lock(1507393541)"

STATE_VERSION_TABLE = """
CREATE SCHEMA IF NOT EXISTS pgconn;
CREATE TABLE IF NOT EXISTS pgconn.schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

STATE_APPLIED_VERSIONS = "SELECT version FROM pgconn.schema_version"
STATE_RECORD_VERSION = "INSERT INTO pgconn.schema_version (version) VALUES (%(version)s)"

# Each migration runs once, in order, in its own transaction. Append; never edit a shipped one.
STATE_MIGRATIONS: list[tuple[int, str]] = []
