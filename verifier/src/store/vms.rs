//! VMs: registration, assigned policies, thresholds, module rules, chain resets, removal, and
//! the record an appraisal reads.

use sqlx::Row;
use sqlx::any::AnyRow;
use vmseal_sealer::merkle::Digest;

use super::{Store, StoreError, VmSummary, digest};
use crate::appraise::{ChainPoint, Layout, ModuleRule, VmRecord};

impl Store {
    /// Register a VM on an enrolled host.
    pub async fn register_vm(
        &self,
        vm_id: &str,
        host_id: &str,
        threshold: u8,
        now: i64,
    ) -> Result<(), StoreError> {
        let exists: Option<AnyRow> = sqlx::query("SELECT host_id FROM hosts WHERE host_id = $1")
            .bind(host_id)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("host {host_id:?}")));
        }
        let mut incarnation = [0u8; 8];
        vmseal_sealer::keys::random_bytes(&mut incarnation).map_err(|e| {
            StoreError::Corrupt(format!("no randomness for the VM's incarnation: {e}"))
        })?;
        sqlx::query("INSERT INTO vms (vm_id, host_id, policy_digest, threshold, allowed_modules, last_seq, last_digest, created_at, incarnation) VALUES ($1, $2, NULL, $3, '', NULL, NULL, $4, $5)")
            .bind(vm_id)
            .bind(host_id)
            .bind(i64::from(threshold))
            .bind(now)
            .bind(i64::from_be_bytes(incarnation))
            .execute(&self.pool)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!("VM {vm_id:?} is already registered; to start it over, an admin removes it first (`vmseal-verifier admin vms remove --vm-id {vm_id}`, audited)")),
                e => StoreError::from(e),
            })?;
        self.vm_changed(vm_id);
        Ok(())
    }

    /// Assign the policy a VM's evidence must be captured under: its text (already parsed and
    /// validated by the caller) and the digest of that text.
    pub async fn assign_policy(
        &self,
        vm_id: &str,
        policy_digest: &Digest,
        policy_text: &str,
    ) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE vms SET policy_digest = $1, policy_text = $2 WHERE vm_id = $3")
            .bind(policy_digest.to_vec())
            .bind(policy_text)
            .bind(vm_id)
            .execute(&self.pool)
            .await?;
        self.vm_changed(vm_id);
        vm_found(vm_id, r.rows_affected())
    }

    /// Restart a VM's evidence chain at `at` (audited by the caller): the verifier forgets the
    /// last evidence and the boot layout, and the next evidence must be #`at`. Alerts, appraisals
    /// and baselines stay.
    pub async fn reset_chain(&self, vm_id: &str, at: u64) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let last: Option<i64> = sqlx::query("SELECT last_seq FROM vms WHERE vm_id = $1")
            .bind(vm_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("VM {vm_id:?}")))?
            .try_get("last_seq")?;
        sqlx::query("UPDATE vms SET last_seq = NULL, last_digest = NULL, boot = NULL, layout = NULL, chain_start = $1 WHERE vm_id = $2")
            .bind(at as i64)
            .bind(vm_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.vm_changed(vm_id);
        Ok(last.map(|l| l as u64))
    }

    /// Remove a VM and everything the verifier holds of it (appraisals, baselines, alerts and
    /// their deliveries, nonces, capture requests, silences), in one transaction; the VM id can
    /// then be registered again. The audit log keeps the removal (the caller writes it with the
    /// returned summary).
    pub async fn remove_vm(&self, vm_id: &str) -> Result<RemovedVm, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT host_id, last_seq FROM vms WHERE vm_id = $1")
            .bind(vm_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("VM {vm_id:?}")))?;
        let mut counts = [0i64; 3];
        for (i, q) in [
            "SELECT COUNT(*) AS n FROM appraisals WHERE vm_id = $1",
            "SELECT COUNT(*) AS n FROM baselines WHERE vm_id = $1",
            "SELECT COUNT(*) AS n FROM alerts WHERE vm_id = $1",
        ]
        .into_iter()
        .enumerate()
        {
            counts[i] = sqlx::query(q)
                .bind(vm_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        }
        for q in [
            "DELETE FROM alert_deliveries WHERE alert_id IN (SELECT alert_id FROM alerts WHERE vm_id = $1)",
            "DELETE FROM alerts WHERE vm_id = $1",
            "DELETE FROM silences WHERE vm_id = $1",
            "DELETE FROM capture_requests WHERE vm_id = $1",
            "DELETE FROM nonces WHERE vm_id = $1",
            "DELETE FROM baseline_regions WHERE vm_id = $1",
            "DELETE FROM baselines WHERE vm_id = $1",
            "DELETE FROM appraisals WHERE vm_id = $1",
            "DELETE FROM vms WHERE vm_id = $1",
        ] {
            sqlx::query(q).bind(vm_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.vm_changed(vm_id);
        Ok(RemovedVm {
            host_id: row.try_get("host_id")?,
            last_seq: row.try_get::<Option<i64>, _>("last_seq")?.map(|s| s as u64),
            appraisals: counts[0] as u64,
            baselines: counts[1] as u64,
            alerts: counts[2] as u64,
        })
    }

    /// Set the capture modules allowed to capture a VM (empty: any).
    pub async fn set_allowed_modules(
        &self,
        vm_id: &str,
        rules: &[ModuleRule],
    ) -> Result<(), StoreError> {
        let text = rules
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        let r = sqlx::query("UPDATE vms SET allowed_modules = $1 WHERE vm_id = $2")
            .bind(text)
            .bind(vm_id)
            .execute(&self.pool)
            .await?;
        self.vm_changed(vm_id);
        vm_found(vm_id, r.rows_affected())
    }

    /// The parsed policy assigned to a VM under `digest`: from the cache when that digest was
    /// seen before, else its stored text, parsed once (`None` for a policy assigned by digest
    /// only, before the verifier kept texts).
    pub(super) async fn policy(
        &self,
        vm_id: &str,
        digest: Digest,
    ) -> Result<Option<std::sync::Arc<vmseal_policy::Policy>>, StoreError> {
        let cached = self
            .policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let Some((d, text)) = self.policy_text(vm_id).await? else {
            return Ok(None);
        };
        let p = vmseal_policy::Policy::parse(&text)
            .map_err(|e| StoreError::Corrupt(format!("VM {vm_id:?}: stored policy: {e}")))?;
        let p = std::sync::Arc::new(p);
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d, p.clone());
        Ok(Some(p))
    }

    /// The policy text assigned to a VM, with its digest; `None` when none is.
    pub async fn policy_text(&self, vm_id: &str) -> Result<Option<(Digest, String)>, StoreError> {
        let row = sqlx::query("SELECT policy_digest, policy_text FROM vms WHERE vm_id = $1")
            .bind(vm_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("VM {vm_id:?}")))?;
        let d: Option<Vec<u8>> = row.try_get("policy_digest")?;
        let t: Option<String> = row.try_get("policy_text")?;
        Ok(match (d, t) {
            (Some(d), Some(t)) => Some((digest(d, "policy digest")?, t)),
            _ => None,
        })
    }

    /// Set the alert threshold of a VM.
    pub async fn set_threshold(&self, vm_id: &str, threshold: u8) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE vms SET threshold = $1 WHERE vm_id = $2")
            .bind(i64::from(threshold))
            .bind(vm_id)
            .execute(&self.pool)
            .await?;
        self.vm_changed(vm_id);
        vm_found(vm_id, r.rows_affected())
    }

    /// What the appraisal needs to know about a VM (kept in memory by a SQLite store, its
    /// file's only user; see the store's `records` module).
    pub async fn vm_record(&self, vm_id: &str) -> Result<VmRecord, StoreError> {
        let generation = match &self.records {
            Some(r) => match r.get(vm_id) {
                Ok(rec) => return Ok(rec),
                Err(g) => Some(g),
            },
            None => None,
        };
        let rec = self.read_vm_record(vm_id).await?;
        if let (Some(r), Some(g)) = (&self.records, generation) {
            r.fill(g, &rec);
        }
        Ok(rec)
    }

    /// [`Store::vm_record`], from the database.
    async fn read_vm_record(&self, vm_id: &str) -> Result<VmRecord, StoreError> {
        let row = sqlx::query(
            "SELECT v.vm_id, v.host_id, v.policy_digest, v.threshold, v.allowed_modules, v.last_seq, v.last_digest, v.last_tier, v.threshold_alert, v.boot, v.layout, v.chain_start, v.incarnation, h.intermediate_sha256, h.insecure_anchor, h.hardware_root, h.hardware_checked, h.hardware_status, \
             (SELECT MAX(b.version) FROM baselines b WHERE b.vm_id = v.vm_id) AS baseline_version \
             FROM vms v JOIN hosts h ON h.host_id = v.host_id WHERE v.vm_id = $1",
        )
        .bind(vm_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("VM {vm_id:?}")))?;
        let last_seq: Option<i64> = row.try_get("last_seq")?;
        let last_digest: Option<Vec<u8>> = row.try_get("last_digest")?;
        let last = match (last_seq, last_digest) {
            (Some(s), Some(d)) => Some(ChainPoint {
                seq: s as u64,
                digest: digest(d, "last_digest")?,
            }),
            _ => None,
        };
        let modules: String = row.try_get("allowed_modules")?;
        let policy_digest = row
            .try_get::<Option<Vec<u8>>, _>("policy_digest")?
            .map(|d| digest(d, "policy digest"))
            .transpose()?;
        let policy = match policy_digest {
            Some(d) => self.policy(vm_id, d).await?,
            None => None,
        };
        let layout: Layout = match row.try_get::<Option<String>, _>("layout")? {
            Some(t) => serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("VM {vm_id:?}: layout: {e}")))?,
            None => Layout::new(),
        };
        Ok(VmRecord {
            chain_start: row.try_get::<i64, _>("chain_start")?.max(0) as u64,
            policy,
            boot: row.try_get("boot")?,
            layout,
            vm_id: row.try_get("vm_id")?,
            host_id: row.try_get("host_id")?,
            intermediate_digest: digest(
                row.try_get("intermediate_sha256")?,
                "intermediate digest",
            )?,
            policy_digest,
            allowed_modules: modules
                .split('\n')
                .filter(|m| !m.trim().is_empty())
                .map(|m| ModuleRule::parse(m).map_err(StoreError::Corrupt))
                .collect::<Result<_, _>>()?,
            last,
            threshold: row.try_get::<i64, _>("threshold")?.clamp(0, 100) as u8,
            insecure_anchor: row.try_get::<i64, _>("insecure_anchor")? != 0,
            anchored: row
                .try_get::<Option<String>, _>("hardware_root")?
                .is_some_and(|r| !r.is_empty()),
            hardware_checked: row
                .try_get::<Option<String>, _>("hardware_checked")?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
            hardware_problem: row
                .try_get::<Option<String>, _>("hardware_status")?
                .filter(|s| s != "ok"),
            baseline_version: row
                .try_get::<Option<i64>, _>("baseline_version")?
                .map(|v| v as u64),
            last_tier: row.try_get("last_tier")?,
            threshold_alert: row.try_get("threshold_alert")?,
            incarnation: row.try_get("incarnation")?,
        })
    }

    /// The pinned intermediate digests of every enrolled host.
    pub async fn pinned_intermediates(&self) -> Result<Vec<Digest>, StoreError> {
        let rows = sqlx::query("SELECT intermediate_sha256 FROM hosts")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| digest(r.try_get("intermediate_sha256")?, "intermediate digest"))
            .collect()
    }

    /// Every VM with its latest appraisal (score, tier, seq) and active baseline version.
    pub async fn list_vms(&self) -> Result<Vec<VmSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.vm_id, v.host_id, v.threshold, v.policy_digest, v.last_seq, a.score, a.tier, a.received_at, \
             (SELECT MAX(b.version) FROM baselines b WHERE b.vm_id = v.vm_id) AS baseline_version \
             FROM vms v LEFT JOIN appraisals a ON a.vm_id = v.vm_id AND a.seq = v.last_seq ORDER BY v.vm_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VmSummary {
                    vm_id: r.try_get("vm_id")?,
                    host_id: r.try_get("host_id")?,
                    threshold: r.try_get::<i64, _>("threshold")?.clamp(0, 100) as u8,
                    policy_digest: r
                        .try_get::<Option<Vec<u8>>, _>("policy_digest")?
                        .map(hex::encode),
                    last_seq: r.try_get::<Option<i64>, _>("last_seq")?.map(|s| s as u64),
                    score: r
                        .try_get::<Option<i64>, _>("score")?
                        .map(|s| s.clamp(0, 100) as u8),
                    tier: r
                        .try_get::<Option<String>, _>("tier")?
                        .map(|t| {
                            vmseal_client::Tier::from_name(&t)
                                .ok_or_else(|| StoreError::Corrupt(format!("tier {t:?}")))
                        })
                        .transpose()?,
                    appraised_at: r.try_get("received_at")?,
                    baseline_version: r
                        .try_get::<Option<i64>, _>("baseline_version")?
                        .map(|v| v as u64),
                })
            })
            .collect()
    }
}

/// What [`Store::remove_vm`] removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemovedVm {
    /// The host the VM was registered on.
    pub host_id: String,
    /// Its last accepted sequence number.
    pub last_seq: Option<u64>,
    /// Appraisals removed.
    pub appraisals: u64,
    /// Baseline versions removed.
    pub baselines: u64,
    /// Alerts removed.
    pub alerts: u64,
}

/// An UPDATE keyed by VM id touched `rows` rows: none means the VM is not registered.
pub(super) fn vm_found(vm_id: &str, rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        return Err(StoreError::NotFound(format!("VM {vm_id:?}")));
    }
    Ok(())
}
