-- Self-service: who owns a database role besides PGCONN_ROLE_OWNERS (a link proved by logging in
-- as the role, or made by an approver), and the one-time codes that prove a login.
CREATE TABLE pgconn.role_link (
    user_id    text NOT NULL,
    target     text NOT NULL,
    role_name  text NOT NULL,
    role_oid   bigint NOT NULL,  -- the role as linked: one made again under the name is another
    source     text NOT NULL CHECK (source IN ('login', 'granted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    PRIMARY KEY (user_id, target, role_name)
);
CREATE INDEX role_link_by_role ON pgconn.role_link (target, role_name);

CREATE TABLE pgconn.link_code (
    code       text PRIMARY KEY,
    user_id    text NOT NULL,
    target     text NOT NULL,
    role_name  text NOT NULL,
    role_oid   bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
-- What the watcher asks every few seconds on every replica: only what is still pending.
CREATE INDEX link_code_pending ON pgconn.link_code (expires_at) WHERE used_at IS NULL;
CREATE INDEX link_code_by_user ON pgconn.link_code (user_id, created_at);

-- The audit's vocabulary grows by the self-service events (unvalidated, as before: the table is
-- never rewritten).
ALTER TABLE pgconn.audit DROP CONSTRAINT audit_event_check;
ALTER TABLE pgconn.audit ADD CONSTRAINT audit_event_check CHECK (event IN
    ('requested', 'refused', 'click_refused', 'more_refused', 'approval', 'approved', 'denied', 'executed',
     'expired', 'withdrawn', 'interrupted', 'self_service', 'linked', 'unlinked')) NOT VALID;
