"""SQL for the bot's own state database (PGCONN_STATE_URL): requests, approvals, the audit trail
and its outbox, alerts, leases. The schema itself is the numbered files in ``bot/db/migrations``.

Always parameterised, every name schema-qualified (connections pin ``search_path`` to
``pg_catalog, pg_temp`` as well). Nothing here takes an advisory lock: any role that can connect
to the state database could take one first and stall the bot; serialisation is on rows and
tables only the bot's role can lock.
"""

from __future__ import annotations

from importlib import resources

# --- the schema: numbered migrations -------------------------------------------------------------


def _migrations() -> list[tuple[int, str]]:
    """``bot/db/migrations/NNNN_name.sql`` in order. Each runs once, in its own transaction.
    Append a new file; never edit one that has shipped."""
    found = []
    for entry in resources.files("bot.db").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    found.sort()
    if [version for version, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps: {[v for v, _ in found]}")
    return found


STATE_MIGRATIONS: list[tuple[int, str]] = _migrations()

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


# What is there, read only (``check``, and the console before it creates anything).
STATE_PRESENCE = """
SELECT pg_catalog.current_database()::text AS database,
       EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgconn') AS schema_exists,
       pg_catalog.to_regclass('pgconn.schema_version') IS NOT NULL AS versioned,
       pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') AS may_create
"""


STATE_VERSION = "SELECT pg_catalog.max(version) AS version FROM pgconn.schema_version"


# What `pgconn-bot drop-state` would remove, and whether a replica still runs on it.
STATE_CONTENTS = """
SELECT (SELECT pg_catalog.count(*) FROM pgconn.request) AS requests,
       (SELECT pg_catalog.count(*) FROM pgconn.audit) AS audit_entries,
       (SELECT pg_catalog.count(*) FROM pgconn.alert) AS alerts,
       (SELECT pg_catalog.count(*) FROM pgconn.replica
         WHERE seen_at > pg_catalog.now() - interval '1 minute') AS live_replicas
"""


DROP_STATE = "DROP SCHEMA pgconn CASCADE"


STATE_RECORD_VERSION = "INSERT INTO pgconn.schema_version (version) VALUES (%(version)s)"


_REQUEST_COLUMNS = """
r.id, r.created_at, r.expires_at, r.requester, r.requester_name, r.action, r.scope, r.target, r.role_name,
r.older_than, r.reason, r.command_text, r.fills, r.required_approvals, r.status, r.decided_by, r.decided_at,
r.finished_at, r.origin_channel, r.channel, r.message_ts, r.escalate_after, r.escalate_at, r.database_name,
r.drain_for, r.spared, now() AS now
"""


INSERT_REQUEST = """
INSERT INTO pgconn.request (expires_at, requester, requester_name, action, scope, target, role_name, older_than,
                            reason, command_text, fills, required_approvals, origin_channel, status, escalate_after,
                            database_name, drain_for, spared)
VALUES (now() + make_interval(secs => %(ttl)s), %(requester)s, %(requester_name)s, %(action)s, %(scope)s,
        %(target)s, %(role_name)s, %(older_than)s, %(reason)s, %(command_text)s, %(fills)s,
        %(required_approvals)s, %(origin_channel)s, %(status)s, %(escalate_after)s, %(database_name)s,
        %(drain_for)s, %(spared)s)
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


INSERT_TARGET_IF_NEW = INSERT_TARGET.rstrip() + "\nON CONFLICT (request_id, pid) DO NOTHING\n"


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


# Self-service: the owner decides at once, in the transaction that stored the request.
START_SELF_SERVICE = """
UPDATE pgconn.request SET status = 'executing', decided_by = %(decided_by)s, decided_at = now()
 WHERE id = %(id)s AND status = 'pending'
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
UPDATE pgconn.request_target SET outcome = %(outcome)s, detail = %(detail)s, error = %(error)s
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
 WHERE (status = 'executing' AND coalesce(escalate_at, decided_at) < now() - make_interval(secs => %(after)s))
    OR (status = 'escalating' AND escalate_at < now() - make_interval(secs => %(after)s))
RETURNING id
"""


# The ladder: the cancel step's outcomes are recorded (RECORD_OUTCOME) and the request waits.
BEGIN_ESCALATION = """
UPDATE pgconn.request SET status = 'escalating', escalate_at = now() + escalate_after
 WHERE id = %(id)s AND status = 'executing' AND escalate_after IS NOT NULL
RETURNING id
"""


# Whoever sets it back to executing carries out the second step: once, whichever replica.
# escalate_at becomes when the step started, which is what INTERRUPT_STALE measures from.
CLAIM_ESCALATION = """
UPDATE pgconn.request SET status = 'executing', escalate_at = now()
 WHERE id = %(id)s AND status = 'escalating'
RETURNING id
"""


# Escalations due now (not those so late that INTERRUPT_STALE reports them instead).
DUE_ESCALATIONS = """
SELECT id FROM pgconn.request
 WHERE status = 'escalating' AND escalate_at <= now()
   AND escalate_at >= now() - make_interval(secs => %(after)s)
 ORDER BY escalate_at
 LIMIT 20
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
                              detail, message_ref, origin)
    VALUES (%(event)s, %(request_id)s, %(action)s, %(target)s, %(role_name)s, %(pids)s, %(actor)s,
            %(requester)s, %(approvers)s, %(detail)s, %(message_ref)s, %(origin)s)
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


# --- monitor history (``bot/db/history.py``) -------------------------------------------------------

# One row per server per cycle, one statement, written only under the leader's fence (the same
# check and lock as STILL_LEADER: nothing is written, rowcount 0, once the lease is another's). A
# history row need not wait for its WAL to reach disk (a crash may lose the last samples, nothing
# else), so the monitor's cycle waits for no fsync.
INSERT_HISTORY = """
INSERT INTO pgconn.history (target, at, covers, samples, client_backends, usable_slots, by_state, roles)
SELECT %(target)s, %(at)s, %(covers)s, %(samples)s, %(client_backends)s, %(usable_slots)s, %(by_state)s, %(roles)s
  FROM (SELECT pg_catalog.set_config('synchronous_commit', 'off', true)
          FROM pgconn.monitor_leader
         WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s AND expires_at > now()
           FOR SHARE) fence
"""


# A server's period (under any of its targets' names), each row with only the asked roles' counts
# (a row's roles are not even read when none are asked). The first row carries the clock alone
# when there is nothing in the period.
HISTORY_SAMPLES = """
WITH clock AS (SELECT now() AS now)
SELECT c.now, h.target, h.at, h.covers, h.samples, h.client_backends, h.usable_slots, h.by_state,
       CASE WHEN h.target IS NULL OR cardinality(%(roles)s::text[]) = 0 THEN '{}'::jsonb
            ELSE (SELECT coalesce(jsonb_object_agg(r.role, h.roles -> r.role), '{}')
                    FROM unnest(%(roles)s::text[]) AS r(role) WHERE h.roles ? r.role) END AS roles
  FROM clock c
  LEFT JOIN pgconn.history h
    ON h.target = ANY(%(targets)s::text[]) AND h.at >= c.now - make_interval(secs => %(since)s)
 ORDER BY h.at NULLS FIRST
"""


# Thinning, one statement per batch: the oldest ``batch`` buckets (``resolution`` seconds) before
# ``cutoff`` that still hold finer rows are taken out whole (with any row already merged into them)
# and put back as one row each, as ``model.history.merge`` says: the peaks (client backends, each
# state, each role's count with its latest limit), the cycles added up. Rows another replica is
# thinning are skipped. Returns one row per bucket written, with how many rows it replaced.
THIN_HISTORY = """
WITH due AS (
    SELECT DISTINCT h.target,
           to_timestamp(floor(extract(epoch FROM h.at) / %(resolution)s) * %(resolution)s) AS bucket
      FROM pgconn.history h
     WHERE h.at < %(cutoff)s AND h.covers < %(resolution)s
     ORDER BY 2, 1
     LIMIT %(batch)s
), taken AS (
    SELECT h.ctid AS row_id, d.bucket
      FROM pgconn.history h JOIN due d
        ON h.target = d.target AND h.at >= d.bucket AND h.at < d.bucket + make_interval(secs => %(resolution)s)
     WHERE h.covers <= %(resolution)s
       FOR UPDATE OF h SKIP LOCKED
), gone AS (
    DELETE FROM pgconn.history h USING taken t WHERE h.ctid = t.row_id
    RETURNING h.*, t.bucket
), states AS (
    SELECT s.target, s.bucket, jsonb_object_agg(s.state, s.peak) AS by_state
      FROM (SELECT g.target, g.bucket, e.key AS state, max(e.value::int) AS peak
              FROM gone g, jsonb_each_text(g.by_state) e GROUP BY 1, 2, 3) s
     GROUP BY 1, 2
), roles AS (
    SELECT r.target, r.bucket, jsonb_object_agg(r.role, jsonb_build_array(r.peak, r."limit")) AS roles
      FROM (SELECT g.target, g.bucket, e.key AS role, max((e.value ->> 0)::int) AS peak,
                   (array_agg((e.value ->> 1)::int ORDER BY g.at DESC))[1] AS "limit"
              FROM gone g, jsonb_each(g.roles) e GROUP BY 1, 2, 3) r
     GROUP BY 1, 2
), merged AS (
    SELECT g.target, g.bucket, greatest(%(resolution)s::real, max(g.covers)) AS covers, sum(g.samples) AS samples,
           max(g.client_backends) AS client_backends, (array_agg(g.usable_slots ORDER BY g.at DESC))[1] AS usable_slots,
           count(*) AS replaced
      FROM gone g GROUP BY 1, 2
), written AS (
    INSERT INTO pgconn.history (target, at, covers, samples, client_backends, usable_slots, by_state, roles)
    SELECT m.target, m.bucket, m.covers, m.samples, m.client_backends, m.usable_slots,
           coalesce(s.by_state, '{}'), coalesce(r.roles, '{}')
      FROM merged m
      LEFT JOIN states s ON s.target = m.target AND s.bucket = m.bucket
      LEFT JOIN roles r ON r.target = m.target AND r.bucket = m.bucket
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) AS buckets, coalesce((SELECT sum(replaced) FROM merged), 0) AS replaced
"""


HISTORY_CLOCK = "SELECT now() AS now"


TRIM_HISTORY = """
DELETE FROM pgconn.history
 WHERE ctid = ANY(ARRAY(SELECT ctid FROM pgconn.history
                         WHERE at < now() - make_interval(secs => %(retention)s) LIMIT %(batch)s))
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


# An alert as read: with its problem's snooze in force, if any. A snooze belongs to the problem
# (target, kind, subject), not to one alert: it outlives an alert that clears and comes back.
_ALERT_COLUMNS = "a.*, s.until AS snoozed_until, s.snoozed_by"
_ALERT_FROM = """pgconn.alert a
  LEFT JOIN pgconn.alert_snooze s
    ON s.target = a.target AND s.kind = a.kind AND s.subject = a.subject AND s.until > now()"""
# The same, where the alert is being updated (``a``).
_SNOOZED_UNTIL = """(SELECT s.until FROM pgconn.alert_snooze s
   WHERE s.target = a.target AND s.kind = a.kind AND s.subject = a.subject AND s.until > now())"""


def _alert_state(until: str) -> str:
    """SQL: what a posted alert message shows (``db.alerts.shown`` says the same in Python); when
    it differs from the ``shown_state`` recorded, the message is edited. ``until``: the snooze's."""
    return (
        "(a.severity || ':' || a.shape || coalesce('|ack:' || a.acked_by, '')"
        f" || coalesce('|snoozed:' || floor(extract(epoch FROM {until}))::bigint, ''))"
    )


OPEN_ALERTS_OF_TARGET = (
    f"SELECT {_ALERT_COLUMNS} FROM {_ALERT_FROM} WHERE a.target = %(target)s AND a.resolved_at IS NULL"
)


OPEN_ALERTS_OF_TARGETS = f"""
SELECT {_ALERT_COLUMNS} FROM {_ALERT_FROM}
 WHERE a.target = ANY(%(targets)s::text[]) AND a.resolved_at IS NULL
"""


OPEN_ALERTS = f"""
SELECT {_ALERT_COLUMNS} FROM {_ALERT_FROM}
 WHERE a.resolved_at IS NULL ORDER BY a.opened_at, a.id LIMIT %(limit)s
"""


OPEN_ALERT = """
INSERT INTO pgconn.alert (target, kind, subject, severity, shape, details)
VALUES (%(target)s, %(kind)s, %(subject)s, %(severity)s, %(shape)s, %(details)s)
ON CONFLICT (target, kind, subject) WHERE resolved_at IS NULL DO NOTHING
"""


REFRESH_ALERT = """
UPDATE pgconn.alert SET severity = %(severity)s, shape = %(shape)s, details = %(details)s, last_seen_at = now()
 WHERE id = %(id)s AND resolved_at IS NULL
"""


RESOLVE_ALERT = """
UPDATE pgconn.alert SET resolved_at = now(), resolution_details = %(details)s, sync_attempts = 0, sync_after = NULL
 WHERE id = %(id)s AND resolved_at IS NULL
"""


# What still has to be said in Slack: new alerts to post, changed ones to edit, resolved ones to
# reply to. An alert that came and went before it could be posted needs nothing. A new alert of a
# snoozed problem waits, unposted, until the snooze ends (``monitor.next_step``: HOLD), and is
# left out here so that no number of them can hold up the rest.
UNSETTLED_ALERTS = f"""
SELECT {_ALERT_COLUMNS} FROM {_ALERT_FROM}
 WHERE (%(targets)s::text[] IS NULL OR a.target = ANY(%(targets)s::text[]))
   AND (a.sync_after IS NULL OR a.sync_after <= now())
   AND ((a.resolved_at IS NULL AND a.message_ts IS NULL AND s.until IS NULL)
        OR (a.resolved_at IS NULL AND a.message_ts IS NOT NULL
            AND a.shown_state IS DISTINCT FROM {_alert_state("s.until")})
        OR (a.resolved_at IS NOT NULL AND a.message_ts IS NOT NULL AND NOT a.reply_posted))
 ORDER BY a.id
 LIMIT 50
"""


# What was shown is recorded only if it is still what the alert says now: a click (acknowledge,
# snooze) committed while the message was being laid out leaves it to be edited again.
_SHOWN_IF_CURRENT = f"CASE WHEN {_alert_state(_SNOOZED_UNTIL)} = %(state)s::text THEN %(state)s::text END"


# Only the first post counts: a second one (two leaders overlapping for a moment) is deleted.
ALERT_POSTED = f"""
UPDATE pgconn.alert a SET channel = %(channel)s, message_ts = %(ts)s, shown_state = {_SHOWN_IF_CURRENT},
       sync_attempts = 0, sync_after = NULL
 WHERE a.id = %(id)s AND a.message_ts IS NULL
RETURNING a.id
"""


ALERT_SHOWN = f"""
UPDATE pgconn.alert a SET shown_state = {_SHOWN_IF_CURRENT}, sync_attempts = 0, sync_after = NULL
 WHERE a.id = %(id)s
"""


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
UPDATE pgconn.alert SET resolved_at = now(), resolution_details = '{"unmonitored": true}', sync_attempts = 0
 WHERE resolved_at IS NULL AND NOT (target = ANY(%(targets)s::text[]))
"""


SELECT_ALERT = f"SELECT {_ALERT_COLUMNS} FROM {_ALERT_FROM} WHERE a.id = %(id)s"


# --- acknowledge and snooze --------------------------------------------------------------------

# Every click on an alert starts here: the row lock serialises clicks on it across replicas (and
# with the monitor resolving it).
LOCK_ALERT = f"SELECT {_ALERT_COLUMNS} FROM {_ALERT_FROM} WHERE a.id = %(id)s FOR UPDATE OF a"


ACKNOWLEDGE_ALERT = """
UPDATE pgconn.alert SET acked_by = %(by)s, acked_at = now() WHERE id = %(id)s AND resolved_at IS NULL
"""


# A problem snoozed (again: the new time replaces the old) until a whole second.
SNOOZE_PROBLEM = """
INSERT INTO pgconn.alert_snooze AS z (target, kind, subject, until, snoozed_by)
VALUES (%(target)s, %(kind)s, %(subject)s, date_trunc('second', now() + make_interval(secs => %(seconds)s)), %(by)s)
ON CONFLICT (target, kind, subject) DO UPDATE
   SET until = EXCLUDED.until, snoozed_by = EXCLUDED.snoozed_by, snoozed_at = now()
RETURNING until
"""


UNSNOOZE_PROBLEM = """
DELETE FROM pgconn.alert_snooze
 WHERE target = %(target)s AND kind = %(kind)s AND subject = %(subject)s AND until > now()
RETURNING until
"""


# Snoozes long over mean nothing any more: gone whenever someone snoozes something.
TRIM_SNOOZES = "DELETE FROM pgconn.alert_snooze WHERE until < now() - interval '1 day'"


STATE_CHECK = """
SELECT (SELECT max(version) FROM pgconn.schema_version) AS version,
       pg_catalog.has_table_privilege('pgconn.request', 'INSERT, UPDATE')
       AND pg_catalog.has_table_privilege('pgconn.audit', 'INSERT')
       AND pg_catalog.has_table_privilege('pgconn.alert', 'INSERT, UPDATE') AS writable
"""


# --- self-service: role links and one-time codes ------------------------------------------------

LINKS_OF_USER = """
SELECT target, role_name, role_oid, source, created_at, created_by
  FROM pgconn.role_link WHERE user_id = %(user_id)s
 ORDER BY target, role_name
"""


LINKED_OWNERS = """
SELECT user_id FROM pgconn.role_link
 WHERE target = %(target)s AND role_name = %(role_name)s
 ORDER BY created_at, user_id
"""


# A link, once per person, role and target (a second proof or grant changes nothing).
INSERT_LINK = """
INSERT INTO pgconn.role_link (user_id, target, role_name, role_oid, source, created_by)
VALUES (%(user_id)s, %(target)s, %(role_name)s, %(role_oid)s, %(source)s, %(created_by)s)
ON CONFLICT (user_id, target, role_name) DO UPDATE
   SET role_oid = EXCLUDED.role_oid, source = EXCLUDED.source, created_by = EXCLUDED.created_by,
       created_at = now()
 WHERE pgconn.role_link.role_oid IS DISTINCT FROM EXCLUDED.role_oid
RETURNING user_id
"""


DELETE_LINK = """
DELETE FROM pgconn.role_link
 WHERE user_id = %(user_id)s AND target = %(target)s AND role_name = %(role_name)s
RETURNING source
"""


# Serialises code issuing per person (the cap on pending codes), as REQUESTER_LOCK does for requests.
LINK_CODE_GATE = """
INSERT INTO pgconn.requester_gate (requester) VALUES ('link:' || %(user_id)s)
ON CONFLICT (requester) DO UPDATE SET requester = EXCLUDED.requester
"""


FORGET_OLD_LINK_CODES = """
DELETE FROM pgconn.link_code
 WHERE user_id = %(user_id)s AND (used_at IS NOT NULL OR expires_at < now() - interval '1 day')
"""


PENDING_LINK_CODES_OF_USER = """
SELECT code, user_id, target, role_name, role_oid, expires_at
  FROM pgconn.link_code
 WHERE user_id = %(user_id)s AND used_at IS NULL AND expires_at > now()
 ORDER BY created_at
"""


PENDING_LINK_CODES = """
SELECT code, user_id, target, role_name, role_oid, expires_at
  FROM pgconn.link_code
 WHERE used_at IS NULL AND expires_at > now()
 ORDER BY created_at
 LIMIT 500
"""


INSERT_LINK_CODE = """
INSERT INTO pgconn.link_code (code, user_id, target, role_name, role_oid, expires_at)
VALUES (%(code)s, %(user_id)s, %(target)s, %(role_name)s, %(role_oid)s, now() + make_interval(secs => %(ttl)s))
RETURNING code, user_id, target, role_name, role_oid, expires_at
"""


# The proof seen: used once, and only while valid, for exactly that role and target.
USE_LINK_CODE = """
UPDATE pgconn.link_code SET used_at = now()
 WHERE code = %(code)s AND used_at IS NULL AND expires_at > now()
   AND target = %(target)s AND role_name = %(role_name)s AND role_oid = %(role_oid)s
RETURNING code, user_id, target, role_name, role_oid, expires_at
"""


# --- drains ----------------------------------------------------------------------------------

_DRAIN_COLUMNS = "id, target, database, request_id, drained_at, until, now() AS now"

# Recorded before its sessions are signalled: a drain in force is never forgotten (undrained by
# whichever replica when its time is up, even if this one dies now).
RECORD_DRAIN = f"""
INSERT INTO pgconn.drain (target, database, request_id, until)
VALUES (%(target)s, %(database)s, %(request_id)s, now() + %(drain_for)s::interval)
ON CONFLICT (target, database) WHERE undrained_at IS NULL DO NOTHING
RETURNING {_DRAIN_COLUMNS}
"""

DRAINS_IN_FORCE = f"""
SELECT {_DRAIN_COLUMNS} FROM pgconn.drain
 WHERE undrained_at IS NULL AND (%(target)s::text IS NULL OR target = %(target)s::text)
 ORDER BY until
"""

DUE_UNDRAINS = f"""
SELECT {_DRAIN_COLUMNS} FROM pgconn.drain
 WHERE undrained_at IS NULL AND until <= now()
 ORDER BY until
 LIMIT 20
"""

# Claimed by one process only: the first to mark it undrained (after the server said so).
END_DRAIN = f"""
UPDATE pgconn.drain SET undrained_at = now(), undrained_by = %(by)s
 WHERE id = %(id)s AND undrained_at IS NULL
RETURNING {_DRAIN_COLUMNS}
"""


# --- the daily digest --------------------------------------------------------------------------

# The day's digest for this replica alone: a new day, or a claim that lapsed (its replica died
# before posting). Posted days are never claimed again.
CLAIM_DIGEST = """
INSERT INTO pgconn.digest AS d (day, claimed_by) VALUES (%(day)s, %(me)s)
ON CONFLICT (day) DO UPDATE SET claimed_by = EXCLUDED.claimed_by, claimed_at = now()
 WHERE d.posted_at IS NULL AND d.claimed_at < now() - interval '10 minutes'
RETURNING day
"""

DIGEST_POSTED = """
UPDATE pgconn.digest SET posted_at = now(), channel = %(channel)s, message_ts = %(ts)s
 WHERE day = %(day)s AND claimed_by = %(me)s
"""

RELEASE_DIGEST = "DELETE FROM pgconn.digest WHERE day = %(day)s AND claimed_by = %(me)s AND posted_at IS NULL"

DIGEST_DONE = "SELECT posted_at IS NOT NULL AS posted FROM pgconn.digest WHERE day = %(day)s"

# Roles at their limit in the window: how often, for how long (clipped to the window), and the
# applications of the sessions the alerts saw.
DIGEST_ROLES = """
SELECT a.target, a.subject AS role, count(*) AS times,
       sum(LEAST(coalesce(a.resolved_at, %(until)s), %(until)s) - GREATEST(a.opened_at, %(since)s)) AS duration,
       (SELECT coalesce(jsonb_agg(x), '[]') FROM (
            SELECT s ->> 'application' AS application, count(*) AS n
              FROM pgconn.alert b, jsonb_array_elements(coalesce(b.details -> 'sessions', '[]')) s
             WHERE b.kind = 'role_limit' AND b.target = a.target AND b.subject = a.subject
               AND b.opened_at < %(until)s AND coalesce(b.resolved_at, %(until)s) > %(since)s
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3) x) AS applications
  FROM pgconn.alert a
 WHERE a.kind = 'role_limit' AND a.opened_at < %(until)s AND coalesce(a.resolved_at, %(until)s) > %(since)s
 GROUP BY a.target, a.subject
 ORDER BY count(*) DESC, a.subject
 LIMIT 20
"""

DIGEST_REQUESTS = """
SELECT status, count(*) AS n FROM pgconn.request
 WHERE created_at >= %(since)s AND created_at < %(until)s
 GROUP BY status
"""

DIGEST_SESSIONS_ENDED = """
SELECT count(*) AS n FROM pgconn.request_target t JOIN pgconn.request r ON r.id = t.request_id
 WHERE t.outcome IN ('terminated', 'escalated') AND r.finished_at >= %(since)s AND r.finished_at < %(until)s
"""

DIGEST_ALERTS = """
SELECT kind, count(*) AS n,
       max(coalesce(resolved_at, %(until)s) - opened_at) AS longest
  FROM pgconn.alert
 WHERE opened_at >= %(since)s AND opened_at < %(until)s
 GROUP BY kind ORDER BY count(*) DESC, kind
"""

# The servers' peak fill: from the monitor's history where it is kept, else as the fill alerts
# recorded it.
DIGEST_PEAK_FILL = """
SELECT fill, at FROM (
    SELECT h.client_backends::float8 / nullif(h.usable_slots, 0) AS fill, h.at
      FROM pgconn.history h
     WHERE h.at >= %(since)s AND h.at < %(until)s
    UNION ALL
    SELECT (a.details ->> 'fill')::float8, a.last_seen_at
      FROM pgconn.alert a
     WHERE a.kind = 'server_fill' AND a.details ? 'fill'
       AND a.opened_at < %(until)s AND coalesce(a.resolved_at, %(until)s) > %(since)s
) peaks
 WHERE fill IS NOT NULL
 ORDER BY fill DESC LIMIT 1
"""
