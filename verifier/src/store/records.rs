//! The VM records a single-writer store keeps in memory.
//!
//! Every submission reads its VM's record (host, pinned intermediate, policy, chain head, …)
//! before anything else, and on SQLite that read was a quarter of an appraisal's CPU: a round trip
//! to sqlx's worker thread and back. A SQLite store is the only writer of its database — the
//! connection holds it exclusively (`locking_mode=EXCLUSIVE`: a second process cannot open it) —
//! so it knows every change and can keep the records it read:
//!
//! - a miss reads the database and keeps the record only if nothing changed meanwhile (the
//!   generation it started under is still the current one) and no one kept a newer one first;
//! - an accepted appraisal that raised no alert changes its VM's kept record exactly as its
//!   committed `UPDATE` changed the row (chain head, tier, the boot's layout, a resolved
//!   below-threshold alert);
//! - every other write that touches a VM record's columns (`vms`, `hosts`, `baselines`) — admin
//!   changes, enrollments, re-appraisals, appraisals that raise an alert, refused writes —
//!   forgets what it may have changed, after its commit, and
//!   moves the generation on so that a read racing it cannot keep stale data.
//!   `store::tests::every_writer_of_a_vm_record_tells_the_records` holds every such statement in
//!   the store's source to one of these.
//!
//! PostgreSQL stores keep nothing: other replicas write the same rows.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::appraise::{ChainPoint, Layout, VmRecord};

/// What an accepted appraisal's chain `UPDATE` wrote to its VM's row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Advance<'a> {
    /// The new chain head.
    pub point: ChainPoint,
    /// The appraisal's tier.
    pub tier: &'a str,
    /// The guest boot and its layout, when written.
    pub layout: Option<&'a (Vec<u8>, Layout)>,
    /// The VM's below-threshold alert was resolved.
    pub threshold_resolved: bool,
}

/// Kept records and the generation they are valid in.
#[derive(Debug, Default)]
pub(super) struct VmRecords {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    records: HashMap<String, VmRecord>,
}

impl VmRecords {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept record of `vm`, or the generation a read from the database starts under.
    pub(super) fn get(&self, vm: &str) -> Result<VmRecord, u64> {
        let g = self.lock();
        g.records.get(vm).cloned().ok_or(g.generation)
    }

    /// Keep `rec`, read from the database under `generation`, unless something changed since or
    /// a record of the VM is kept already.
    pub(super) fn fill(&self, generation: u64, rec: &VmRecord) {
        let mut g = self.lock();
        if g.generation == generation {
            g.records
                .entry(rec.vm_id.clone())
                .or_insert_with(|| rec.clone());
        }
    }

    /// An appraisal of `vm` that raised no alert committed: what its chain's `UPDATE` wrote.
    pub(super) fn advanced(&self, vm: &str, a: Advance<'_>) {
        let mut g = self.lock();
        match g.records.get_mut(vm) {
            Some(r) => {
                r.last = Some(a.point);
                a.tier
                    .clone_into(r.last_tier.get_or_insert_with(String::new));
                if let Some((boot, layout)) = a.layout {
                    r.boot = Some(boot.clone());
                    r.layout = layout.clone();
                }
                if a.threshold_resolved {
                    r.threshold_alert = None;
                }
            }
            // A read may be on its way with the head before this one.
            None => g.generation += 1,
        }
    }

    /// `vm`'s record may have changed.
    pub(super) fn forget(&self, vm: &str) {
        let mut g = self.lock();
        g.records.remove(vm);
        g.generation += 1;
    }

    /// Any record may have changed.
    pub(super) fn clear(&self) {
        let mut g = self.lock();
        g.records.clear();
        g.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(vm: &str, seq: u64) -> VmRecord {
        VmRecord {
            vm_id: vm.into(),
            last: Some(ChainPoint {
                seq,
                digest: [seq as u8; 32],
            }),
            ..VmRecord::default()
        }
    }

    fn advance(point: ChainPoint) -> Advance<'static> {
        Advance {
            point,
            tier: "affirming",
            layout: None,
            threshold_resolved: false,
        }
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let r = VmRecords::default();
        let g = r.get("vm1").unwrap_err();
        r.forget("vm2");
        r.fill(g, &rec("vm1", 1));
        assert!(r.get("vm1").is_err(), "read before a change, kept after it");
        let g = r.get("vm1").unwrap_err();
        r.fill(g, &rec("vm1", 1));
        assert_eq!(r.get("vm1").unwrap().last.unwrap().seq, 1);
    }

    #[test]
    fn an_appraisal_moves_the_kept_head_and_a_late_read_does_not_undo_it() {
        let r = VmRecords::default();
        let stale = r.get("vm1").unwrap_err();
        let g = r.get("vm1").unwrap_err();
        r.fill(g, &rec("vm1", 1));
        let p2 = ChainPoint {
            seq: 2,
            digest: [2; 32],
        };
        r.advanced("vm1", advance(p2));
        // A read that started before, with the old head, finishes now: not kept over the newer.
        r.fill(stale, &rec("vm1", 1));
        let now = r.get("vm1").unwrap();
        assert_eq!(now.last, Some(p2));
        assert_eq!(now.last_tier.as_deref(), Some("affirming"));
    }

    #[test]
    fn an_appraisal_of_a_vm_not_kept_voids_reads_on_their_way() {
        let r = VmRecords::default();
        let g = r.get("vm1").unwrap_err();
        r.advanced(
            "vm1",
            advance(ChainPoint {
                seq: 2,
                digest: [2; 32],
            }),
        );
        r.fill(g, &rec("vm1", 1));
        assert!(r.get("vm1").is_err());
    }

    #[test]
    fn clear_forgets_everything() {
        let r = VmRecords::default();
        for vm in ["a", "b"] {
            let g = r.get(vm).unwrap_err();
            r.fill(g, &rec(vm, 0));
        }
        r.clear();
        assert!(r.get("a").is_err() && r.get("b").is_err());
    }
}
