-- The verifier decides what a VM's evidence must hold (issue 11): it keeps the assigned policy's
-- text (parsed with the host's own policy crate), the policy each golden baseline was captured
-- under, each baseline region's guest-physical ranges, and, per VM, the boot its last accepted
-- snapshot belonged to with the ranges first seen in that boot (code and rodata may move across
-- boots, never within one).
ALTER TABLE vms ADD COLUMN policy_text TEXT;
ALTER TABLE vms ADD COLUMN boot BYTEA;
ALTER TABLE vms ADD COLUMN layout TEXT;
ALTER TABLE baselines ADD COLUMN policy_digest BYTEA;
ALTER TABLE baseline_regions ADD COLUMN ranges TEXT;

-- Refusals are events: every refused evidence of a known VM is audited, and raises an
-- `evidence_refused` alert naming the code; while one is unresolved for a (VM, code), further
-- refusals only count on it (a flood is one alert with a count). Resolved by the VM's next
-- accepted evidence.
ALTER TABLE alerts ADD COLUMN code TEXT;
ALTER TABLE alerts ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX alerts_one_refusal_episode ON alerts(vm_id, code)
    WHERE kind = 'evidence_refused' AND state <> 'resolved';

-- A VM's chain starts at #0, or where an admin's audited reset says (`admin reset-chain --at N`):
-- the first evidence after a reset must carry exactly this sequence number.
ALTER TABLE vms ADD COLUMN chain_start BIGINT NOT NULL DEFAULT 0;

-- Host identity is continuous: a host id stays with the hardware root that first enrolled it (the
-- TPM's EK, the SNP chip id or VLEK), unless an admin's token says to replace it. Agent
-- certificates an enrolment or `admin hosts disable` supersedes are revoked; every request checks.
ALTER TABLE hosts ADD COLUMN hardware_root TEXT;
ALTER TABLE hosts ADD COLUMN agent_serial TEXT;
ALTER TABLE hosts ADD COLUMN disabled_at BIGINT;
ALTER TABLE pending_enrollments ADD COLUMN hardware_root TEXT;
ALTER TABLE enrollment_tokens ADD COLUMN replace_host BIGINT NOT NULL DEFAULT 0;
CREATE TABLE revoked_certs (
    serial     TEXT PRIMARY KEY,
    host_id    TEXT,
    reason     TEXT NOT NULL,
    revoked_at BIGINT NOT NULL
);

-- A hardware appraisal policy: an enrollment token may carry its own (JSON), replacing the
-- service's `[hardware]`; what was checked is kept with the host.
ALTER TABLE enrollment_tokens ADD COLUMN hardware TEXT;
ALTER TABLE pending_enrollments ADD COLUMN hardware_checked TEXT;
ALTER TABLE hosts ADD COLUMN hardware_checked TEXT;

-- Enrollment binds a verifier-chosen nonce (challenge first): the host asks for one with its
-- token, makes fresh anchors over it, and the nonce is used up by the enrollment that answers it.
CREATE TABLE enrollment_nonces (
    nonce      BYTEA PRIMARY KEY,
    token_id   TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Hardware is re-appraised: the policy a host was enrolled under (a token's own, else NULL: the
-- service's, whatever it is now) and the last re-appraisal's verdict ('ok', or why not).
ALTER TABLE hosts ADD COLUMN hardware_policy TEXT;
ALTER TABLE hosts ADD COLUMN hardware_status TEXT;
