-- Monitor history (`history`, the sparklines of `status` and of role-at-limit alerts): one row per
-- server per monitor cycle, written by the leader; thinned as it ages by the housekeeper (per
-- cycle for a day, per 5 minutes for a week, per hour after: ``covers`` says which) and deleted
-- after PGCONN_HISTORY_RETENTION. A thinned row holds the peaks of the rows it replaced.
CREATE TABLE pgconn.history (
    target          text NOT NULL,               -- the server's first target (as its alerts)
    at              timestamptz NOT NULL,        -- observed (a thinned row: its bucket's start)
    covers          real NOT NULL CHECK (covers > 0),  -- seconds it stands for
    samples         integer NOT NULL DEFAULT 1 CHECK (samples > 0),  -- cycles it stands for
    client_backends integer NOT NULL,
    usable_slots    integer NOT NULL,
    by_state        jsonb NOT NULL DEFAULT '{}',  -- {"active": 3, "idle": 40, …}
    roles           jsonb NOT NULL DEFAULT '{}'   -- {"bob": [used, limit], …}: roles at ≥ half their limit, watched ones
);
-- What every read asks (a server's period); thinning and trimming scan by age once an hour.
CREATE INDEX history_target_at ON pgconn.history (target, at);
