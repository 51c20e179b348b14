-- Enrollment by credential activation (TPM 2.0 Part 1 §24): an admin hands a host a one-use
-- bootstrap credential (an enrollment token); the host's agent presents it with its enrollment
-- bundle, answers the credential challenge, and receives its agent certificate.
CREATE TABLE enrollment_tokens (
    token_id    TEXT PRIMARY KEY,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    host_id     TEXT
);

-- A challenge sent and not yet answered. The secret is stored only as its SHA-256.
CREATE TABLE pending_enrollments (
    enrollment_id    TEXT PRIMARY KEY,
    token_id         TEXT NOT NULL REFERENCES enrollment_tokens(token_id),
    host_id          TEXT NOT NULL,
    intermediate_der BYTEA NOT NULL,
    ak_name          BYTEA NOT NULL,
    insecure_anchor  BIGINT NOT NULL,
    csr_der          BYTEA NOT NULL,
    secret_sha256    BYTEA NOT NULL,
    expires_at       BIGINT NOT NULL
);

-- Captures the verifier asked a host for; the agent picks them up by long-poll.
CREATE TABLE capture_requests (
    request_id   TEXT PRIMARY KEY,
    vm_id        TEXT NOT NULL REFERENCES vms(vm_id),
    host_id      TEXT NOT NULL,
    nonce        BYTEA NOT NULL,
    requested_by TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    picked_at    BIGINT,
    done_seq     BIGINT
);
CREATE INDEX capture_requests_host ON capture_requests(host_id, picked_at);
