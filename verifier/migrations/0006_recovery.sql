-- Operations that recover (issue 12).
--
-- A VM id can be removed (`admin vms remove`, audited) and registered again; the incarnation
-- changes with each registration, so nothing cached of the removed VM (its baselines) outlives it.
ALTER TABLE vms ADD COLUMN incarnation BIGINT NOT NULL DEFAULT 0;

-- A rebuilt host (a new intermediate key for a host id whose VMs have evidence chains) continues
-- those chains only with an admin's token that allows it (`enrollment-token --restart-chains`, or
-- `--replace`); each continued chain is audited.
ALTER TABLE enrollment_tokens ADD COLUMN restart_chains BIGINT NOT NULL DEFAULT 0;

-- Signed checkpoints of the audit chain's head (at an interval and on demand): the verifier's
-- result key signs (entry id, entry hash); each alert delivery carries the latest, so copies live
-- outside this database and a rewritten history shows against them (`vmseal-certs verify-audit`).
CREATE TABLE audit_checkpoints (
    audit_id BIGINT PRIMARY KEY,
    hash     BYTEA NOT NULL,
    at       BIGINT NOT NULL,
    token    TEXT NOT NULL
);

-- When each host's agent certificate expires: listed by `admin hosts list`, alerted ahead, and
-- renewed by the agent proving its TPM-held key again (POST /v1/hosts/{host}/renewals).
ALTER TABLE hosts ADD COLUMN agent_not_after BIGINT;
