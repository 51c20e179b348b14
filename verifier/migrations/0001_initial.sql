-- vmseal verifier schema. Portable between SQLite and PostgreSQL: TEXT, BIGINT, BLOB/BYTEA via
-- the Any driver's bytes, BOOLEAN stored as BIGINT 0/1.
CREATE TABLE hosts (
    host_id            TEXT PRIMARY KEY,
    intermediate_der   BLOB NOT NULL,
    intermediate_sha256 BLOB NOT NULL,
    ak_name            BLOB NOT NULL,
    insecure_anchor    BIGINT NOT NULL,
    enrolled_at        BIGINT NOT NULL
);

CREATE TABLE vms (
    vm_id           TEXT PRIMARY KEY,
    host_id         TEXT NOT NULL REFERENCES hosts(host_id),
    policy_digest   BLOB,
    threshold       BIGINT NOT NULL,
    allowed_modules TEXT NOT NULL,
    last_seq        BIGINT,
    last_digest     BLOB,
    created_at      BIGINT NOT NULL
);

CREATE TABLE nonces (
    nonce       BLOB PRIMARY KEY,
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
    leaves    BLOB NOT NULL,
    PRIMARY KEY (vm_id, version, name)
);

CREATE TABLE appraisals (
    vm_id       TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    evidence    BLOB NOT NULL,
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
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
