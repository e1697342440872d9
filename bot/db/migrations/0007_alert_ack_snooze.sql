-- Acknowledge and snooze (issue 17). Who is on an alert belongs to the alert; a snooze belongs to
-- its problem (target, kind, subject), so a problem that clears and comes back within the snooze
-- is still snoozed: neither posted again nor escalated until ``until``; its resolution still is.
ALTER TABLE pgconn.alert ADD COLUMN acked_by text, ADD COLUMN acked_at timestamptz;

CREATE TABLE pgconn.alert_snooze (
    target     text NOT NULL,
    kind       text NOT NULL CHECK (kind IN
               ('role_limit', 'server_fill', 'idle_in_transaction', 'long_query', 'target_down')),
    subject    text NOT NULL,
    until      timestamptz NOT NULL,
    snoozed_by text NOT NULL,
    snoozed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, kind, subject)
);
-- Snoozes long over are trimmed (an ended snooze means nothing any more).
CREATE INDEX alert_snooze_until ON pgconn.alert_snooze (until);

ALTER TABLE pgconn.audit DROP CONSTRAINT audit_event_check;
ALTER TABLE pgconn.audit ADD CONSTRAINT audit_event_check CHECK (event IN
    ('requested', 'refused', 'click_refused', 'more_refused', 'approval', 'approved', 'denied', 'executed',
     'expired', 'withdrawn', 'interrupted', 'self_service', 'linked', 'unlinked', 'escalating', 'undrained',
     'acknowledged', 'snoozed', 'unsnoozed')) NOT VALID;
