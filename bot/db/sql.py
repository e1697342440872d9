"""Every SQL statement the bot runs, in one place. Always parameterised.

PostgreSQL 13–17 differences are handled here and nowhere else:
- ``reserved_connections`` exists from 16 on: read with ``current_setting(name, true)``, which
  yields NULL (→ 0) on older servers instead of an error.
- ``pg_terminate_backend(pid, timeout)`` exists from 14 on: ``signal_statement`` picks the waiting
  form there and the plain one on 13, where the executor polls ``STILL_RUNNING`` instead.
Everything else used here (``backend_type``, ``pg_roles``, ``state_change``) exists on all of them.
"""

from __future__ import annotations

from bot.db.connect import BOT_APPLICATION_NAME as BOT_APPLICATION_NAME

QUERY_PREVIEW_CHARS = 200

# --- connection set-up ---------------------------------------------------------------------

# ``SET`` cannot take bind parameters; set_config can.
CONFIGURE_SESSION = """
SELECT pg_catalog.set_config('statement_timeout', %(statement_timeout)s, false),
       pg_catalog.set_config('lock_timeout', %(lock_timeout)s, false),
       session_user::text AS login
"""

# The login role of a connection: the bot's logins are never signalled (see signals.Protection).
LOGIN = "SELECT session_user::text AS login"

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
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
       now() AS observed_at
"""

# --- state database (requests, approvals, audit, alerts) -----------------------------------

STATE_SCHEMA = "pgconn"

# State connections give up on a lock, a statement or an open transaction after a while: the
# bot's own work is short, and nothing anyone else does may make it wait for ever.
STATE_SESSION_OPTIONS = (
    "-c lock_timeout=5s -c statement_timeout=15s -c idle_in_transaction_session_timeout=60s -c TimeZone=UTC"
)

# Nothing here takes an advisory lock: any role that can connect to the state database could
# take one first and stall the bot. Serialisation is on tables only the bot's role can lock.
STATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS pgconn"
STATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS pgconn.schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
# Serialises migrations across replicas starting at once; migrations may take longer than a
# statement normally may.
MIGRATION_LOCK = """
SET LOCAL statement_timeout = '5min';
SET LOCAL lock_timeout = '1min';
LOCK TABLE pgconn.schema_version IN EXCLUSIVE MODE
"""

# Who owns schema pgconn and what is in it: the bot adopts the schema only if its own role owns
# it and everything in it (anyone else who owned it could rewrite or drop the audit trail).
STATE_SCHEMA_OWNERSHIP = """
SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text AS owner,
       current_user::text AS bot_role,
       n.nspowner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS owned,
       ARRAY(SELECT c.relname::text FROM pg_catalog.pg_class c
              WHERE c.relnamespace = n.oid AND c.relowner <> n.nspowner
              UNION ALL
             SELECT p.proname::text FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = n.oid AND p.proowner <> n.nspowner
              ORDER BY 1) AS foreign_objects,
       ARRAY(SELECT DISTINCT CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                  ELSE pg_catalog.pg_get_userbyid(g.grantee)::text END
               FROM (SELECT (pg_catalog.aclexplode(n.nspacl)).*
                     UNION ALL
                     SELECT (pg_catalog.aclexplode(c.relacl)).*
                       FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid) g
              WHERE g.grantee <> n.nspowner
                -- what could change or lock the bot's tables; reading them (auditors) is fine
                AND g.privilege_type IN ('CREATE', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'MAINTAIN')
              ORDER BY 1) AS foreign_grants
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname = 'pgconn'
"""

# Roles that are members of the bot's role: they can do whatever it can, the audit included.
BOT_ROLE_MEMBERS = """
SELECT pg_catalog.array_agg(r.rolname::text ORDER BY r.rolname) AS members
  FROM pg_catalog.pg_auth_members m
  JOIN pg_catalog.pg_roles r ON r.oid = m.member
 WHERE m.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
"""

STATE_APPLIED_VERSIONS = "SELECT version FROM pgconn.schema_version"
STATE_RECORD_VERSION = "INSERT INTO pgconn.schema_version (version) VALUES (%(version)s)"


# --- approval flow on the monitored server --------------------------------------------------

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
   AND (%(role_oid)s::oid IS NULL
        OR (a.usesysid = %(role_oid)s::oid AND {_CLIENT_BACKEND.format(alias="a")}
            AND NOT (a.pid = pg_catalog.pg_backend_pid()
                     OR (a.usename = session_user AND a.application_name = %(bot_app)s))))
   AND (%(idle_for)s::interval IS NULL
        OR (a.state IN ('idle', 'idle in transaction', 'idle in transaction (aborted)')
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
                     AND (a.state NOT IN ('idle', 'idle in transaction', 'idle in transaction (aborted)')
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

# Sessions (pid + backend_start) that still exist: what a terminate is still waiting for.
STILL_RUNNING = """
SELECT a.pid
  FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS t(pid, backend_start)
  JOIN pg_catalog.pg_stat_activity a ON a.pid = t.pid AND a.backend_start = t.backend_start
"""

TERMINATE_TIMEOUT_SINCE = 140000  # server_version_num that has pg_terminate_backend(pid, timeout)


def signal_statement(action: str, server_version_num: int) -> str:
    if action == "cancel":
        return CANCEL
    return TERMINATE_AND_WAIT if server_version_num >= TERMINATE_TIMEOUT_SINCE else TERMINATE


# --- state: requests, approvals, audit ------------------------------------------------------

_SCHEMA_V1 = r"""
CREATE TABLE pgconn.request (
    id                 bigserial PRIMARY KEY,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    requester          text NOT NULL,
    requester_name     text,
    action             text NOT NULL CHECK (action IN ('terminate', 'cancel')),
    scope              text NOT NULL CHECK (scope IN ('pids', 'user', 'idle')),
    target             text NOT NULL,
    role_name          text,
    older_than         interval,
    reason             text,
    command_text       text NOT NULL,
    fills              jsonb NOT NULL DEFAULT '[]',
    required_approvals integer NOT NULL CHECK (required_approvals >= 1),
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN
                       ('pending', 'executing', 'executed', 'denied', 'expired', 'withdrawn', 'interrupted')),
    decided_by         text,
    decided_at         timestamptz,
    finished_at        timestamptz,
    origin_channel     text,
    channel            text,
    message_ts         text,
    shown_state        text,
    sync_attempts      integer NOT NULL DEFAULT 0,
    sync_after         timestamptz,
    requester_told     boolean NOT NULL DEFAULT false
);
CREATE INDEX request_pending ON pgconn.request (expires_at) WHERE status = 'pending';

CREATE TABLE pgconn.request_target (
    request_id    bigint NOT NULL REFERENCES pgconn.request (id),
    pid           integer NOT NULL,
    backend_start timestamptz NOT NULL,
    role_oid      oid NOT NULL,
    role_name     text NOT NULL,
    database      text,
    application   text,
    client        text,
    state         text,
    state_change  timestamptz,
    xact_start    timestamptz,
    query_start   timestamptz,
    observed_at   timestamptz NOT NULL,
    blocks        integer[] NOT NULL DEFAULT '{}',
    outcome       text CHECK (outcome IN
                  ('terminated', 'cancelled', 'gone', 'replaced', 'protected', 'changed', 'failed',
                   'still_running')),
    detail        text,
    PRIMARY KEY (request_id, pid)
);

CREATE TABLE pgconn.approval (
    request_id  bigint NOT NULL REFERENCES pgconn.request (id),
    approver    text NOT NULL,
    approved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, approver)
);

CREATE TABLE pgconn.audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    event       text NOT NULL,
    request_id  bigint,
    action      text,
    target      text,
    role_name   text,
    pids        integer[] NOT NULL DEFAULT '{}',
    actor       text,
    requester   text,
    approvers   text[] NOT NULL DEFAULT '{}',
    outcome     text,
    message_ref text
);
CREATE INDEX audit_request ON pgconn.audit (request_id);

CREATE FUNCTION pgconn.audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgconn.audit is append-only';
END
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON pgconn.audit
    FOR EACH ROW EXECUTE FUNCTION pgconn.audit_is_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON pgconn.audit
    FOR EACH STATEMENT EXECUTE FUNCTION pgconn.audit_is_append_only();

-- Audit entries waiting to be posted to Slack. A row leaves the queue only when Slack accepted it.
CREATE TABLE pgconn.audit_outbox (
    audit_id     bigint PRIMARY KEY REFERENCES pgconn.audit (id),
    channel      text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz,
    last_error   text,
    delivered_at timestamptz,
    delivered_ts text
);
CREATE INDEX audit_outbox_due ON pgconn.audit_outbox (next_attempt) WHERE delivered_at IS NULL;
"""

# Each migration runs once, in order, in its own transaction. Append; never edit a shipped one.
STATE_MIGRATIONS: list[tuple[int, str]] = [(1, _SCHEMA_V1)]

_REQUEST_COLUMNS = """
r.id, r.created_at, r.expires_at, r.requester, r.requester_name, r.action, r.scope, r.target, r.role_name,
r.older_than, r.reason, r.command_text, r.fills, r.required_approvals, r.status, r.decided_by, r.decided_at,
r.finished_at, r.origin_channel, r.channel, r.message_ts, now() AS now
"""

INSERT_REQUEST = """
INSERT INTO pgconn.request (expires_at, requester, requester_name, action, scope, target, role_name, older_than,
                            reason, command_text, fills, required_approvals, origin_channel, status)
VALUES (now() + make_interval(secs => %(ttl)s), %(requester)s, %(requester_name)s, %(action)s, %(scope)s,
        %(target)s, %(role_name)s, %(older_than)s, %(reason)s, %(command_text)s, %(fills)s,
        %(required_approvals)s, %(origin_channel)s, %(status)s)
RETURNING id
"""

# Serialises the openings of one requester's requests, so the caps hold: a row lock on a table
# only the bot can write (until the transaction ends).
REQUESTER_LOCK = """
INSERT INTO pgconn.requester_gate (requester) VALUES (%(requester)s)
ON CONFLICT (requester) DO UPDATE SET requester = EXCLUDED.requester
"""

# A requester's requests still open (being posted, or waiting for a decision), and how many they
# opened in the last minute, whatever became of them.
OPEN_REQUESTS_OF = """
SELECT r.id, r.status IN ('posting', 'pending') AND r.expires_at > now() AS open
  FROM pgconn.request r
 WHERE r.requester = %(requester)s AND r.status IN ('posting', 'pending')
UNION
SELECT r.id, r.status IN ('posting', 'pending') AND r.expires_at > now() AS open
  FROM pgconn.request r
 WHERE r.requester = %(requester)s AND r.created_at > now() - interval '1 minute'
 ORDER BY id
"""

INSERT_TARGET = """
INSERT INTO pgconn.request_target (request_id, pid, backend_start, role_oid, role_name, database, application,
                                   client, state, state_change, xact_start, query_start, observed_at, blocks)
VALUES (%(request_id)s, %(pid)s, %(backend_start)s, %(role_oid)s, %(role_name)s, %(database)s, %(application)s,
        %(client)s, %(state)s, %(state_change)s, %(xact_start)s, %(query_start)s, %(observed_at)s, %(blocks)s)
"""

SELECT_REQUEST = f"SELECT {_REQUEST_COLUMNS} FROM pgconn.request r WHERE r.id = %(id)s"

# Every decision starts here: the row lock serialises clicks on one request across replicas.
LOCK_REQUEST = f"SELECT {_REQUEST_COLUMNS} FROM pgconn.request r WHERE r.id = %(id)s FOR UPDATE"

SELECT_TARGETS = "SELECT * FROM pgconn.request_target WHERE request_id = %(id)s ORDER BY pid"

SELECT_APPROVALS = (
    "SELECT approver, approved_at FROM pgconn.approval WHERE request_id = %(id)s ORDER BY approved_at, approver"
)

ADD_APPROVAL = """
INSERT INTO pgconn.approval (request_id, approver) VALUES (%(id)s, %(approver)s)
ON CONFLICT DO NOTHING
"""

# The conditional ``status = 'pending'`` is what makes a decision happen at most once.
DECIDE = """
UPDATE pgconn.request
   SET status = %(status)s, decided_by = %(decided_by)s, decided_at = now()
 WHERE id = %(id)s AND status = 'pending'
RETURNING id
"""

# Posted: from now on approvers may decide it. ``ts`` may be NULL (Slack did not say where);
# then the first click on the message names it (ADOPT_MESSAGE).
MARK_POSTED = """
UPDATE pgconn.request
   SET status = CASE WHEN status = 'posting' THEN 'pending' ELSE status END,
       channel = coalesce(channel, %(channel)s), message_ts = coalesce(message_ts, %(ts)s)
 WHERE id = %(id)s
RETURNING status, message_version
"""

# A click names the message it came from, which proves the message exists: that records a
# message whose posting was not recorded (the bot died, or Slack's answer was lost), and makes a
# request that was still being posted approvable.
ADOPT_MESSAGE = """
UPDATE pgconn.request
   SET channel = coalesce(channel, %(channel)s), message_ts = coalesce(message_ts, %(ts)s),
       status = CASE WHEN status = 'posting' THEN 'pending' ELSE status END, message_dirty = true,
       message_version = message_version + 1
 WHERE id = %(id)s AND (message_ts IS NULL OR status = 'posting')
"""

# Only while still being posted: a request someone could already see and approve is never
# withdrawn behind their back. The requester is told in the answer to their command.
WITHDRAW = """
UPDATE pgconn.request SET status = 'withdrawn', decided_at = now(), finished_at = now(), requester_told = true
 WHERE id = %(id)s AND status = 'posting'
RETURNING id
"""

# Requests a crashed process left half-posted: withdrawn (a click on a message that did reach
# Slack would have made them pending).
WITHDRAW_STALE_POSTING = """
UPDATE pgconn.request SET status = 'withdrawn', decided_at = now(), finished_at = now()
 WHERE status = 'posting' AND created_at < now() - make_interval(secs => %(after)s)
RETURNING id
"""

RECORD_OUTCOME = """
UPDATE pgconn.request_target SET outcome = %(outcome)s, detail = %(detail)s
 WHERE request_id = %(request_id)s AND pid = %(pid)s
"""

FINISH = """
UPDATE pgconn.request SET status = 'executed', finished_at = now()
 WHERE id = %(id)s AND status = 'executing'
RETURNING id
"""

EXPIRE_ONE = """
UPDATE pgconn.request SET status = 'expired', decided_at = expires_at, finished_at = now()
 WHERE id = %(id)s AND status = 'pending' AND expires_at <= now()
RETURNING id
"""

EXPIRE_DUE = """
UPDATE pgconn.request SET status = 'expired', decided_at = expires_at, finished_at = now()
 WHERE status = 'pending' AND expires_at <= now()
RETURNING id
"""

# A request left 'executing' this long was cut off by a crash: it is never re-run (signals are
# not repeated blindly); it is reported instead.
INTERRUPT_STALE = """
UPDATE pgconn.request SET status = 'interrupted', finished_at = now()
 WHERE status = 'executing' AND decided_at < now() - make_interval(secs => %(after)s)
RETURNING id
"""

PENDING_REQUESTS = f"""
SELECT {_REQUEST_COLUMNS} FROM pgconn.request r
 WHERE r.status = 'pending' AND r.expires_at > now()
 ORDER BY r.id
 LIMIT %(limit)s
"""

# The message shows status plus approval count; when that differs from what was last rendered,
# the message needs an update (after a crash, a Slack outage, a console decision or an expiry).
_MESSAGE_STATE = "r.status || ':' || (SELECT count(*) FROM pgconn.approval p WHERE p.request_id = r.id)"

MESSAGE_STATE = f"SELECT {_MESSAGE_STATE} AS state FROM pgconn.request r WHERE r.id = %(id)s"

# Each serve/socket replica says every few seconds that it is alive. A lease (an audit entry being
# posted, a message being updated) counts only while its holder is: one left by a crashed or
# stopped replica is taken over within REPLICA_SILENCE, not when its time runs out.
REPLICA_SILENCE = "interval '10 seconds'"  # five missed heartbeats (a task of their own, every 2 s)
HEARTBEAT = """
INSERT INTO pgconn.replica (id, name, seen_at) VALUES (%(replica)s, %(name)s, now())
ON CONFLICT (id) DO UPDATE SET seen_at = now()
"""
GOODBYE = "DELETE FROM pgconn.replica WHERE id = %(replica)s"


def _held(holder: str, until: str) -> str:
    """SQL: the lease (``holder``, ``until``) is still held by a live replica."""
    return (
        f"({until} IS NOT NULL AND {until} > now() AND EXISTS (SELECT 1 FROM pgconn.replica live "
        f"WHERE live.id = {holder} AND live.seen_at > now() - {REPLICA_SILENCE}))"
    )


# One updater of a request's message at a time (claim → chat.update → record), so two updates
# racing cannot leave an older rendering recorded as current. A lease, committed before Slack is
# called: no connection or transaction is held while Slack answers. Whoever records must still
# hold the lease (``owner``); a lease that lapsed (a crash) is taken over.
CLAIM_MESSAGE_SYNC = f"""
UPDATE pgconn.request
   SET sync_owner = %(owner)s, sync_replica = %(replica)s, sync_lease_until = now() + make_interval(secs => %(lease)s)
 WHERE id = %(id)s AND NOT {_held("sync_replica", "sync_lease_until")}
RETURNING shown_state, message_version
"""

# ``version``: the message_version the shown state was read at. A change committed since (a click
# racing this update) leaves the message dirty: compared on the row itself, which PostgreSQL
# re-reads after waiting for that click's lock (a recount in a subquery would not see it).
MESSAGE_SHOWN = """
UPDATE pgconn.request r
   SET shown_state = %(state)s, sync_attempts = 0, sync_after = NULL, sync_owner = NULL, sync_lease_until = NULL,
       message_dirty = r.message_version <> %(version)s
 WHERE r.id = %(id)s AND r.sync_owner = %(owner)s
"""

MESSAGE_SYNC_FAILED = """
UPDATE pgconn.request
   SET sync_attempts = sync_attempts + 1,
       sync_after = now() + make_interval(secs => least(300, 2 ^ least(sync_attempts, 8))),
       sync_owner = NULL, sync_lease_until = NULL
 WHERE id = %(id)s AND sync_owner = %(owner)s
"""

# Just posted, showing ``state``: recorded as shown, unless something changed meanwhile (a click
# on the fresh message), which then needs an update.
POSTED_AS_SHOWN = f"""
UPDATE pgconn.request r SET shown_state = %(state)s, message_dirty = false
 WHERE r.id = %(id)s AND r.shown_state IS NULL AND r.message_version = %(version)s
   AND NOT {_held("r.sync_replica", "r.sync_lease_until")}
"""

RELEASE_MESSAGE_SYNC = """
UPDATE pgconn.request SET sync_owner = NULL, sync_lease_until = NULL WHERE id = %(id)s AND sync_owner = %(owner)s
"""

RELEASE_REQUESTER_NOTICE = "UPDATE pgconn.request SET requester_told = false WHERE id = %(id)s"

REFUSED_CLICK_SEEN = """
SELECT 1 FROM pgconn.audit WHERE request_id = %(id)s AND event = 'click_refused' AND actor = %(actor)s LIMIT 1
"""

# Not while executing: the buttons go only when the outcome can be shown with them gone, so
# "no Approve button" always means "decided, and done".
UNSYNCED_MESSAGES = f"""
SELECT r.id FROM pgconn.request r
 WHERE r.message_dirty AND r.message_ts IS NOT NULL AND r.status <> 'executing'
   AND (r.sync_after IS NULL OR r.sync_after <= now())
   AND NOT {_held("r.sync_replica", "r.sync_lease_until")}
 ORDER BY r.id
 LIMIT %(limit)s
"""

# Claimed by exactly one process; told once.
CLAIM_REQUESTER_NOTICE = """
UPDATE pgconn.request SET requester_told = true
 WHERE id = %(id)s AND NOT requester_told
   AND status IN ('executed', 'denied', 'expired', 'interrupted', 'withdrawn')
RETURNING id
"""

APPEND_AUDIT = """
WITH entry AS (
    INSERT INTO pgconn.audit (event, request_id, action, target, role_name, pids, actor, requester, approvers,
                              outcome, message_ref, origin)
    VALUES (%(event)s, %(request_id)s, %(action)s, %(target)s, %(role_name)s, %(pids)s, %(actor)s,
            %(requester)s, %(approvers)s, %(outcome)s, %(message_ref)s, %(origin)s)
    RETURNING id
), queued AS (
    INSERT INTO pgconn.audit_outbox (audit_id, channel, lane)
    SELECT id, %(channel)s, %(lane)s FROM entry WHERE %(channel)s::text IS NOT NULL
)
SELECT id FROM entry
"""

# Refusals are recorded one by one up to a limit per person and minute; beyond it they are
# counted, and the count becomes one entry when the minute is over (see RequestStore).
# The person's window, created if need be and locked until the transaction ends (one statement,
# so the housekeeper's CLOSE_REFUSAL_WINDOWS cannot remove it in between).
LOCK_REFUSAL_WINDOW = """
INSERT INTO pgconn.refusal_window AS w (actor, window_start) VALUES (%(actor)s, now())
ON CONFLICT (actor) DO UPDATE SET actor = EXCLUDED.actor
RETURNING w.recorded, w.suppressed, w.window_start, w.first_suppressed, w.last_suppressed,
          w.window_start <= now() - make_interval(secs => %(window)s) AS over
"""

RESTART_REFUSAL_WINDOW = """
UPDATE pgconn.refusal_window
   SET window_start = now(), recorded = 0, suppressed = 0, first_suppressed = NULL, last_suppressed = NULL
 WHERE actor = %(actor)s
"""

COUNT_REFUSAL = """
UPDATE pgconn.refusal_window
   SET recorded = recorded + CASE WHEN %(recorded)s THEN 1 ELSE 0 END,
       suppressed = suppressed + CASE WHEN %(recorded)s THEN 0 ELSE 1 END,
       first_suppressed = CASE WHEN %(recorded)s THEN first_suppressed ELSE coalesce(first_suppressed, now()) END,
       last_suppressed = CASE WHEN %(recorded)s THEN last_suppressed ELSE now() END
 WHERE actor = %(actor)s
"""

# Windows that are over: gone, each with what it kept back (summarised by the caller).
CLOSE_REFUSAL_WINDOWS = """
DELETE FROM pgconn.refusal_window
 WHERE window_start <= now() - make_interval(secs => %(window)s)
RETURNING actor, suppressed, first_suppressed, last_suppressed
"""

RECENT_AUDIT = "SELECT * FROM pgconn.audit ORDER BY id DESC LIMIT %(limit)s"

# What waits for the audit channel configured now: not delivered, and not parked as
# undeliverable to that channel (a parked entry is retried after a while, and at once when the
# channel changes). Lane 0 holds the events that matter (requested, approved, executed, …), lane
# 1 refusals: lane 1 goes out only when lane 0 is empty, so no flood of refusals delays them.
_WAITING = """
    q.delivered_at IS NULL
    AND (q.parked_channel IS NULL OR q.parked_channel IS DISTINCT FROM %(channel)s
         OR q.parked_at < now() - make_interval(secs => %(park_retry)s))
"""

# Oldest first within a lane: only the head can be claimed, and only when it is due, so a
# failing Slack holds back everything behind it. A lease (not a transaction held open while Slack
# answers) keeps two replicas from posting one entry twice. (With several replicas, or ids that
# commit out of order, the channel's order can occasionally differ from the table's; nothing is
# lost, and the table is the record.) The claim and the read of the entry are one transaction,
# so a task cancelled between them leaves no lease behind.
CLAIM_AUDIT_DELIVERY = f"""
UPDATE pgconn.audit_outbox o
   SET leased_until = now() + make_interval(secs => %(lease)s), leased_by = %(replica)s, attempts = o.attempts + 1
 WHERE o.audit_id = (
        SELECT q.audit_id FROM pgconn.audit_outbox q
         WHERE {_WAITING}
         ORDER BY q.lane, q.audit_id
         LIMIT 1
           FOR UPDATE SKIP LOCKED)
   AND o.next_attempt <= now()
   AND NOT {_held("o.leased_by", "o.leased_until")}
RETURNING o.audit_id, o.attempts
"""

# Slack will never take this entry (its content): kept, counted, and not in anyone's way.
PARK_AUDIT_ENTRY = """
UPDATE pgconn.audit_outbox
   SET parked_at = now(), parked_channel = %(channel)s, last_error = %(error)s, leased_until = NULL
 WHERE audit_id = %(id)s
"""

# Slack will take nothing in this channel (archived, not found, not a member): every waiting
# entry is parked at once rather than tried one by one; leases other processes hold are left.
PARK_AUDIT_CHANNEL = """
UPDATE pgconn.audit_outbox
   SET parked_at = now(), parked_channel = %(channel)s, last_error = %(error)s,
       leased_until = CASE WHEN audit_id = %(id)s THEN NULL ELSE leased_until END
 WHERE delivered_at IS NULL AND (audit_id = %(id)s OR leased_until IS NULL OR leased_until < now())
"""

# At a replica's start, everything waiting gets tried at once: parked entries, and those whose
# backoff a previous process left (after a restart, Slack deserves a fresh look). Not those Slack
# asked to wait for (rate limited: asking early only earns a longer wait), nor those another live
# replica is posting right now.
RETRY_WAITING_AUDIT = f"""
UPDATE pgconn.audit_outbox o SET parked_at = NULL, parked_channel = NULL, next_attempt = now()
 WHERE o.delivered_at IS NULL AND (o.parked_at IS NOT NULL OR o.next_attempt > now())
   AND (o.parked_at IS NOT NULL OR o.last_error IS NULL OR o.last_error NOT IN ('ratelimited', 'HTTP 429'))
   AND NOT {_held("o.leased_by", "o.leased_until")}
"""

UNDELIVERABLE_AUDIT = """
SELECT count(*) AS parked, min(parked_at) AS since, max(last_error) AS error
  FROM pgconn.audit_outbox q
 WHERE q.delivered_at IS NULL AND q.parked_channel IS NOT DISTINCT FROM %(channel)s AND q.parked_at IS NOT NULL
"""

# The request message's place is looked up at delivery: "requested" is written before it is posted.
SELECT_AUDIT_FOR_DELIVERY = """
SELECT a.*, r.channel AS request_channel, r.message_ts AS request_ts
  FROM pgconn.audit a
  LEFT JOIN pgconn.request r ON r.id = a.request_id
 WHERE a.id = %(id)s
"""

AUDIT_DELIVERED = """
UPDATE pgconn.audit_outbox
   SET delivered_at = now(), delivered_ts = %(ts)s, channel = %(channel)s, leased_until = NULL, last_error = NULL,
       parked_at = NULL, parked_channel = NULL
 WHERE audit_id = %(id)s
"""

AUDIT_DELIVERY_FAILED = """
UPDATE pgconn.audit_outbox
   SET leased_until = NULL, last_error = %(error)s, next_attempt = now() + make_interval(secs => %(delay)s)
 WHERE audit_id = %(id)s
"""

# Only the head of the queue decides when to look again (everything behind it waits for it),
# including while another replica holds its lease.
NEXT_AUDIT_DUE = f"""
SELECT extract(epoch FROM greatest(h.next_attempt, CASE WHEN h.held THEN h.leased_until END) - now()) AS seconds,
       (SELECT count(*) FROM pgconn.audit_outbox q WHERE {_WAITING}) AS waiting
  FROM (SELECT q.next_attempt, q.leased_until, {_held("q.leased_by", "q.leased_until")} AS held
          FROM pgconn.audit_outbox q
         WHERE {_WAITING} ORDER BY q.lane, q.audit_id LIMIT 1) h
"""

# --- monitor ---------------------------------------------------------------------------------

# One statement per target per cycle, whatever the number of roles or sessions: the server
# aggregates, and only what is over a threshold comes back (full roles with a few of their
# sessions, long idle transactions, long queries). The bot's own sessions never raise alerts but
# do count towards fill, as they do for the server.
MONITOR_SNAPSHOT = f"""
WITH activity AS MATERIALIZED (
    SELECT a.pid, a.usesysid, a.usename::text AS role, a.datname::text AS database, a.application_name,
           host(a.client_addr) AS client_addr, a.state, a.backend_start, a.xact_start, a.query_start,
           a.state_change, left(a.query, {QUERY_PREVIEW_CHARS}) AS query, length(a.query) AS query_length,
           (a.pid = pg_catalog.pg_backend_pid()
            OR (a.usename = session_user AND a.application_name = %(bot_app)s)) AS own
      FROM pg_catalog.pg_stat_activity a
     WHERE {_CLIENT_BACKEND.format(alias="a")}
), full_roles AS (
    SELECT r.rolname::text AS role, r.rolconnlimit AS "limit", count(*) AS used, r.oid
      FROM activity x
      JOIN pg_catalog.pg_roles r ON r.oid = x.usesysid
     WHERE r.rolconnlimit >= 0 AND NOT r.rolsuper
     GROUP BY r.oid, r.rolname, r.rolconnlimit
    HAVING count(*) >= r.rolconnlimit
)
SELECT current_setting('server_version') AS server_version,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
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
         WHERE NOT i.own AND i.state IN ('idle in transaction', 'idle in transaction (aborted)')
           AND i.state_change <= now() - make_interval(secs => %(idle_in_tx)s)) AS idle_in_transaction,
       (SELECT coalesce(json_agg(json_build_object(
                   'pid', q.pid, 'role', q.role, 'database', q.database, 'application', q.application_name,
                   'client', q.client_addr, 'backend_start', q.backend_start, 'query_start', q.query_start,
                   'query', q.query, 'query_length', q.query_length) ORDER BY q.query_start), '[]')
          FROM activity q
         WHERE NOT q.own AND q.state = 'active'
           AND q.query_start <= now() - make_interval(secs => %(long_query)s)) AS long_queries
"""

_SCHEMA_V2 = r"""
CREATE TABLE pgconn.alert (
    id            bigserial PRIMARY KEY,
    target        text NOT NULL,
    kind          text NOT NULL,
    subject       text NOT NULL,
    severity      text NOT NULL,
    summary       text NOT NULL,
    details       jsonb NOT NULL DEFAULT '{}',
    opened_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz,
    resolution    text,
    channel       text,
    message_ts    text,
    shown_state   text,
    reply_posted  boolean NOT NULL DEFAULT false,
    sync_attempts integer NOT NULL DEFAULT 0,
    sync_after    timestamptz
);
-- At most one open alert per problem: what makes "once per problem" hold across restarts.
CREATE UNIQUE INDEX alert_open_problem ON pgconn.alert (target, kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alert_unsettled ON pgconn.alert (id) WHERE resolved_at IS NULL OR NOT reply_posted;
"""

STATE_MIGRATIONS.append((2, _SCHEMA_V2))

_SCHEMA_V3 = r"""
-- Functions of the bot's own resolve only in pg_catalog, whoever calls them.
ALTER FUNCTION pgconn.audit_is_append_only() SET search_path = pg_catalog, pg_temp;

-- Where an action came from when it was not a Slack click or command (the console, its local user).
ALTER TABLE pgconn.audit ADD COLUMN origin text;

-- Lanes (0: events that matter, 1: refusals) and entries parked as undeliverable to a channel.
ALTER TABLE pgconn.audit_outbox
    ADD COLUMN lane smallint NOT NULL DEFAULT 0 CHECK (lane IN (0, 1)),
    ADD COLUMN parked_at timestamptz,
    ADD COLUMN parked_channel text;
DROP INDEX pgconn.audit_outbox_due;
CREATE INDEX audit_outbox_queue ON pgconn.audit_outbox (lane, audit_id) WHERE delivered_at IS NULL;

-- Refusals recorded per person in the current minute, and those counted beyond the limit.
CREATE TABLE pgconn.refusal_window (
    actor            text PRIMARY KEY,
    window_start     timestamptz NOT NULL,
    recorded         integer NOT NULL DEFAULT 0,
    suppressed       integer NOT NULL DEFAULT 0,
    first_suppressed timestamptz,
    last_suppressed  timestamptz
);
CREATE INDEX refusal_window_start ON pgconn.refusal_window (window_start);

-- 'posting': stored, not yet posted for approval, so nobody can approve it yet.
ALTER TABLE pgconn.request DROP CONSTRAINT request_status_check;
ALTER TABLE pgconn.request ADD CONSTRAINT request_status_check CHECK (status IN
    ('posting', 'pending', 'executing', 'executed', 'denied', 'expired', 'withdrawn', 'interrupted'));
CREATE INDEX request_open_by_requester ON pgconn.request (requester) WHERE status IN ('posting', 'pending');

-- Who is updating the request's message in Slack right now, and until when.
ALTER TABLE pgconn.request ADD COLUMN sync_owner uuid, ADD COLUMN sync_replica uuid,
    ADD COLUMN sync_lease_until timestamptz;
ALTER TABLE pgconn.audit_outbox ADD COLUMN leased_by uuid;

-- The replicas alive now (a heartbeat every few seconds): a lease counts only while its holder is.
CREATE TABLE pgconn.replica (
    id      uuid PRIMARY KEY,
    name    text NOT NULL,  -- host:pid
    seen_at timestamptz NOT NULL
);
CREATE INDEX request_by_requester ON pgconn.request (requester, created_at);

-- What every replica asks every few seconds must stay small however long the history grows:
-- partial indexes on what is still open, and a flag for messages that need an update.
CREATE INDEX request_unfinished ON pgconn.request (status, expires_at)
    WHERE status IN ('posting', 'pending', 'executing');
ALTER TABLE pgconn.request ADD COLUMN message_dirty boolean NOT NULL DEFAULT false,
    ADD COLUMN message_version bigint NOT NULL DEFAULT 0;
UPDATE pgconn.request r SET message_dirty = true
 WHERE r.message_ts IS NOT NULL
   AND r.shown_state IS DISTINCT FROM
       r.status || ':' || (SELECT count(*) FROM pgconn.approval p WHERE p.request_id = r.id);
CREATE INDEX request_message_dirty ON pgconn.request (id) WHERE message_dirty;
CREATE FUNCTION pgconn.request_message_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'request' THEN
        NEW.message_dirty := true;
        NEW.message_version := OLD.message_version + 1;
        RETURN NEW;
    END IF;
    UPDATE pgconn.request SET message_dirty = true, message_version = message_version + 1 WHERE id = NEW.request_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER request_status_changed BEFORE UPDATE OF status ON pgconn.request
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION pgconn.request_message_changed();
CREATE TRIGGER approval_added AFTER INSERT ON pgconn.approval
    FOR EACH ROW EXECUTE FUNCTION pgconn.request_message_changed();
CREATE INDEX alert_resolved ON pgconn.alert (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX audit_outbox_delivered ON pgconn.audit_outbox (delivered_at) WHERE delivered_at IS NOT NULL;

-- Serialisation the bot alone can take part in (advisory locks anyone could take first).
CREATE TABLE pgconn.requester_gate (requester text PRIMARY KEY);
CREATE TABLE pgconn.monitor_leader (
    id         integer PRIMARY KEY CHECK (id = 1),
    holder     uuid NOT NULL,
    holder_name text NOT NULL,  -- host:pid, for people asking which replica leads
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Alerts stored before PGCONN_SHOW_QUERIES kept SQL text: reduced to its keyword and length.
UPDATE pgconn.alert
   SET details = pg_catalog.jsonb_set(details, '{query}', pg_catalog.to_jsonb(
           coalesce(pg_catalog.upper(pg_catalog.substring(details->>'query', '^\s*([A-Za-z]+)')), 'statement')
           || ' … (' || pg_catalog.length(details->>'query') || ' chars)'))
 WHERE details ? 'query' AND pg_catalog.jsonb_typeof(details->'query') = 'string';
"""

STATE_MIGRATIONS.append((3, _SCHEMA_V3))

# --- trimming: what is done is kept PGCONN_STATE_RETENTION long; the audit table, for ever ------

# In batches, so no statement holds locks for long however much there is to trim.
TRIM_DELIVERED_OUTBOX = """
DELETE FROM pgconn.audit_outbox
 WHERE audit_id IN (SELECT audit_id FROM pgconn.audit_outbox
                     WHERE delivered_at < now() - interval '1 day' LIMIT %(batch)s)
"""

TRIM_REQUESTS = """
WITH done AS (
    SELECT id FROM pgconn.request
     WHERE status IN ('executed', 'denied', 'expired', 'withdrawn', 'interrupted')
       AND coalesce(finished_at, decided_at, created_at) < now() - make_interval(secs => %(retention)s)
     LIMIT %(batch)s
), targets AS (
    DELETE FROM pgconn.request_target t USING done WHERE t.request_id = done.id
), approvals AS (
    DELETE FROM pgconn.approval a USING done WHERE a.request_id = done.id
)
DELETE FROM pgconn.request r USING done WHERE r.id = done.id
"""

TRIM_ALERTS = """
DELETE FROM pgconn.alert
 WHERE id IN (SELECT id FROM pgconn.alert
               WHERE resolved_at < now() - make_interval(secs => %(retention)s)
                 AND (reply_posted OR message_ts IS NULL)
               LIMIT %(batch)s)
"""

TRIM_REPLICAS = "DELETE FROM pgconn.replica WHERE seen_at < now() - interval '1 day'"

TRIM_REQUESTER_GATES = """
DELETE FROM pgconn.requester_gate g
 WHERE NOT EXISTS (SELECT 1 FROM pgconn.request r
                    WHERE r.requester = g.requester
                      AND (r.status IN ('posting', 'pending') OR r.created_at > now() - interval '1 minute'))
"""

# One replica runs the monitor: the one holding the lease, renewed while it makes progress. A
# leader that dies, hangs or loses the network stops renewing and is replaced when the lease
# runs out. ``epoch`` counts changes of leader: what the leader writes is fenced with it. A row
# in the bot's own table: nobody else can hold it.
HOLD_LEADERSHIP = """
INSERT INTO pgconn.monitor_leader AS l (id, holder, holder_name, epoch, expires_at)
VALUES (1, %(me)s, %(name)s, 1, now() + make_interval(secs => %(lease)s))
ON CONFLICT (id) DO UPDATE
   SET holder = EXCLUDED.holder, holder_name = EXCLUDED.holder_name,
       epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE l.epoch + 1 END,
       expires_at = EXCLUDED.expires_at
 WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
RETURNING epoch
"""

# Checked in the transaction that records a cycle's alerts: a replaced leader writes nothing.
STILL_LEADER = """
SELECT 1 FROM pgconn.monitor_leader
 WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s AND expires_at > now()
   FOR SHARE
"""

RELEASE_LEADERSHIP = """
UPDATE pgconn.monitor_leader SET expires_at = now() - interval '1 second' WHERE id = 1 AND holder = %(me)s
"""

OPEN_ALERTS_OF_TARGET = "SELECT * FROM pgconn.alert WHERE target = %(target)s AND resolved_at IS NULL"
OPEN_ALERTS_OF_TARGETS = "SELECT * FROM pgconn.alert WHERE target = ANY(%(targets)s::text[]) AND resolved_at IS NULL"

OPEN_ALERTS = "SELECT * FROM pgconn.alert WHERE resolved_at IS NULL ORDER BY opened_at, id LIMIT %(limit)s"

OPEN_ALERT = """
INSERT INTO pgconn.alert (target, kind, subject, severity, summary, details)
VALUES (%(target)s, %(kind)s, %(subject)s, %(severity)s, %(summary)s, %(details)s)
ON CONFLICT (target, kind, subject) WHERE resolved_at IS NULL DO NOTHING
"""

REFRESH_ALERT = """
UPDATE pgconn.alert SET severity = %(severity)s, summary = %(summary)s, details = %(details)s, last_seen_at = now()
 WHERE id = %(id)s AND resolved_at IS NULL
"""

RESOLVE_ALERT = """
UPDATE pgconn.alert SET resolved_at = now(), resolution = %(resolution)s, sync_attempts = 0, sync_after = NULL
 WHERE id = %(id)s AND resolved_at IS NULL
"""

# What still has to be said in Slack: new alerts to post, changed ones to edit, resolved ones to
# reply to. An alert that came and went before it could be posted needs nothing.
UNSETTLED_ALERTS = """
SELECT * FROM pgconn.alert
 WHERE (%(targets)s::text[] IS NULL OR target = ANY(%(targets)s::text[]))
   AND (sync_after IS NULL OR sync_after <= now())
   AND ((resolved_at IS NULL AND (message_ts IS NULL OR shown_state IS DISTINCT FROM severity || ':' || summary))
        OR (resolved_at IS NOT NULL AND message_ts IS NOT NULL AND NOT reply_posted))
 ORDER BY id
 LIMIT 50
"""

# Only the first post counts: a second one (two leaders overlapping for a moment) is deleted.
ALERT_POSTED = """
UPDATE pgconn.alert SET channel = %(channel)s, message_ts = %(ts)s, shown_state = %(state)s, sync_attempts = 0,
       sync_after = NULL
 WHERE id = %(id)s AND message_ts IS NULL
RETURNING id
"""

ALERT_SHOWN = "UPDATE pgconn.alert SET shown_state = %(state)s, sync_attempts = 0, sync_after = NULL WHERE id = %(id)s"

ALERT_REPLIED = "UPDATE pgconn.alert SET reply_posted = true, sync_attempts = 0, sync_after = NULL WHERE id = %(id)s"

# Never given up (an alert must be posted and resolved once Slack is back); the backoff is capped
# at five minutes, and a 429 waits exactly as long as Slack said without counting as a failure.
ALERT_SYNC_FAILED = """
UPDATE pgconn.alert
   SET sync_attempts = sync_attempts + CASE WHEN %(retry_after)s::float8 IS NULL THEN 1 ELSE 0 END,
       sync_after = now() + make_interval(
           secs => coalesce(%(retry_after)s::float8, least(300, 2 ^ least(sync_attempts, 8))))
 WHERE id = %(id)s
"""

RESOLVE_UNMONITORED = """
UPDATE pgconn.alert SET resolved_at = now(), resolution = 'the target is no longer monitored', sync_attempts = 0
 WHERE resolved_at IS NULL AND NOT (target = ANY(%(targets)s::text[]))
"""

SELECT_ALERT = "SELECT * FROM pgconn.alert WHERE id = %(id)s"

# --- pgconn-bot check ------------------------------------------------------------------------

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
WHEN_FULL = """
SELECT current_setting('server_version_num')::int AS version_num,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pg_use_reserved_connections')
            THEN pg_catalog.pg_has_role(current_user, 'pg_use_reserved_connections', 'USAGE') END AS may_use_reserved,
       (SELECT r.rolconnlimit FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS role_limit
"""

STATE_CHECK = """
SELECT (SELECT max(version) FROM pgconn.schema_version) AS version,
       pg_catalog.has_table_privilege('pgconn.request', 'INSERT, UPDATE')
       AND pg_catalog.has_table_privilege('pgconn.audit', 'INSERT')
       AND pg_catalog.has_table_privilege('pgconn.alert', 'INSERT, UPDATE') AS writable
"""
