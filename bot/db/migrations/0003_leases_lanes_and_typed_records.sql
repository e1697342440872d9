-- Functions of the bot's own resolve only in pg_catalog, whoever calls them.
ALTER FUNCTION pgconn.audit_is_append_only() SET search_path = pg_catalog, pg_temp;

-- Where an action came from when it was not a Slack click or command (the console, its local user).
ALTER TABLE pgconn.audit ADD COLUMN origin text;

-- What an entry says, typed (render words it); ``outcome`` keeps the words of older entries.
-- The vocabularies as CHECK constraints (the audit unvalidated: it may be long, and is never rewritten).
ALTER TABLE pgconn.audit ADD COLUMN detail jsonb;
ALTER TABLE pgconn.audit ADD CONSTRAINT audit_event_check CHECK (event IN
    ('requested', 'refused', 'click_refused', 'more_refused', 'approval', 'approved', 'denied', 'executed',
     'expired', 'withdrawn', 'interrupted')) NOT VALID;
ALTER TABLE pgconn.audit ADD CONSTRAINT audit_action_check CHECK (action IN ('terminate', 'cancel')) NOT VALID;
-- A target's outcome: ``detail`` holds why (an OutcomeNote), ``error`` the server's words.
ALTER TABLE pgconn.request_target ADD COLUMN error text;
-- Alerts keep data, not words: what the headline says besides kind and severity (its shape), and
-- what the server looked like when it cleared; render words both. Alerts of earlier versions
-- get the shape their summary had, and a message already posted is not edited for it. (summary
-- stays, empty from now on, for replicas of the previous version during a rolling upgrade.)
ALTER TABLE pgconn.alert ADD COLUMN shape text NOT NULL DEFAULT '',
    ADD COLUMN resolution_details jsonb,
    ALTER COLUMN summary SET DEFAULT '';
UPDATE pgconn.alert a
   SET shape = n.shape,
       shown_state = CASE WHEN a.shown_state = a.severity || ':' || a.summary THEN a.severity || ':' || n.shape
                          ELSE a.shown_state END
  FROM (SELECT id, CASE
                   WHEN kind = 'role_limit' AND summary LIKE '% is over its connection limit%' THEN 'over'
                   WHEN kind = 'role_limit' THEN 'at'
                   WHEN kind = 'server_fill' AND details ? 'full' THEN 'full'
                   WHEN kind = 'server_fill' AND severity = 'critical' THEN 'critical'
                   WHEN kind = 'server_fill' THEN 'close'
                   ELSE '' END AS shape
          FROM pgconn.alert) n
 WHERE n.id = a.id;
ALTER TABLE pgconn.alert ADD CONSTRAINT alert_shape_check
    CHECK (shape IN ('', 'at', 'over', 'close', 'critical', 'full'));
ALTER TABLE pgconn.alert ADD CONSTRAINT alert_kind_check CHECK (kind IN
    ('role_limit', 'server_fill', 'idle_in_transaction', 'long_query', 'target_down'));
ALTER TABLE pgconn.alert ADD CONSTRAINT alert_severity_check CHECK (severity IN ('warning', 'critical'));

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
