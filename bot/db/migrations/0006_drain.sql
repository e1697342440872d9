-- `drain <database>`: a request (scope 'database') that, once approved, refuses new connections
-- to the database (through the pgconn_drain function setup-sql --drain makes) and terminates its
-- client sessions; undrained after drain_for by whichever replica's housekeeper, or by `undrain`.
ALTER TABLE pgconn.request ADD COLUMN database_name text,
    ADD COLUMN drain_for interval,
    ADD COLUMN spared jsonb NOT NULL DEFAULT '[]';  -- protected sessions a drain leaves alone
ALTER TABLE pgconn.request DROP CONSTRAINT request_scope_check;
ALTER TABLE pgconn.request ADD CONSTRAINT request_scope_check CHECK (scope IN ('pids', 'user', 'idle', 'database'));

CREATE TABLE pgconn.drain (
    id           bigserial PRIMARY KEY,
    target       text NOT NULL,
    database     text NOT NULL,
    request_id   bigint REFERENCES pgconn.request (id),
    drained_at   timestamptz NOT NULL DEFAULT now(),
    until        timestamptz NOT NULL,
    undrained_at timestamptz,
    undrained_by text
);
-- At most one drain in force per database of a target; what the housekeeper asks every round.
CREATE UNIQUE INDEX drain_in_force ON pgconn.drain (target, database) WHERE undrained_at IS NULL;
CREATE INDEX drain_due ON pgconn.drain (until) WHERE undrained_at IS NULL;

ALTER TABLE pgconn.audit DROP CONSTRAINT audit_event_check;
ALTER TABLE pgconn.audit ADD CONSTRAINT audit_event_check CHECK (event IN
    ('requested', 'refused', 'click_refused', 'more_refused', 'approval', 'approved', 'denied', 'executed',
     'expired', 'withdrawn', 'interrupted', 'self_service', 'linked', 'unlinked', 'escalating', 'undrained')) NOT VALID;
