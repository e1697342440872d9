"""SQL for the monitored servers ("targets"): reads, signals, the monitor's snapshot, check.

Always parameterised, every name schema-qualified (connections pin ``search_path`` to
``pg_catalog, pg_temp`` as well).

Differences between PostgreSQL versions (13–18) are handled in this section and nowhere else:
- ``reserved_connections`` (16+): read with ``current_setting(name, true)``, which is NULL on
  older servers, so it counts as 0 there (``_RESERVED``).
- ``pg_use_reserved_connections`` (16+): ``check`` asks whether the bot may use reserved slots
  only where the role exists (``_MAY_USE_RESERVED``).
- ``pg_terminate_backend(pid, timeout)`` (14+): ``signal_statement`` picks the waiting form there
  and the plain one on 13, where the executor polls ``STILL_RUNNING`` instead.
Everything else used here (``backend_type``, ``pg_roles``, ``state_change``) exists on all of them.
"""

from __future__ import annotations

from bot.db.connect import BOT_APPLICATION_NAME as BOT_APPLICATION_NAME
from bot.model.activity import IDLE_STATES

# --- version differences -------------------------------------------------------------------------

TERMINATE_TIMEOUT_SINCE = 140000  # server_version_num that has pg_terminate_backend(pid, timeout)
_RESERVED = "coalesce(current_setting('reserved_connections', true), '0')::int"
_MAY_USE_RESERVED = (
    "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pg_use_reserved_connections')\n"
    "            THEN pg_catalog.pg_has_role(current_user, 'pg_use_reserved_connections', 'USAGE') END"
)


def signal_statement(action: str, server_version_num: int) -> str:
    if action == "cancel":
        return CANCEL
    return TERMINATE_AND_WAIT if server_version_num >= TERMINATE_TIMEOUT_SINCE else TERMINATE


# The states of an idle backend (the model's IDLE_STATES), for ``state IN (…)``.
_IDLE_STATES = ", ".join(f"'{state}'" for state in IDLE_STATES)
_IDLE_IN_TRANSACTION = ", ".join(f"'{state}'" for state in IDLE_STATES if state.startswith("idle in transaction"))

# --- connections ---------------------------------------------------------------------------------

QUERY_PREVIEW_CHARS = 200


# ``SET`` cannot take bind parameters; set_config can.
CONFIGURE_SESSION = """
SELECT pg_catalog.set_config('statement_timeout', %(statement_timeout)s, false),
       pg_catalog.set_config('lock_timeout', %(lock_timeout)s, false),
       session_user::text AS login
"""


# Which server a target is on: targets that are databases of one server share the monitor's
# snapshot. The system identifier (which a standby shares with its primary), the address the
# server answers on, and when its postmaster started (two clusters behind one address, as with
# containers on two hosts, differ in that).
_SERVER_ADDRESS = (
    "coalesce(host(pg_catalog.inet_server_addr()), 'local') || ':' || "
    "coalesce(pg_catalog.inet_server_port()::text, current_setting('port'))"
)


SERVER_IDENTITY = (
    f"SELECT s.system_identifier::text || '@' || {_SERVER_ADDRESS} || '@' || "
    "extract(epoch FROM pg_catalog.pg_postmaster_start_time())::bigint::text AS server "
    "FROM pg_catalog.pg_control_system() s"
)


SERVER_ADDRESS = f"SELECT {_SERVER_ADDRESS} AS server"


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
       length(a.query)            AS query_length,
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


# Every client backend of the role, the bot's own included (marked ``own``): they take the role's
# slots like any other, so ``list`` counts what ``limit`` and ``status`` count.
ROLE_CONNECTIONS = f"""
SELECT * FROM ({_ACTIVITY}) activity
 WHERE usesysid = %(role_oid)s
 ORDER BY backend_start NULLS LAST, pid
"""


# Idle time counts from state_change: when the backend last went idle. The bot's own are never
# proposed (they are never signalled either).
ROLE_IDLE_CONNECTIONS = f"""
SELECT * FROM ({_ACTIVITY}) activity
 WHERE NOT own AND usesysid = %(role_oid)s
   AND state IN ({_IDLE_STATES})
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
SELECT d.datname::text AS database, d.datconnlimit AS limit, d.datallowconn AS allows_connections,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity x
         WHERE x.datid = d.oid AND {_CLIENT_BACKEND.format(alias="x")}) AS used
  FROM pg_catalog.pg_database d
 WHERE (d.datconnlimit >= 0 OR NOT d.datallowconn)
   AND (d.datname = current_database()
        OR d.oid IN (SELECT a.datid FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = %(role_oid)s))
 ORDER BY d.datname
"""


# Roles at or above ``percent`` of their limit, fullest first. Superusers are never limited.
# A limit of 0 is a lockout (logins disabled): listed first, for a login role, or for any role
# with connections left over from before the ALTER ROLE.
ROLES_NEAR_LIMIT = f"""
SELECT r.rolname::text AS role, r.rolconnlimit AS limit, count(a.pid) AS used
  FROM pg_catalog.pg_roles r
  LEFT JOIN pg_catalog.pg_stat_activity a
         ON a.usesysid = r.oid AND {_CLIENT_BACKEND.format(alias="a")}
 WHERE r.rolconnlimit >= 0 AND NOT r.rolsuper
 GROUP BY r.rolname, r.rolconnlimit, r.rolcanlogin
HAVING (r.rolconnlimit > 0 AND count(a.pid) * 100 >= r.rolconnlimit * %(percent)s)
    OR (r.rolconnlimit = 0 AND (r.rolcanlogin OR count(a.pid) > 0))
 ORDER BY count(a.pid)::float8 / nullif(r.rolconnlimit, 0) DESC NULLS FIRST, count(a.pid) DESC, r.rolname
"""


# A database's own CONNECTION LIMIT (pg_database.datconnlimit) counts every client backend in it;
# at 0, or with ALLOW_CONNECTIONS false (datallowconn), nobody gets in. template0 never accepts
# connections by design, so a template that does not is left out.
_DATABASE_FILL = f"""
SELECT d.datname::text AS database, d.datconnlimit AS "limit", d.datallowconn AS allows_connections,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity x
         WHERE x.datid = d.oid AND {_CLIENT_BACKEND.format(alias="x")}) AS used
  FROM pg_catalog.pg_database d
 WHERE d.datconnlimit >= 0 OR (NOT d.datallowconn AND NOT d.datistemplate)
"""


# Databases at or above ``percent`` of their own limit, or not accepting logins at all (first).
DATABASES_NEAR_LIMIT = f"""
SELECT * FROM ({_DATABASE_FILL}) db
 WHERE NOT db.allows_connections OR db."limit" = 0 OR db.used * 100 >= db."limit" * %(percent)s
 ORDER BY NOT db.allows_connections DESC, db.used::float8 / nullif(db."limit", 0) DESC NULLS FIRST,
          db.used DESC, db.database
"""


SERVER_SETTINGS = f"""
SELECT current_setting('server_version') AS server_version,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       {_RESERVED} AS reserved,
       now() AS observed_at
"""


# Backends that lock waits are queued behind: "which other pids each target blocks".
_BLOCKED_BY = """
SELECT b.pid AS blocked, blocker
  FROM pg_catalog.pg_stat_activity b,
       unnest(pg_catalog.pg_blocking_pids(b.pid)) AS blocker
 WHERE b.wait_event_type = 'Lock'
"""


# Who may never be signalled, beyond superusers themselves: a login role that is a member of a
# superuser role (it can SET ROLE to it; membership is transitive), a member of a role in
# PGCONN_PROTECTED_ROLES, and any login role of the bot's own (its targets' and its state
# database's: every connection of every replica). Each names the role it comes from, for the answer.
_SUPERUSER_VIA = """(SELECT s.rolname::text FROM pg_catalog.pg_roles s
                      WHERE s.rolsuper AND s.oid <> {alias}.usesysid
                        AND pg_catalog.pg_has_role({alias}.usesysid, s.oid, 'MEMBER')
                      ORDER BY 1 LIMIT 1)"""


_PROTECTED_VIA = """(SELECT p.rolname::text FROM pg_catalog.pg_roles p
                      WHERE p.rolname = ANY(%(protected)s::text[])
                        AND pg_catalog.pg_has_role({alias}.usesysid, p.oid, 'MEMBER')
                      ORDER BY 1 LIMIT 1)"""


_BOT_LOGIN = "({alias}.usename = session_user OR {alias}.usename = ANY(%(bot_roles)s::text[]))"


# Everything needed to decide whether a backend may be signalled, and to show it to an approver.
# The three filters are optional so one statement serves ``kill <pids>``, ``kill user`` and
# ``kill idle``; for pids every backend type is returned, so a refusal can say what the pid is.
SIGNAL_CANDIDATES = f"""
WITH blocked AS ({_BLOCKED_BY})
SELECT a.pid,
       a.usesysid                 AS role_oid,
       a.usename::text            AS role,
       a.datname::text            AS database,
       a.application_name,
       host(a.client_addr)        AS client_addr,
       a.client_port,
       a.state,
       a.backend_type,
       a.backend_start,
       a.xact_start,
       a.query_start,
       a.state_change,
       NULL::text                 AS wait_event,
       NULL::text                 AS query,
       now()                      AS observed_at,
       {_CLIENT_BACKEND.format(alias="a")} AS client_backend,
       coalesce(r.rolsuper, false) AS superuser,
       {_SUPERUSER_VIA.format(alias="a")} AS superuser_via,
       {_PROTECTED_VIA.format(alias="a")} AS protected_via,
       {_BOT_LOGIN.format(alias="a")} AS bot_login,
       r.rolconnlimit             AS role_limit,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity x
         WHERE x.usesysid = a.usesysid AND {_CLIENT_BACKEND.format(alias="x")}) AS role_used,
       (a.pid = pg_catalog.pg_backend_pid()
        OR (a.usename = session_user AND a.application_name = %(bot_app)s)) AS own,
       coalesce((SELECT array_agg(blocked ORDER BY blocked) FROM blocked WHERE blocker = a.pid), '{{}}') AS blocks
  FROM pg_catalog.pg_stat_activity a
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
 WHERE (%(pids)s::int[] IS NULL OR a.pid = ANY(%(pids)s::int[]))
   AND (%(database)s::text IS NULL OR (a.datname = %(database)s::text AND {_CLIENT_BACKEND.format(alias="a")}))
   AND (%(role_oid)s::oid IS NULL
        OR (a.usesysid = %(role_oid)s::oid AND {_CLIENT_BACKEND.format(alias="a")}
            AND NOT (a.pid = pg_catalog.pg_backend_pid()
                     OR (a.usename = session_user AND a.application_name = %(bot_app)s))))
   AND (%(idle_for)s::interval IS NULL
        OR (a.state IN ({_IDLE_STATES})
            AND a.state_change <= now() - %(idle_for)s::interval))
 ORDER BY a.state_change NULLS LAST, a.pid
"""


# The re-check and the signal are one statement: the backend is signalled only if the pid still
# belongs to the very session the approver saw (same backend_start, same role oid), is still a
# client backend that is not protected now (a role may have become superuser or protected since),
# and is still in the condition that was approved: for ``kill idle``, idle since the same moment
# (``idle_since``); for ``cancel``, running the same query (``query_start``). Each is NULL when
# it does not apply.
_SIGNAL = f"""
SELECT checked.verdict, checked.state,
       CASE WHEN checked.verdict = 'signal' THEN {{signal}} END AS signalled
  FROM (SELECT t.pid, a.state,
               CASE WHEN a.pid IS NULL THEN 'gone'
                    WHEN a.backend_start IS DISTINCT FROM %(backend_start)s
                      OR a.usesysid IS DISTINCT FROM %(role_oid)s::oid THEN 'replaced'
                    WHEN coalesce(r.rolsuper, true) OR r.rolname = ANY(%(protected)s::text[])
                      OR NOT {_CLIENT_BACKEND.format(alias="a")}
                      OR {_BOT_LOGIN.format(alias="a")}
                      OR a.pid = pg_catalog.pg_backend_pid()
                      OR {_SUPERUSER_VIA.format(alias="a")} IS NOT NULL
                      OR {_PROTECTED_VIA.format(alias="a")} IS NOT NULL THEN 'protected'
                    WHEN %(idle_since)s::timestamptz IS NOT NULL
                     AND (a.state NOT IN ({_IDLE_STATES})
                          OR a.state_change IS DISTINCT FROM %(idle_since)s::timestamptz) THEN 'changed'
                    WHEN %(query_start)s::timestamptz IS NOT NULL
                     AND (a.state IS DISTINCT FROM 'active'
                          OR a.query_start IS DISTINCT FROM %(query_start)s::timestamptz) THEN 'changed'
                    ELSE 'signal' END AS verdict
          FROM (SELECT %(pid)s::int AS pid) t
          LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = t.pid
          LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid) checked
"""


TERMINATE_AND_WAIT = _SIGNAL.format(signal="pg_catalog.pg_terminate_backend(checked.pid, %(wait_ms)s::bigint)")


TERMINATE = _SIGNAL.format(signal="pg_catalog.pg_terminate_backend(checked.pid)")


CANCEL = _SIGNAL.format(signal="pg_catalog.pg_cancel_backend(checked.pid)")


# Sessions still running the query they ran when requested: what the ladder waits for.
STILL_ON_QUERY = """
SELECT a.pid
  FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[], %(query_starts)s::timestamptz[])
       AS t(pid, backend_start, query_start)
  JOIN pg_catalog.pg_stat_activity a
    ON a.pid = t.pid AND a.backend_start = t.backend_start AND a.query_start = t.query_start
 WHERE a.state = 'active'
"""


# Sessions (pid + backend_start) that still exist: what a terminate is still waiting for.
STILL_RUNNING = """
SELECT a.pid
  FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS t(pid, backend_start)
  JOIN pg_catalog.pg_stat_activity a ON a.pid = t.pid AND a.backend_start = t.backend_start
"""


# One statement per target per cycle, whatever the number of roles or sessions: the server
# aggregates, and only what is over a threshold comes back (full roles with a few of their
# sessions, long idle transactions, long queries), with what history keeps (counts by state, and
# the counts of roles at or above half their limit or ``watched``: protected and owned roles).
# The bot's own sessions never raise alerts but do count towards fill, as they do for the server.
MONITOR_SNAPSHOT = f"""
WITH activity AS MATERIALIZED (
    SELECT a.pid, a.usesysid, a.usename::text AS role, a.datname::text AS database, a.application_name,
           host(a.client_addr) AS client_addr, a.state, a.backend_start, a.xact_start, a.query_start,
           a.state_change, left(a.query, {QUERY_PREVIEW_CHARS}) AS query, length(a.query) AS query_length,
           (a.pid = pg_catalog.pg_backend_pid()
            OR (a.usename = session_user AND a.application_name = %(bot_app)s)) AS own,
           r.rolconnlimit AS role_limit, r.rolsuper AS role_super
      FROM pg_catalog.pg_stat_activity a
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
     WHERE {_CLIENT_BACKEND.format(alias="a")}
), per_role AS MATERIALIZED (
    -- Each session's role limit comes with it (one hash join), so counting needs no join at all.
    SELECT x.usesysid AS oid, x.role, x.role_limit AS "limit", x.role_super AS super, count(*) AS used
      FROM activity x
     WHERE x.role_limit IS NOT NULL
     GROUP BY 1, 2, 3, 4
), full_roles AS (
    SELECT u.role, u."limit", u.used, u.oid FROM per_role u
     WHERE u."limit" >= 0 AND NOT u.super AND u.used >= u."limit"
), role_use AS (
    SELECT u.role, u."limit", u.used FROM per_role u
     WHERE (u."limit" > 0 AND NOT u.super AND u.used * 2 >= u."limit") OR u.role = ANY(%(watched)s::text[])
    UNION ALL  -- watched roles without a session now
    SELECT r.rolname::text, r.rolconnlimit, 0 FROM pg_catalog.pg_roles r
     WHERE r.rolname = ANY(%(watched)s::text[]) AND NOT EXISTS (SELECT 1 FROM per_role u WHERE u.oid = r.oid)
)
SELECT current_setting('server_version') AS server_version,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       {_RESERVED} AS reserved,
       now() AS observed_at,
       (SELECT count(*) FROM activity) AS client_backends,
       (SELECT coalesce(json_agg(json_build_object(
                   'role', f.role, 'limit', f."limit", 'used', f.used,
                   'sessions', (SELECT coalesce(json_agg(json_build_object(
                                        'pid', s.pid, 'state', s.state, 'application', s.application_name,
                                        'client', s.client_addr, 'state_change', s.state_change)
                                        ORDER BY s.state_change NULLS LAST), '[]')
                                  FROM (SELECT * FROM activity y WHERE y.usesysid = f.oid
                                         ORDER BY y.state_change NULLS LAST LIMIT 10) s))
               ORDER BY f.role), '[]')
          FROM full_roles f) AS full_roles,
       (SELECT coalesce(json_agg(json_build_object(
                   'pid', i.pid, 'role', i.role, 'database', i.database, 'application', i.application_name,
                   'client', i.client_addr, 'backend_start', i.backend_start, 'xact_start', i.xact_start,
                   'state_change', i.state_change, 'query', i.query, 'query_length', i.query_length)
                   ORDER BY i.state_change), '[]')
          FROM activity i
         WHERE NOT i.own AND i.state IN ({_IDLE_IN_TRANSACTION})
           AND i.state_change <= now() - make_interval(secs => %(idle_in_tx)s)) AS idle_in_transaction,
       (SELECT coalesce(json_agg(json_build_object(
                   'pid', q.pid, 'role', q.role, 'database', q.database, 'application', q.application_name,
                   'client', q.client_addr, 'backend_start', q.backend_start, 'query_start', q.query_start,
                   'query', q.query, 'query_length', q.query_length) ORDER BY q.query_start), '[]')
          FROM activity q
         WHERE NOT q.own AND q.state = 'active'
           AND q.query_start <= now() - make_interval(secs => %(long_query)s)) AS long_queries,
       (SELECT coalesce(json_object_agg(b.state, b.n), '{{}}')
          FROM (SELECT coalesce(s.state, 'unknown') AS state, count(*) AS n FROM activity s GROUP BY 1) b) AS by_state,
       (SELECT coalesce(json_object_agg(u.role, json_build_array(u.used, u."limit")), '{{}}')
          FROM role_use u) AS role_use
"""


PRIVILEGES = """
SELECT current_setting('server_version') AS server_version,
       current_user::text AS login,
       r.rolsuper AS superuser,
       r.rolsuper OR pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all,
       r.rolsuper OR pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS signals
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = current_user
"""


# Whether the bot gets in when every ordinary slot is taken, and how many it may have at once.
WHEN_FULL = f"""
SELECT current_setting('server_version_num')::int AS version_num,
       {_RESERVED} AS reserved,
       {_MAY_USE_RESERVED} AS may_use_reserved,
       (SELECT r.rolconnlimit FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS role_limit
"""


# setup-sql's one question: is the role it is asked to create a superuser on this server already?
ROLE_IS_SUPERUSER = "SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = %s"


# Login proofs under way: client sessions whose application_name carries a link code. The role
# is the session's login role (usesysid), not one it may have switched to (SET ROLE).
LINK_SESSIONS = f"""
SELECT a.application_name AS application, a.usesysid::bigint AS role_oid, a.pid,
       host(a.client_addr) AS client_addr
  FROM pg_catalog.pg_stat_activity a
 WHERE {_CLIENT_BACKEND.format(alias="a")}
   AND a.application_name LIKE %(prefix)s
"""


# --- drain: refusing new connections to a database, through the function setup-sql --drain makes

# The least-privilege way (``pgconn-bot setup-sql --drain DB…``, run once by a superuser in the
# database the target connects to): a SECURITY DEFINER function, owned by that superuser, that
# can only toggle ``datallowconn`` of the databases it lists; EXECUTE granted to the bot's role.
DRAIN_FUNCTION = "pgconn_drain.set_allow_connections(name, boolean)"

DRAIN_SETUP = f"""
SELECT pg_catalog.to_regprocedure('{DRAIN_FUNCTION}') IS NOT NULL AS installed,
       coalesce(pg_catalog.has_function_privilege(
           pg_catalog.to_regprocedure('{DRAIN_FUNCTION}'), 'EXECUTE'), false) AS may_execute,
       coalesce(pg_catalog.has_function_privilege(
           pg_catalog.to_regprocedure('pgconn_drain.drainable()'), 'EXECUTE'), false) AS may_list
"""

# The databases the function may drain (call only when DRAIN_SETUP says may_list).
DRAINABLE = "SELECT pgconn_drain.drainable() AS databases"

SET_ALLOW_CONNECTIONS = "SELECT pgconn_drain.set_allow_connections(%(database)s, %(allow)s)"


# What the server says about draining a database, before a request is made.
DRAIN_CHECK = f"""
SELECT d.datname IS NOT NULL AS exists, coalesce(d.datistemplate, false) AS template,
       coalesce(d.datallowconn, true) AS allows_connections,
       %(database)s::text = pg_catalog.current_database() AS own,
       coalesce(pg_catalog.has_function_privilege(
           pg_catalog.to_regprocedure('{DRAIN_FUNCTION}'), 'EXECUTE'), false) AS installed,
       (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS superuser,
       ARRAY(SELECT x.datname::text FROM pg_catalog.pg_database x
              WHERE NOT x.datistemplate AND x.datname <> %(database)s::text
                AND pg_catalog.lower(x.datname) LIKE pg_catalog.lower(pg_catalog.left(%(database)s::text, 3)) || '%%'
              ORDER BY x.datname LIMIT 3) AS suggestions
  FROM (SELECT 1) one
  LEFT JOIN pg_catalog.pg_database d ON d.datname = %(database)s::text
"""

# A superuser bot (not recommended) changes it itself.
ALTER_ALLOW_CONNECTIONS = "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS {allow}"
