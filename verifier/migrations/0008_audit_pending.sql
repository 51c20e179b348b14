-- Audit entries off the commit path (PostgreSQL). An appraisal's transaction writes its audit
-- entry here instead of appending it to the chain, so concurrent appraisals — on one replica or
-- several — no longer queue for the chain head's row lock until they commit. A linker (any
-- replica, after each group of appraisals commits, before every read of the chain, and every few
-- seconds) takes that lock in a short transaction of its own and moves the committed entries into
-- `audit_log` in `pid` order, giving each its id and hash: ids stay gap-free, and an entry gets
-- its id only after it committed, so ids still follow commit order (everything committed before a
-- linker takes the lock is linked before anything committed after). Appending directly (alerts,
-- admin actions) links the pending entries first, under the same lock.
--
-- `pid` sorts by the writer's clock (microseconds), then a per-process counter, then the writing
-- process's random tag.
CREATE TABLE audit_pending (
    pid     TEXT PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL
);

-- Appraisals resolve a VM's open refusal alerts: find them without a scan of every alert.
CREATE INDEX alerts_vm_kind ON alerts(vm_id, kind, state);
