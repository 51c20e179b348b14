-- vmseal verifier schema. One text for SQLite and PostgreSQL: TEXT, BIGINT and BYTEA (SQLite stores
-- the bytes as BLOBs: a BYTEA column has NUMERIC affinity, which never converts a BLOB), booleans as
-- BIGINT 0/1. Never edit an applied migration: add the next one.
CREATE TABLE hosts (
    host_id            TEXT PRIMARY KEY,
    intermediate_der   BYTEA NOT NULL,
    intermediate_sha256 BYTEA NOT NULL,
    ak_name            BYTEA NOT NULL,
    insecure_anchor    BIGINT NOT NULL,
    enrolled_at        BIGINT NOT NULL
);

CREATE TABLE vms (
    vm_id           TEXT PRIMARY KEY,
    host_id         TEXT NOT NULL REFERENCES hosts(host_id),
    policy_digest   BYTEA,
    threshold       BIGINT NOT NULL,
    allowed_modules TEXT NOT NULL,
    last_seq        BIGINT,
    last_digest     BYTEA,
    created_at      BIGINT NOT NULL
);

CREATE TABLE nonces (
    nonce       BYTEA PRIMARY KEY,
    vm_id       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE baselines (
    vm_id        TEXT NOT NULL REFERENCES vms(vm_id),
    version      BIGINT NOT NULL,
    source_seq   BIGINT NOT NULL,
    promoted_by  TEXT NOT NULL,
    promoted_at  BIGINT NOT NULL,
    PRIMARY KEY (vm_id, version)
);

CREATE TABLE baseline_regions (
    vm_id     TEXT NOT NULL,
    version   BIGINT NOT NULL,
    name      TEXT NOT NULL,
    class     TEXT NOT NULL,
    severity  TEXT NOT NULL,
    hash_alg  TEXT NOT NULL,
    leaves    BYTEA NOT NULL,
    PRIMARY KEY (vm_id, version, name)
);

CREATE TABLE appraisals (
    vm_id       TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    evidence    BYTEA NOT NULL,
    score       BIGINT NOT NULL,
    tier        TEXT NOT NULL,
    result      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (vm_id, seq)
);

CREATE TABLE audit_log (
    id        BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL
);
