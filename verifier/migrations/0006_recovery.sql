-- Operations that recover (issue 12).
--
-- A VM id can be removed (`admin vms remove`, audited) and registered again; the incarnation
-- changes with each registration, so nothing cached of the removed VM (its baselines) outlives it.
ALTER TABLE vms ADD COLUMN incarnation BIGINT NOT NULL DEFAULT 0;

-- A rebuilt host (a new intermediate key for a host id whose VMs have evidence chains) continues
-- those chains only with an admin's token that allows it (`enrollment-token --restart-chains`, or
-- `--replace`); each continued chain is audited.
ALTER TABLE enrollment_tokens ADD COLUMN restart_chains BIGINT NOT NULL DEFAULT 0;
