//! Hosts: enrollment tokens and challenges, enrollment, the hardware each host proved, disabling,
//! certificate renewal.

use super::{Store, StoreError, append_audit, aws_lc_rs_fill, digest};

use sqlx::Row;
use sqlx::any::AnyRow;
use vmseal_sealer::merkle::{Digest, HashAlg};

impl Store {
    /// Enrol (or re-enrol) a host with its pinned intermediate. Re-enrolment replaces the pinned
    /// intermediate in place (the host's VMs stay registered).
    pub async fn enroll_host(
        &self,
        e: &HostEnrollment<'_>,
        now: i64,
    ) -> Result<Digest, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (sha, _) = upsert_host(&mut tx, e, now).await?;
        tx.commit().await?;
        self.vms_changed();
        Ok(sha)
    }

    /// Record a new enrollment token.
    pub async fn create_enrollment_token(&self, t: &NewToken<'_>) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO enrollment_tokens (token_id, created_by, created_at, expires_at, host_id, require_anchors, replace_host, hardware, restart_chains) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(t.token_id)
            .bind(t.created_by)
            .bind(t.now)
            .bind(t.expires_at)
            .bind(t.host_id)
            .bind(t.require)
            .bind(i64::from(t.replace))
            .bind(t.hardware)
            .bind(i64::from(t.restart_chains))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An enrollment token's state at `now`.
    pub async fn enrollment_token(
        &self,
        token_id: &str,
        now: i64,
    ) -> Result<TokenState, StoreError> {
        let row: Option<AnyRow> = sqlx::query(
            "SELECT expires_at, used_at, host_id, require_anchors, replace_host, hardware, restart_chains FROM enrollment_tokens WHERE token_id = $1",
        )
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(TokenState::Unknown);
        };
        if r.try_get::<Option<i64>, _>("used_at")?.is_some() {
            return Ok(TokenState::Used);
        }
        if r.try_get::<i64, _>("expires_at")? < now {
            return Ok(TokenState::Expired);
        }
        Ok(TokenState::Usable {
            host_id: r.try_get("host_id")?,
            require: r.try_get("require_anchors")?,
            replace: r.try_get::<i64, _>("replace_host")? != 0,
            hardware: r.try_get("hardware")?,
            restart_chains: r.try_get::<i64, _>("restart_chains")? != 0,
        })
    }

    /// Store a credential challenge awaiting its answer (expired ones are swept first).
    pub async fn begin_enrollment(
        &self,
        p: &PendingEnrollment,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pending_enrollments WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO pending_enrollments (enrollment_id, token_id, host_id, intermediate_der, ak_name, insecure_anchor, csr_der, secret_sha256, expires_at, hardware_root, hardware_checked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(&p.enrollment_id)
            .bind(&p.token_id)
            .bind(&p.host_id)
            .bind(p.intermediate_der.clone())
            .bind(p.ak_name.clone())
            .bind(i64::from(p.insecure_anchor))
            .bind(p.csr_der.clone())
            .bind(p.secret_sha256.to_vec())
            .bind(p.expires_at)
            .bind(&p.hardware_root)
            .bind(&p.hardware_checked)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The unexpired challenge `enrollment_id` made for `token_id`.
    pub async fn pending_enrollment(
        &self,
        enrollment_id: &str,
        token_id: &str,
        now: i64,
    ) -> Result<Option<PendingEnrollment>, StoreError> {
        let row: Option<AnyRow> = sqlx::query("SELECT enrollment_id, token_id, host_id, intermediate_der, ak_name, insecure_anchor, csr_der, secret_sha256, expires_at, hardware_root, hardware_checked FROM pending_enrollments WHERE enrollment_id = $1 AND token_id = $2 AND expires_at >= $3")
            .bind(enrollment_id)
            .bind(token_id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(PendingEnrollment {
                enrollment_id: r.try_get("enrollment_id")?,
                token_id: r.try_get("token_id")?,
                host_id: r.try_get("host_id")?,
                intermediate_der: r.try_get("intermediate_der")?,
                ak_name: r.try_get("ak_name")?,
                insecure_anchor: r.try_get::<i64, _>("insecure_anchor")? != 0,
                csr_der: r.try_get("csr_der")?,
                secret_sha256: digest(r.try_get("secret_sha256")?, "enrollment secret hash")?,
                expires_at: r.try_get("expires_at")?,
                hardware_root: r
                    .try_get::<Option<String>, _>("hardware_root")?
                    .unwrap_or_default(),
                hardware_checked: r
                    .try_get::<Option<String>, _>("hardware_checked")?
                    .unwrap_or_else(|| "[]".into()),
            })
        })
        .transpose()
    }

    /// Forget a challenge (a wrong answer ends it: the host starts over).
    pub async fn drop_pending_enrollment(&self, enrollment_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pending_enrollments WHERE enrollment_id = $1")
            .bind(enrollment_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Finish an enrollment in one transaction: use up the token (exactly once, before it
    /// expires), pin the host's intermediate, and drop the challenge. Nothing is written when the
    /// token was used meanwhile (another replica, a second answer). Returns the intermediate's
    /// digest and the chains a rebuilt host continues (VM, next sequence number), for the audit.
    pub async fn complete_enrollment(
        &self,
        token_id: &str,
        enrollment_id: Option<&str>,
        e: &HostEnrollment<'_>,
        now: i64,
    ) -> Result<(Digest, Vec<(String, u64)>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let used = sqlx::query("UPDATE enrollment_tokens SET used_at = $1, host_id = $2 WHERE token_id = $3 AND used_at IS NULL AND expires_at >= $1 AND (host_id IS NULL OR host_id = $2)")
            .bind(now)
            .bind(e.host_id)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        if used.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                "the enrollment token was used or expired meanwhile; ask the admin for a new one"
                    .into(),
            ));
        }
        let out = upsert_host(&mut tx, e, now).await?;
        if let Some(id) = enrollment_id {
            sqlx::query("DELETE FROM pending_enrollments WHERE enrollment_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.vms_changed();
        Ok(out)
    }

    /// The hardware root a host id was enrolled with, if the host exists and has one recorded.
    pub async fn host_hardware_root(&self, host_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query("SELECT hardware_root FROM hosts WHERE host_id = $1")
                .bind(host_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get::<Option<String>, _>("hardware_root"))
                .transpose()?
                .flatten(),
        )
    }

    /// Disable a host: its agent certificate is revoked (every request checks) and its evidence
    /// refused until it is enrolled again with an admin's token. Returns the revoked serial.
    pub async fn disable_host(
        &self,
        host_id: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let serial: Option<String> =
            sqlx::query("SELECT agent_serial FROM hosts WHERE host_id = $1")
                .bind(host_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("host {host_id:?}")))?
                .try_get("agent_serial")?;
        if let Some(s) = &serial {
            revoke(&mut tx, s, host_id, "host disabled by an admin", now).await?;
        }
        sqlx::query("UPDATE hosts SET disabled_at = $1 WHERE host_id = $2")
            .bind(now)
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.vms_changed();
        Ok(serial)
    }

    /// Every enabled host's pinned intermediate (DER), its token's hardware policy (JSON, if it
    /// had one), its last re-appraisal verdict and when its agent certificate expires.
    pub async fn hosts_to_reappraise(&self) -> Result<Vec<HostToReappraise>, StoreError> {
        sqlx::query("SELECT host_id, intermediate_der, hardware_policy, hardware_status, agent_not_after FROM hosts WHERE disabled_at IS NULL ORDER BY host_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(HostToReappraise {
                    host_id: r.try_get("host_id")?,
                    intermediate_der: r.try_get("intermediate_der")?,
                    hardware_policy: r.try_get("hardware_policy")?,
                    status: r.try_get("hardware_status")?,
                    agent_not_after: r.try_get("agent_not_after")?,
                })
            })
            .collect()
    }

    /// Record a host's re-appraisal verdict; whether it changed (only this replica's UPDATE that
    /// changed it reports true, so a transition is alerted once).
    pub async fn set_hardware_status(
        &self,
        host_id: &str,
        status: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE hosts SET hardware_status = $1 WHERE host_id = $2 AND (hardware_status IS NULL OR hardware_status <> $1)")
            .bind(status)
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        self.vms_changed();
        Ok(r.rows_affected() == 1)
    }

    /// Every revoked certificate serial (hex).
    pub async fn revoked_serials(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        sqlx::query("SELECT serial FROM revoked_certs")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<String, _>("serial")?))
            .collect()
    }

    /// The enrolled hosts: id, hardware root, whether the SNP anchor was INSECURE, when enrolled
    /// and when disabled.
    pub async fn hosts(&self) -> Result<Vec<vmseal_client::HostSummary>, StoreError> {
        sqlx::query("SELECT h.host_id, h.hardware_root, h.insecure_anchor, h.enrolled_at, h.disabled_at, h.intermediate_sha256, h.hardware_checked, h.hardware_status, h.agent_not_after, (SELECT COUNT(*) FROM vms v WHERE v.host_id = h.host_id) AS vms, (SELECT MAX(v.last_seen) FROM vms v WHERE v.host_id = h.host_id) AS last_evidence FROM hosts h ORDER BY h.host_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(vmseal_client::HostSummary {
                    host_id: r.try_get("host_id")?,
                    hardware_root: r.try_get("hardware_root")?,
                    insecure_anchor: r.try_get::<i64, _>("insecure_anchor")? != 0,
                    enrolled_at: r.try_get("enrolled_at")?,
                    disabled_at: r.try_get("disabled_at")?,
                    intermediate_sha256: hex::encode(
                        r.try_get::<Vec<u8>, _>("intermediate_sha256")?,
                    ),
                    hardware_status: r.try_get("hardware_status")?,
                    agent_not_after: r.try_get("agent_not_after")?,
                    vms: r.try_get::<i64, _>("vms")?.max(0) as u64,
                    last_evidence: r.try_get("last_evidence")?,
                    hardware_checked: r
                        .try_get::<Option<String>, _>("hardware_checked")?
                        .and_then(|t| serde_json::from_str(&t).ok()),
                })
            })
            .collect()
    }

    /// What a host's agent certificate renewal needs: its pinned intermediate, hardware policy
    /// (a token's own, JSON) and current agent certificate serial. None for an unknown or
    /// disabled host.
    pub async fn host_for_renewal(
        &self,
        host_id: &str,
    ) -> Result<Option<(Vec<u8>, Option<String>, Option<String>)>, StoreError> {
        sqlx::query("SELECT intermediate_der, hardware_policy, agent_serial FROM hosts WHERE host_id = $1 AND disabled_at IS NULL")
            .bind(host_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                Ok((
                    r.try_get("intermediate_der")?,
                    r.try_get("hardware_policy")?,
                    r.try_get("agent_serial")?,
                ))
            })
            .transpose()
    }

    /// Record a host's new agent certificate (serial, expiry) and revoke the one it replaces, in
    /// one transaction (only if that one is still current: a second renewal racing this one
    /// loses); the caller audits. Returns the revoked serial.
    pub async fn renew_agent(
        &self,
        host_id: &str,
        old_serial: Option<&str>,
        new_serial: &str,
        not_after: i64,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE hosts SET agent_serial = $1, agent_not_after = $2 WHERE host_id = $3 AND disabled_at IS NULL AND (agent_serial = $4 OR ($4 IS NULL AND agent_serial IS NULL))")
            .bind(new_serial)
            .bind(not_after)
            .bind(host_id)
            .bind(old_serial)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "host {host_id:?}'s agent certificate changed meanwhile (another renewal or an \
                 enrollment); nothing was renewed"
            )));
        }
        if let Some(old) = old_serial {
            revoke(&mut tx, old, host_id, "renewed", now).await?;
        }
        tx.commit().await?;
        self.vms_changed();
        Ok(old_serial.map(str::to_owned))
    }

    /// Revoke a person's superseded certificate (an admin's or viewer's, renewed), audited with
    /// the new one's serial.
    pub async fn revoke_person_cert(
        &self,
        who: &str,
        old_serial: &str,
        new_serial: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        revoke(&mut tx, old_serial, who, "renewed", now).await?;
        let detail =
            serde_json::json!({ "who": who, "revoked_serial": old_serial, "serial": new_serial })
                .to_string();
        append_audit(&mut tx, who, "renew_cert", &detail, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record when a host's agent certificate (issued at its enrollment) expires.
    pub async fn set_agent_not_after(
        &self,
        host_id: &str,
        not_after: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET agent_not_after = $1 WHERE host_id = $2")
            .bind(not_after)
            .bind(host_id)
            .execute(&self.pool)
            .await?;
        self.vms_changed();
        Ok(())
    }

    /// A fresh enrollment nonce for `token_id`, valid `ttl` seconds.
    pub async fn issue_enrollment_nonce(
        &self,
        token_id: &str,
        ttl: i64,
        now: i64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut n = vec![0u8; 32];
        aws_lc_rs_fill(&mut n)?;
        sqlx::query("DELETE FROM enrollment_nonces WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO enrollment_nonces (nonce, token_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(n.clone())
        .bind(token_id)
        .bind(now + ttl)
        .execute(&self.pool)
        .await?;
        Ok(n)
    }

    /// Use up `nonce` if it was issued to `token_id` and is unexpired; whether it was.
    pub async fn take_enrollment_nonce(
        &self,
        nonce: &[u8],
        token_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "DELETE FROM enrollment_nonces WHERE nonce = $1 AND token_id = $2 AND expires_at >= $3",
        )
        .bind(nonce.to_vec())
        .bind(token_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

/// A host to pin.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostEnrollment<'a> {
    /// Host id (from the intermediate certificate).
    pub host_id: &'a str,
    /// The intermediate certificate, DER.
    pub intermediate_der: &'a [u8],
    /// TPM name of the host's AK (empty without a TPM anchor).
    pub ak_name: &'a [u8],
    /// Whether the SNP anchor was the INSECURE stand-in.
    pub insecure_anchor: bool,
    /// The hardware root ([`hardware_root_continues`]): `tpm:<hex>`, `snp:<hex>`, `;`-joined.
    pub hardware_root: &'a str,
    /// Serial (hex) of the agent certificate issued with this enrollment.
    pub agent_serial: &'a str,
    /// Whether the admin's token allows another hardware root to take over an existing host id.
    pub replace: bool,
    /// Whether the admin's token allows a new intermediate to continue the evidence chains of the
    /// host's VMs (a rebuilt host); `replace` implies it.
    pub restart_chains: bool,
    /// What the hardware policy checked (JSON list).
    pub hardware_checked: &'a str,
    /// The enrollment token's own hardware policy (JSON), when it had one: re-appraisals use it.
    pub hardware_policy: Option<&'a str>,
}

/// Whether `new` may take over a host id enrolled with `old`: every anchor the host had must be
/// there again, with the same identity (an anchor may be added, never dropped or changed).
pub fn hardware_root_continues(old: &str, new: &str) -> bool {
    let parts = |s: &str| -> Vec<(String, String)> {
        s.split(';')
            .filter_map(|p| p.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let new = parts(new);
    parts(old)
        .iter()
        .all(|(k, v)| new.iter().any(|(k2, v2)| k2 == k && v2 == v))
}

/// An enrollment token to record.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    /// Its id (the CN of its certificate).
    pub token_id: &'a str,
    /// The admin who made it.
    pub created_by: &'a str,
    /// The only host it enrols, if any.
    pub host_id: Option<&'a str>,
    /// The anchors its host must carry, if not the service's default.
    pub require: Option<&'a str>,
    /// Whether it hands `host_id` to other hardware.
    pub replace: bool,
    /// Whether a rebuilt host (a new intermediate) may continue its VMs' evidence chains.
    pub restart_chains: bool,
    /// Its own hardware policy (JSON), replacing the service's.
    pub hardware: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A host the re-appraisal looks at again.
#[derive(Debug, Clone)]
pub struct HostToReappraise {
    /// Host id.
    pub host_id: String,
    /// Its pinned intermediate, DER.
    pub intermediate_der: Vec<u8>,
    /// Its enrollment token's hardware policy (JSON), when it had one.
    pub hardware_policy: Option<String>,
    /// The last verdict.
    pub status: Option<String>,
    /// When its agent certificate expires (Unix seconds), when recorded.
    pub agent_not_after: Option<i64>,
}

/// What an enrollment token allows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// No such token.
    Unknown,
    /// Already used for an enrollment.
    Used,
    /// Past its lifetime.
    Expired,
    /// Usable, for any host or only for `host_id`.
    Usable {
        /// The only host it may enrol, when the admin named one.
        host_id: Option<String>,
        /// The anchors its host must carry, when not the service's default.
        require: Option<String>,
        /// Whether it may give `host_id` to another hardware root (the admin said --replace).
        replace: bool,
        /// Its own hardware policy (JSON), when it has one.
        hardware: Option<String>,
        /// Whether a rebuilt host may continue its VMs' chains (the admin said --restart-chains).
        restart_chains: bool,
    },
}

/// A credential challenge awaiting its answer.
#[derive(Debug, Clone)]
pub struct PendingEnrollment {
    /// Id the agent answers under.
    pub enrollment_id: String,
    /// The token that started it.
    pub token_id: String,
    /// Host id.
    pub host_id: String,
    /// The intermediate to pin once answered.
    pub intermediate_der: Vec<u8>,
    /// AK name the credential was bound to.
    pub ak_name: Vec<u8>,
    /// Whether the SNP anchor was the INSECURE stand-in.
    pub insecure_anchor: bool,
    /// The agent's certificate request, DER.
    pub csr_der: Vec<u8>,
    /// SHA-256 of the secret wrapped for the EK.
    pub secret_sha256: Digest,
    /// Unix seconds.
    pub expires_at: i64,
    /// The enrolling hardware root ([`HostEnrollment::hardware_root`]).
    pub hardware_root: String,
    /// What the hardware policy checked (JSON list).
    pub hardware_checked: String,
}

pub(super) async fn upsert_host(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &HostEnrollment<'_>,
    now: i64,
) -> Result<(Digest, Vec<(String, u64)>), StoreError> {
    // An existing host id keeps its hardware root (or an admin replaces it), and its previous
    // agent certificate is revoked.
    let old = sqlx::query(
        "SELECT hardware_root, agent_serial, intermediate_sha256 FROM hosts WHERE host_id = $1",
    )
    .bind(e.host_id)
    .fetch_optional(&mut **tx)
    .await?;
    let sha = HashAlg::Sha256.hash(&[e.intermediate_der]);
    let mut continued = Vec::new();
    if let Some(r) = old {
        let root: Option<String> = r.try_get("hardware_root")?;
        if let Some(root) = root
            && !e.replace
            && !hardware_root_continues(&root, e.hardware_root)
        {
            return Err(StoreError::IdentityChanged(format!(
                "host {:?} was enrolled with hardware root {root}, not {}: re-enrol it with the \
                 same TPM / SNP platform, or an admin replaces it with a token that names the \
                 host and says --replace",
                e.host_id, e.hardware_root
            )));
        }
        if let Some(serial) = r.try_get::<Option<String>, _>("agent_serial")? {
            revoke(tx, &serial, e.host_id, "re-enrolled", now).await?;
        }
        // A new intermediate (a rebuilt host) continues its VMs' chains only when the admin's
        // token says so: the chains' next evidence comes from a key the verifier never saw them
        // signed with.
        let old_sha: Vec<u8> = r.try_get("intermediate_sha256")?;
        if old_sha != sha {
            let rows = sqlx::query(
                "SELECT vm_id, last_seq FROM vms WHERE host_id = $1 AND last_seq IS NOT NULL ORDER BY vm_id",
            )
            .bind(e.host_id)
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                let seq: i64 = row.try_get("last_seq")?;
                continued.push((row.try_get::<String, _>("vm_id")?, seq as u64 + 1));
            }
            let allowed = e.restart_chains || e.replace;
            if !continued.is_empty() && !allowed {
                let names: Vec<&str> = continued.iter().map(|(v, _)| v.as_str()).collect();
                return Err(StoreError::ChainsExist(format!(
                    "host {:?} enrols with a new intermediate key (a rebuilt host), and its VMs {} \
                     have evidence chains signed with the old one. An admin lets the new key \
                     continue them with a token that says so: `vmseal-verifier admin \
                     enrollment-token --host-id {} --restart-chains` (each continued chain is \
                     audited); nothing was enrolled",
                    e.host_id,
                    names.join(", "),
                    e.host_id
                )));
            }
        }
    }
    sqlx::query("INSERT INTO hosts (host_id, intermediate_der, intermediate_sha256, ak_name, insecure_anchor, enrolled_at, hardware_root, agent_serial, disabled_at, hardware_checked, hardware_policy, hardware_status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, 'ok') ON CONFLICT (host_id) DO UPDATE SET hardware_policy = excluded.hardware_policy, hardware_status = 'ok', intermediate_der = excluded.intermediate_der, intermediate_sha256 = excluded.intermediate_sha256, ak_name = excluded.ak_name, insecure_anchor = excluded.insecure_anchor, enrolled_at = excluded.enrolled_at, hardware_root = excluded.hardware_root, agent_serial = excluded.agent_serial, disabled_at = NULL, hardware_checked = excluded.hardware_checked")
        .bind(e.host_id)
        .bind(e.intermediate_der.to_vec())
        .bind(sha.to_vec())
        .bind(e.ak_name.to_vec())
        .bind(i64::from(e.insecure_anchor))
        .bind(now)
        .bind(e.hardware_root)
        .bind(e.agent_serial)
        .bind(e.hardware_checked)
        .bind(e.hardware_policy)
        .execute(&mut **tx)
        .await?;
    Ok((sha, continued))
}

/// Revoke the certificate with `serial` (hex) inside `tx`; revoking twice is harmless.
pub(super) async fn revoke(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    serial: &str,
    host_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO revoked_certs (serial, host_id, reason, revoked_at) VALUES ($1, $2, $3, $4) ON CONFLICT (serial) DO NOTHING")
        .bind(serial)
        .bind(host_id)
        .bind(reason)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
