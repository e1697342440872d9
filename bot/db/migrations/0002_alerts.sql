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
