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
