-- The cancel-then-terminate ladder: `cancel <pid> --escalate 30s`. After the cancel step the
-- request waits in 'escalating' until escalate_at; then whichever replica claims it (once)
-- terminates the targets still running the same query.
ALTER TABLE pgconn.request ADD COLUMN escalate_after interval,
    ADD COLUMN escalate_at timestamptz;
ALTER TABLE pgconn.request DROP CONSTRAINT request_status_check;
ALTER TABLE pgconn.request ADD CONSTRAINT request_status_check CHECK (status IN
    ('posting', 'pending', 'executing', 'escalating', 'executed', 'denied', 'expired', 'withdrawn', 'interrupted'));
CREATE INDEX request_escalating ON pgconn.request (escalate_at) WHERE status = 'escalating';

ALTER TABLE pgconn.audit DROP CONSTRAINT audit_event_check;
ALTER TABLE pgconn.audit ADD CONSTRAINT audit_event_check CHECK (event IN
    ('requested', 'refused', 'click_refused', 'more_refused', 'approval', 'approved', 'denied', 'executed',
     'expired', 'withdrawn', 'interrupted', 'self_service', 'linked', 'unlinked', 'escalating')) NOT VALID;

ALTER TABLE pgconn.request_target DROP CONSTRAINT IF EXISTS request_target_outcome_check;
ALTER TABLE pgconn.request_target ADD CONSTRAINT request_target_outcome_check CHECK (outcome IN
    ('terminated', 'cancelled', 'escalated', 'gone', 'replaced', 'protected', 'changed', 'failed', 'still_running'));
