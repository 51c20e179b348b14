-- Alerts and the head of the audit chain.

-- The audit chain's head: one row, updated by every append. Its row lock (PostgreSQL) or the
-- write lock (SQLite) orders appends across verifier replicas, so ids stay gap-free and commit in
-- id order. NULL hash: the chain is empty (genesis is 32 zero bytes).
CREATE TABLE audit_head (
    one  BIGINT PRIMARY KEY CHECK (one = 1),
    id   BIGINT NOT NULL,
    hash BYTEA
);
INSERT INTO audit_head (one, id, hash)
SELECT 1, COALESCE(MAX(id), 0), (SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1) FROM audit_log;

-- What alerting needs to know of a VM without reading its history.
ALTER TABLE vms ADD COLUMN last_tier TEXT;          -- tier of the last accepted appraisal
ALTER TABLE vms ADD COLUMN last_seen BIGINT;        -- when it was accepted (Unix seconds)
ALTER TABLE vms ADD COLUMN expect_every BIGINT;     -- the VM's capture schedule, seconds; NULL: none
ALTER TABLE vms ADD COLUMN threshold_alert BIGINT;  -- the unresolved below-threshold alert, if any
ALTER TABLE vms ADD COLUMN silent_alert BIGINT;     -- the unresolved silence alert, if any

-- An alert's id is the id of the audit entry that raised it: gap-free, and in commit order, so a
-- reader that has seen id N has seen every alert up to N.
CREATE TABLE alerts (
    alert_id    BIGINT PRIMARY KEY,
    vm_id       TEXT NOT NULL REFERENCES vms(vm_id),
    kind        TEXT NOT NULL,      -- below_threshold | tier_drop | silent
    seq         BIGINT,             -- the appraisal that raised it
    score       BIGINT,
    tier        TEXT,
    threshold   BIGINT NOT NULL,
    message     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    state       TEXT NOT NULL,      -- open | acknowledged | resolved
    acked_by    TEXT,
    acked_at    BIGINT,
    resolved_at BIGINT,
    silenced    BIGINT NOT NULL     -- 1: a silence covered it; recorded, not delivered
);
CREATE INDEX alerts_state ON alerts(state, alert_id);

-- Where alerts go. Shared by every replica, so each alert is delivered once per endpoint.
CREATE TABLE webhooks (
    name       TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The outbox: one row per (alert, webhook), written in the alert's own transaction. A replica
-- claims due rows with a short lease (PostgreSQL: FOR UPDATE SKIP LOCKED, so replicas never wait
-- on each other), posts, and marks them delivered; a lease that runs out (the replica died) makes
-- the row due again: delivery is at least once.
CREATE TABLE alert_deliveries (
    alert_id        BIGINT NOT NULL REFERENCES alerts(alert_id),
    webhook         TEXT NOT NULL,
    url             TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    delivered_at    BIGINT,
    failed_at       BIGINT,
    last_error      TEXT,
    PRIMARY KEY (alert_id, webhook)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries(delivered_at, failed_at, next_attempt_at);

-- Silences: alerts for a VM (or, with a NULL vm_id, for every VM) are recorded but not delivered
-- until `ends_at`.
CREATE TABLE silences (
    silence_id TEXT PRIMARY KEY,
    vm_id      TEXT,
    ends_at    BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
