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
