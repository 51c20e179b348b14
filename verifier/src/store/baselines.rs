//! Golden baselines: versions promoted from snapshots or imported from CoRIM, never overwritten.

use sqlx::Row;
use vmseal_sealer::claims::{RegionClass, Severity};
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};

use super::{Store, StoreError, append_audit, digest};
use crate::appraise::{Baseline, BaselineRegion};

impl Store {
    /// Promote a new baseline version (never overwriting an old one), audited in the same
    /// transaction (`promote_baseline` with the snapshot, or `import_baseline` with the CoRIM's id,
    /// signer and SHA-256); returns its version.
    #[allow(clippy::too_many_arguments)]
    pub async fn promote_baseline(
        &self,
        vm_id: &str,
        source: BaselineSource<'_>,
        policy_digest: &Digest,
        regions: &[NewBaselineRegion],
        kernel: Option<&vmseal_sealer::claims::KernelObjects>,
        by: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let kernel = kernel
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("kernel objects: {e}")))?;
        let (source_seq, corim, signer) = match source {
            BaselineSource::Snapshot(seq) => (seq as i64, None, None),
            BaselineSource::Corim { signed, signer, .. } => {
                (-1, Some(signed.to_vec()), Some(signer))
            }
        };
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT MAX(version) AS v FROM baselines WHERE vm_id = $1")
            .bind(vm_id)
            .fetch_one(&mut *tx)
            .await?;
        let version = row.try_get::<Option<i64>, _>("v")?.unwrap_or(0) + 1;
        sqlx::query("INSERT INTO baselines (vm_id, version, source_seq, promoted_by, promoted_at, policy_digest, corim, corim_signer, kernel_objects) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(vm_id)
            .bind(version)
            .bind(source_seq)
            .bind(by)
            .bind(now)
            .bind(policy_digest.to_vec())
            .bind(corim)
            .bind(signer)
            .bind(kernel)
            .execute(&mut *tx)
            .await?;
        for r in regions {
            let ranges = serde_json::to_string(&r.ranges)
                .map_err(|e| StoreError::Corrupt(format!("ranges: {e}")))?;
            sqlx::query("INSERT INTO baseline_regions (vm_id, version, name, class, severity, hash_alg, leaves, ranges) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(vm_id)
                .bind(version)
                .bind(&r.name)
                .bind(r.class.name())
                .bind(r.severity.name())
                .bind(r.hash.name())
                .bind(r.leaves.concat())
                .bind(ranges)
                .execute(&mut *tx)
                .await?;
        }
        let (action, detail) = match source {
            BaselineSource::Snapshot(seq) => (
                "promote_baseline",
                serde_json::json!({ "vm": vm_id, "seq": seq, "version": version }),
            ),
            BaselineSource::Corim {
                signed,
                signer,
                corim_id,
                issuer,
            } => (
                "import_baseline",
                serde_json::json!({ "vm": vm_id, "version": version, "corim_id": corim_id,
                    "signer": signer, "issuer": issuer,
                    "corim_sha256": hex::encode(HashAlg::Sha256.hash(&[signed])) }),
            ),
        };
        append_audit(&mut tx, by, action, &detail.to_string(), now).await?;
        tx.commit().await?;
        self.vm_changed(vm_id);
        Ok(version as u64)
    }

    /// The newest baseline version of a VM (cheap: no leaves are read).
    pub async fn active_baseline_version(&self, vm_id: &str) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM baselines WHERE vm_id = $1")
            .bind(vm_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("v")?.map(|v| v as u64))
    }

    /// The newest baseline of a VM.
    pub async fn active_baseline(&self, vm_id: &str) -> Result<Option<Baseline>, StoreError> {
        let Some(version) = self.active_baseline_version(vm_id).await? else {
            return Ok(None);
        };
        self.baseline(vm_id, version).await
    }

    /// Every baseline version of a VM, oldest first (no leaves are read).
    pub async fn baseline_versions(
        &self,
        vm_id: &str,
    ) -> Result<Vec<vmseal_client::BaselineVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.version, b.source_seq, b.promoted_by, b.promoted_at, b.policy_digest, b.corim_signer, \
             (SELECT COUNT(*) FROM baseline_regions r WHERE r.vm_id = b.vm_id AND r.version = b.version) AS regions \
             FROM baselines b WHERE b.vm_id = $1 ORDER BY b.version",
        )
        .bind(vm_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let seq: i64 = r.try_get("source_seq")?;
                Ok(vmseal_client::BaselineVersion {
                    version: r.try_get::<i64, _>("version")? as u64,
                    source_seq: u64::try_from(seq).ok(),
                    promoted_by: r.try_get("promoted_by")?,
                    promoted_at: r.try_get("promoted_at")?,
                    policy_digest: r
                        .try_get::<Option<Vec<u8>>, _>("policy_digest")?
                        .map(|d| digest(d, "baseline policy digest").map(hex::encode))
                        .transpose()?,
                    corim_signer: r.try_get("corim_signer")?,
                    regions: r.try_get::<i64, _>("regions")? as u64,
                })
            })
            .collect()
    }

    /// The signed CoRIM a baseline version was imported from, exactly as it came; `None` for a
    /// baseline promoted from a snapshot.
    pub async fn baseline_corim(
        &self,
        vm_id: &str,
        version: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT corim FROM baselines WHERE vm_id = $1 AND version = $2")
            .bind(vm_id)
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("baseline version {version} of VM {vm_id:?}"))
            })?;
        Ok(row.try_get("corim")?)
    }

    /// A VM's baseline at `version`, `None` when it has no such version.
    pub async fn baseline(
        &self,
        vm_id: &str,
        version: u64,
    ) -> Result<Option<Baseline>, StoreError> {
        let version = version as i64;
        let Some(row) = sqlx::query(
            "SELECT policy_digest, kernel_objects FROM baselines WHERE vm_id = $1 AND version = $2",
        )
        .bind(vm_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let policy_digest = row
            .try_get::<Option<Vec<u8>>, _>("policy_digest")?
            .map(|d| digest(d, "baseline policy digest"))
            .transpose()?;
        let kernel = row
            .try_get::<Option<String>, _>("kernel_objects")?
            .map(|t| {
                serde_json::from_str(&t).map_err(|e| {
                    StoreError::Corrupt(format!("baseline v{version}'s kernel objects: {e}"))
                })
            })
            .transpose()?;
        let rows = sqlx::query("SELECT name, class, severity, hash_alg, leaves, ranges FROM baseline_regions WHERE vm_id = $1 AND version = $2 ORDER BY name")
            .bind(vm_id)
            .bind(version)
            .fetch_all(&self.pool)
            .await?;
        let mut regions = Vec::new();
        for r in rows {
            let name: String = r.try_get("name")?;
            let class: String = r.try_get("class")?;
            let severity: String = r.try_get("severity")?;
            let alg: String = r.try_get("hash_alg")?;
            let leaves: Vec<u8> = r.try_get("leaves")?;
            let bad = |w: &str| StoreError::Corrupt(format!("baseline region {name:?}: {w}"));
            let ranges: Option<Vec<[u64; 2]>> = r
                .try_get::<Option<String>, _>("ranges")?
                .map(|t| serde_json::from_str(&t).map_err(|_| bad("ranges")))
                .transpose()?;
            let leaves: Vec<Digest> = leaves
                .chunks_exact(32)
                .map(|c| c.try_into().map_err(|_| bad("leaf")))
                .collect::<Result<_, _>>()?;
            regions.push(BaselineRegion {
                class: RegionClass::from_name(&class).ok_or_else(|| bad("class"))?,
                severity: Severity::from_name(&severity).ok_or_else(|| bad("severity"))?,
                tree: MerkleTree::from_leaves(
                    HashAlg::from_name(&alg).ok_or_else(|| bad("hash"))?,
                    leaves,
                )
                .map_err(|e| bad(&e.to_string()))?,
                ranges,
                name,
            });
        }
        Ok(Some(Baseline {
            version: version as u64,
            policy_digest,
            regions,
            kernel,
        }))
    }
}

/// One region of a baseline to promote.
#[derive(Debug, Clone)]
pub struct NewBaselineRegion {
    /// Name.
    pub name: String,
    /// Class.
    pub class: RegionClass,
    /// Severity.
    pub severity: Severity,
    /// Hash.
    pub hash: HashAlg,
    /// Leaves.
    pub leaves: Vec<Digest>,
    /// Guest-physical ranges of the snapshot, `[start, len]`.
    pub ranges: Vec<[u64; 2]>,
}

/// Where a new baseline version comes from.
#[derive(Debug, Clone, Copy)]
pub enum BaselineSource<'a> {
    /// An appraised snapshot's page hashes (`admin promote-baseline`).
    Snapshot(u64),
    /// A signed CoRIM (`admin baselines import`), kept exactly.
    Corim {
        /// The signed CoRIM.
        signed: &'a [u8],
        /// The trusted key that signed it (label and key id).
        signer: &'a str,
        /// The CoRIM's id.
        corim_id: &'a str,
        /// The CWT issuer it names, if any.
        issuer: Option<&'a str>,
    },
}
