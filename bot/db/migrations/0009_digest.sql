-- The daily digest (PGCONN_DIGEST_CHANNEL at PGCONN_DIGEST_TIME): one row per day, claimed by the
-- one replica that posts it (a claim left by a replica that died before posting lapses).
CREATE TABLE pgconn.digest (
    day        date PRIMARY KEY,
    claimed_by uuid NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    posted_at  timestamptz,
    channel    text,
    message_ts text
);
