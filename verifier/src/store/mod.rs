//! Storage: hosts, VMs, nonces, versioned baselines, appraisals, alerts and the hash-chained
//! audit log.
//!
//! One code path for SQLite (the default: one file, WAL) and PostgreSQL (several verifier
//! replicas), through sqlx's `Any` driver; the same migrations run at open on both. Operations that
//! replicas could race on are single conditional statements: a nonce is consumed by a `DELETE` that
//! must remove exactly one row, and a VM's chain advances by an `UPDATE … WHERE last_seq =
//! expected`, so two replicas can never both accept the same nonce or the same sequence number.
//! Audit entries (and so alerts, whose ids are their audit entries') are ordered by the one-row
//! `audit_head` table, whose row lock serializes appends across replicas.

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use vmseal_sealer::claims::{RegionClass, Severity};
use vmseal_sealer::merkle::{Digest, HashAlg, MerkleTree};

use crate::appraise::{Baseline, BaselineRegion, ChainPoint, Layout, ModuleRule, VmRecord};

mod alerts;
mod appraisals;

pub use alerts::{
    Alert, AlertPlan, ClaimedDelivery, DELIVERY_LEASE_S, DeliveryState, MAX_DELIVERY_ATTEMPTS,
    NewAlert, Refusal, Silence, Webhook, backoff_s,
};
pub use appraisals::{MAX_GROUP, POSTGRES_LEADERS, Verdict};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Seconds a request waits for the SQLite connection (see [`Store::open`]).
pub const SQLITE_ACQUIRE_TIMEOUT_S: u64 = 30;
/// Seconds a request waits for a PostgreSQL connection before answering 503.
pub const POSTGRES_ACQUIRE_TIMEOUT_S: u64 = 5;

/// The database engine behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file (WAL): one verifier process.
    Sqlite,
    /// PostgreSQL: one or more verifier replicas.
    Postgres,
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(sqlx::Error),
    /// The database cannot be reached now (down, restarting, out of connections): retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Unknown VM or host.
    #[error("{0} not found")]
    NotFound(String),
    /// Another request changed the same row first.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The evidence's nonce was used or expired before its appraisal could be stored.
    #[error("nonce already used or expired")]
    NonceUsed,
    /// A stored value is corrupt.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// An enrollment would hand a host id to another hardware root.
    #[error("{0}")]
    IdentityChanged(String),
    /// A rebuilt host would continue its VMs' chains without the admin's leave.
    #[error("{0}")]
    ChainsExist(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = match &e {
            E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::Tls(_) | E::WorkerCrashed => true,
            // SQLSTATE class 08 (connection exception) and 57P (operator intervention: the
            // server is shutting down or starting up).
            E::Database(d) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(e.to_string())
        } else {
            Self::Db(e)
        }
    }
}

/// The verifier's store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Parsed policies by the SHA-256 of their text: a text never changes under its digest, so
    /// each is read and parsed once, not at every appraisal.
    policies: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<Digest, std::sync::Arc<vmseal_policy::Policy>>>,
    >,
    /// Appraisals waiting to be committed together (see [`Store::record_appraisal`]).
    group: std::sync::Arc<appraisals::GroupCommit>,
}

fn digest(v: Vec<u8>, what: &str) -> Result<Digest, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
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

/// A baseline version, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineInfo {
    /// Version.
    pub version: u64,
    /// The snapshot it was promoted from; `None` when imported from a CoRIM.
    pub source_seq: Option<u64>,
    /// Who promoted or imported it.
    pub promoted_by: String,
    /// When (Unix seconds).
    pub promoted_at: i64,
    /// The capture policy its values were captured under (hex in JSON).
    #[serde(serialize_with = "hex_opt")]
    pub policy_digest: Option<Digest>,
    /// The trusted key that signed the CoRIM it was imported from.
    pub corim_signer: Option<String>,
    /// How many regions it holds.
    pub regions: u64,
}

fn hex_opt<S: serde::Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&hex::encode(d)),
        None => s.serialize_none(),
    }
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Position.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Details (JSON).
    pub detail: String,
    /// Hash of this entry (hex).
    pub hash: String,
}

fn audit_hash(prev: &[u8], id: i64, at: i64, actor: &str, action: &str, detail: &str) -> Digest {
    vmseal_client::audit::entry_hash(prev, id, at, actor, action, detail)
}

/// `url` fit to print: a password in it (`postgres://user:secret@host/db`) is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(p) => p,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl Store {
    /// Open (creating when needed) and migrate: `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_owned()
        };
        if !sqlite {
            // One direct connection first: a pool only says "timed out", this says why.
            use sqlx::Connection as _;
            let host = redact_url(&url)
                .split_once('@')
                .map(|(_, h)| h.split('/').next().unwrap_or(h).to_owned())
                .unwrap_or_else(|| "the URL's host".into());
            let probe = tokio::time::timeout(
                std::time::Duration::from_secs(POSTGRES_ACQUIRE_TIMEOUT_S),
                sqlx::AnyConnection::connect(&url),
            )
            .await;
            let why = match probe {
                Ok(Ok(c)) => {
                    let _ = c.close().await;
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {POSTGRES_ACQUIRE_TIMEOUT_S} s")),
            };
            if let Some(why) = why {
                return Err(StoreError::Unavailable(format!(
                    "PostgreSQL at {host} cannot be reached: {why} (is it running, and are the \
                     URL's host, port, user and database right?)"
                )));
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 16 })
            // How long a request may wait for a connection before it fails with 503. SQLite:
            // one local writer, so waiting is queueing behind the other appraisals (a thousand
            // agents at once wait seconds), never an outage. PostgreSQL: past this, the
            // database is down or overloaded, and the agent is told to retry.
            .acquire_timeout(std::time::Duration::from_secs(if sqlite {
                SQLITE_ACQUIRE_TIMEOUT_S
            } else {
                POSTGRES_ACQUIRE_TIMEOUT_S
            }))
            // A long wait for the SQLite writer under load is expected, not worth a warning each.
            .acquire_slow_threshold(std::time::Duration::from_secs(if sqlite {
                SQLITE_ACQUIRE_TIMEOUT_S
            } else {
                2
            }))
            // A local SQLite file needs no liveness ping before each use (a round trip to its
            // worker thread per query); a PostgreSQL connection may have dropped, so it is tested.
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL + FULL: every commit is fsynced before it returns, so whatever a
                        // 2xx acknowledged survives a crash of the verifier, of the OS, or a
                        // power cut.
                        sqlx::query("PRAGMA synchronous=FULL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys=ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=5000")
                            .execute(&mut *conn)
                            .await?;
                    } else {
                        // Whatever the server's default, a commit returns once it is on disk
                        // (on the synchronous standbys too, where configured).
                        sqlx::query("SET synchronous_commit = on")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            policies: Default::default(),
            group: std::sync::Arc::new(appraisals::GroupCommit::new(if sqlite {
                1
            } else {
                appraisals::POSTGRES_LEADERS
            })),
            backend: if sqlite {
                Backend::Sqlite
            } else {
                Backend::Postgres
            },
        })
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What makes an acknowledged write durable here, checked on a connection of the pool: SQLite
    /// `synchronous=FULL` in WAL mode, PostgreSQL `synchronous_commit=on` with `fsync=on`. An
    /// error names a setting that lets an acknowledged write be lost (PostgreSQL `fsync=off`).
    pub async fn durability(&self) -> Result<String, StoreError> {
        let one = |q: &'static str| {
            let pool = self.pool.clone();
            async move {
                let row = sqlx::query(q).fetch_one(&pool).await?;
                // SQLite answers numbers, PostgreSQL text.
                let v = row
                    .try_get::<String, _>(0)
                    .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))?;
                Ok::<_, StoreError>(v)
            }
        };
        match self.backend {
            Backend::Sqlite => {
                let sync = one("PRAGMA synchronous").await?;
                let journal = one("PRAGMA journal_mode").await?;
                if sync != "2" && sync != "3" {
                    return Err(StoreError::Corrupt(format!(
                        "SQLite synchronous is {sync}, not FULL: an acknowledged write could be lost"
                    )));
                }
                Ok(format!("SQLite synchronous=FULL, journal_mode={journal}"))
            }
            Backend::Postgres => {
                let commit = one("SHOW synchronous_commit").await?;
                let fsync = one("SHOW fsync").await?;
                if fsync != "on"
                    || !matches!(commit.as_str(), "on" | "remote_write" | "remote_apply")
                {
                    return Err(StoreError::Corrupt(format!(
                        "PostgreSQL fsync={fsync}, synchronous_commit={commit}: an acknowledged \
                         write could be lost in a crash; set fsync=on on the server"
                    )));
                }
                Ok(format!(
                    "PostgreSQL synchronous_commit={commit}, fsync={fsync}"
                ))
            }
        }
    }

    /// Whether the database answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

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
        vm_found(vm_id, r.rows_affected())
    }

    /// The parsed policy assigned to a VM under `digest`: from the cache when that digest was
    /// seen before, else its stored text, parsed once (`None` for a policy assigned by digest
    /// only, before the verifier kept texts).
    async fn policy(
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
        vm_found(vm_id, r.rows_affected())
    }

    /// What the appraisal needs to know about a VM.
    pub async fn vm_record(&self, vm_id: &str) -> Result<VmRecord, StoreError> {
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

    /// Issue a single-use nonce for `vm_id`, valid for `ttl` seconds.
    pub async fn issue_nonce(
        &self,
        vm_id: &str,
        ttl: i64,
        now: i64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut n = vec![0u8; 32];
        aws_lc_rs_fill(&mut n)?;
        sqlx::query("DELETE FROM nonces WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO nonces (nonce, vm_id, expires_at) VALUES ($1, $2, $3)")
            .bind(n.clone())
            .bind(vm_id)
            .bind(now + ttl)
            .execute(&self.pool)
            .await?;
        Ok(n)
    }

    /// Whether a nonce is issued for `vm_id` and unexpired (without consuming it).
    pub async fn nonce_valid(
        &self,
        vm_id: &str,
        nonce: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT vm_id FROM nonces WHERE nonce = $1 AND vm_id = $2 AND expires_at >= $3",
        )
        .bind(nonce.to_vec())
        .bind(vm_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The stored results of a VM's most recent accepted appraisals, newest first, at most
    /// `limit` of them. An unknown VM is `NotFound`; a VM never appraised gives an empty list.
    pub async fn recent_appraisals(
        &self,
        vm_id: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.vm_record(vm_id).await?;
        let rows = sqlx::query(
            "SELECT result FROM appraisals WHERE vm_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(vm_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("result").map_err(StoreError::from))
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

    /// Ask `host_id` for a capture of `vm_id` answering `nonce`, open until `expires_at`.
    pub async fn create_capture_request(
        &self,
        r: &NewCaptureRequest<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO capture_requests (request_id, vm_id, host_id, nonce, requested_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(r.request_id)
            .bind(r.vm_id)
            .bind(r.host_id)
            .bind(r.nonce.to_vec())
            .bind(r.requested_by)
            .bind(now)
            .bind(r.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Hand out `host_id`'s open capture requests, each exactly once: a request is the caller's
    /// only if its `picked_at` was still empty when the caller set it (replicas race safely).
    pub async fn take_capture_requests(
        &self,
        host_id: &str,
        now: i64,
    ) -> Result<Vec<PickedCapture>, StoreError> {
        let rows = self.open_capture_request_rows(host_id, now).await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.try_get("request_id")?;
            let won = sqlx::query(
                "UPDATE capture_requests SET picked_at = $1 WHERE request_id = $2 AND picked_at IS NULL",
            )
            .bind(now)
            .bind(&id)
            .execute(&self.pool)
            .await?;
            if won.rows_affected() == 1 {
                out.push(PickedCapture {
                    request_id: id,
                    vm_id: r.try_get("vm_id")?,
                    nonce: r.try_get("nonce")?,
                });
            }
        }
        Ok(out)
    }

    async fn open_capture_request_rows(
        &self,
        host_id: &str,
        now: i64,
    ) -> Result<Vec<AnyRow>, StoreError> {
        Ok(sqlx::query("SELECT request_id, vm_id, nonce FROM capture_requests WHERE host_id = $1 AND picked_at IS NULL AND expires_at >= $2 ORDER BY created_at")
            .bind(host_id)
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The host's open capture requests, not yet handed to its agent — read, not taken (an
    /// admin looking does not take them from the agent).
    pub async fn open_capture_requests(
        &self,
        host_id: &str,
        now: i64,
    ) -> Result<Vec<PickedCapture>, StoreError> {
        self.open_capture_request_rows(host_id, now)
            .await?
            .iter()
            .map(|r| {
                Ok(PickedCapture {
                    request_id: r.try_get("request_id")?,
                    vm_id: r.try_get("vm_id")?,
                    nonce: r.try_get("nonce")?,
                })
            })
            .collect()
    }

    /// A capture request: (VM, host, state, appraised seq).
    pub async fn capture_request(
        &self,
        request_id: &str,
        now: i64,
    ) -> Result<CaptureRequestState, StoreError> {
        let r = sqlx::query("SELECT vm_id, host_id, expires_at, picked_at, done_seq FROM capture_requests WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("capture request {request_id:?}")))?;
        let done: Option<i64> = r.try_get("done_seq")?;
        let picked: Option<i64> = r.try_get("picked_at")?;
        let expired = r.try_get::<i64, _>("expires_at")? < now;
        Ok(CaptureRequestState {
            vm_id: r.try_get("vm_id")?,
            host_id: r.try_get("host_id")?,
            state: match (done, picked, expired) {
                (Some(_), _, _) => vmseal_client::CaptureState::Done,
                (None, _, true) => vmseal_client::CaptureState::Expired,
                (None, Some(_), false) => vmseal_client::CaptureState::Picked,
                (None, None, false) => vmseal_client::CaptureState::Pending,
            },
            seq: done.map(|s| s as u64),
        })
    }

    /// The stored result of an accepted appraisal.
    pub async fn appraisal_result(&self, vm_id: &str, seq: u64) -> Result<String, StoreError> {
        let row = sqlx::query("SELECT result FROM appraisals WHERE vm_id = $1 AND seq = $2")
            .bind(vm_id)
            .bind(seq as i64)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("appraised snapshot #{seq} of VM {vm_id:?}"))
            })?;
        Ok(row.try_get("result")?)
    }

    /// Promote a new baseline version (never overwriting an old one), audited in the same
    /// transaction (`promote_baseline` with the snapshot, or `import_baseline` with the CoRIM's id,
    /// signer and SHA-256); returns its version.
    pub async fn promote_baseline(
        &self,
        vm_id: &str,
        source: BaselineSource<'_>,
        policy_digest: &Digest,
        regions: &[NewBaselineRegion],
        by: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
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
        sqlx::query("INSERT INTO baselines (vm_id, version, source_seq, promoted_by, promoted_at, policy_digest, corim, corim_signer) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(vm_id)
            .bind(version)
            .bind(source_seq)
            .bind(by)
            .bind(now)
            .bind(policy_digest.to_vec())
            .bind(corim)
            .bind(signer)
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
    pub async fn baseline_versions(&self, vm_id: &str) -> Result<Vec<BaselineInfo>, StoreError> {
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
                Ok(BaselineInfo {
                    version: r.try_get::<i64, _>("version")? as u64,
                    source_seq: u64::try_from(seq).ok(),
                    promoted_by: r.try_get("promoted_by")?,
                    promoted_at: r.try_get("promoted_at")?,
                    policy_digest: r
                        .try_get::<Option<Vec<u8>>, _>("policy_digest")?
                        .map(|d| digest(d, "baseline policy digest"))
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
        let Some(row) =
            sqlx::query("SELECT policy_digest FROM baselines WHERE vm_id = $1 AND version = $2")
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
        }))
    }

    /// Append to the hash-chained audit log.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        now: i64,
    ) -> Result<AuditEntry, StoreError> {
        let mut tx = self.pool.begin().await?;
        let e = append_audit(&mut tx, actor, action, detail, now).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Link the audit entries written off the commit path (PostgreSQL; see migration 0008) into
    /// the chain, all of them: every read of the chain does this first, the appraisal writer after
    /// each group, and the sweeper every few seconds (an entry a replica wrote before it died is
    /// linked by another). Returns how many were linked.
    pub async fn link_audit(&self) -> Result<u64, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(0);
        }
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let n = link_pending(&mut tx).await?;
            tx.commit().await?;
            total += n;
            if n < 1000 {
                return Ok(total);
            }
        }
    }

    /// Where the audit chain's head stands: the last entry's id (0 when empty) and hash.
    pub async fn audit_head(&self) -> Result<(i64, Digest), StoreError> {
        self.link_audit().await?;
        let r = sqlx::query("SELECT id, hash FROM audit_head WHERE one = 1")
            .fetch_one(&self.pool)
            .await?;
        let hash = match r.try_get::<Option<Vec<u8>>, _>("hash")? {
            Some(h) => digest(h, "audit head")?,
            None => [0; 32],
        };
        Ok((r.try_get("id")?, hash))
    }

    /// Keep a signed checkpoint of entry `audit_id` (once: another replica may have made the same).
    pub async fn record_checkpoint(
        &self,
        audit_id: i64,
        hash: &Digest,
        at: i64,
        token: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_checkpoints (audit_id, hash, at, token) VALUES ($1, $2, $3, $4) ON CONFLICT (audit_id) DO NOTHING")
            .bind(audit_id)
            .bind(hash.to_vec())
            .bind(at)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest signed checkpoints, newest first: (entry id, token).
    pub async fn checkpoints(&self, limit: u32) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT audit_id, token FROM audit_checkpoints ORDER BY audit_id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("audit_id")?, r.try_get("token")?)))
            .collect()
    }

    /// The whole audit log, oldest first, as `GET /v1/audit/export` serves it.
    pub async fn audit_export(&self) -> Result<Vec<vmseal_client::audit::AuditEntry>, StoreError> {
        self.link_audit().await?;
        let rows = sqlx::query(
            "SELECT id, at, actor, action, detail, prev_hash, hash FROM audit_log ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(vmseal_client::audit::AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    detail: r.try_get("detail")?,
                    prev_hash: hex::encode(r.try_get::<Vec<u8>, _>("prev_hash")?),
                    hash: hex::encode(r.try_get::<Vec<u8>, _>("hash")?),
                })
            })
            .collect()
    }

    /// Re-hash the whole audit log; returns the number of entries, or where it breaks.
    pub async fn verify_audit(&self) -> Result<u64, StoreError> {
        self.link_audit().await?;
        let rows = sqlx::query(
            "SELECT id, at, actor, action, detail, prev_hash, hash FROM audit_log ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut prev = vec![0u8; 32];
        for (n, r) in rows.iter().enumerate() {
            let id: i64 = r.try_get("id")?;
            let h = audit_hash(
                &prev,
                id,
                r.try_get("at")?,
                &r.try_get::<String, _>("actor")?,
                &r.try_get::<String, _>("action")?,
                &r.try_get::<String, _>("detail")?,
            );
            let stored: Vec<u8> = r.try_get("hash")?;
            let stored_prev: Vec<u8> = r.try_get("prev_hash")?;
            if id != n as i64 + 1 || stored_prev != prev || stored != h {
                return Err(StoreError::Corrupt(format!(
                    "audit log breaks at entry {id}"
                )));
            }
            prev = stored;
        }
        // The head must name the last entry: a chain cut short at its end shows here.
        let head = sqlx::query("SELECT id, hash FROM audit_head WHERE one = 1")
            .fetch_one(&self.pool)
            .await?;
        let head_hash = head
            .try_get::<Option<Vec<u8>>, _>("hash")?
            .unwrap_or_else(|| vec![0u8; 32]);
        if head.try_get::<i64, _>("id")? != rows.len() as i64 || head_hash != prev {
            return Err(StoreError::Corrupt(format!(
                "audit log ends at entry {} but its head names entry {}",
                rows.len(),
                head.try_get::<i64, _>("id")?
            )));
        }
        Ok(rows.len() as u64)
    }
}

pub use vmseal_client::VmSummary;

/// A capture request to store.
#[derive(Debug, Clone, Copy)]
pub struct NewCaptureRequest<'a> {
    /// Id.
    pub request_id: &'a str,
    /// VM.
    pub vm_id: &'a str,
    /// Its host.
    pub host_id: &'a str,
    /// The nonce the capture must answer.
    pub nonce: &'a [u8],
    /// Who asked.
    pub requested_by: &'a str,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A capture request handed to an agent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PickedCapture {
    /// Id.
    pub request_id: String,
    /// VM to capture.
    pub vm_id: String,
    /// Nonce to answer.
    #[serde(serialize_with = "hex_bytes")]
    pub nonce: Vec<u8>,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

/// Where a capture request stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureRequestState {
    /// VM.
    pub vm_id: String,
    /// Host.
    pub host_id: String,
    /// Where it stands.
    pub state: vmseal_client::CaptureState,
    /// The appraisal that answered it.
    pub seq: Option<u64>,
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

/// Append one entry to the hash-chained audit log inside `tx`. The head row's lock (held to the
/// end of `tx`) orders concurrent appends, across replicas too.
async fn append_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    actor: &str,
    action: &str,
    detail: &str,
    now: i64,
) -> Result<AuditEntry, StoreError> {
    // Entries committed before this one, waiting to be linked, go first (PostgreSQL).
    link_pending(tx).await?;
    // RETURNING sees the new id and the hash the statement did not change: the previous entry's.
    let head = sqlx::query("UPDATE audit_head SET id = id + 1 WHERE one = 1 RETURNING id, hash")
        .fetch_one(&mut **tx)
        .await?;
    let id: i64 = head.try_get("id")?;
    let prev = head
        .try_get::<Option<Vec<u8>>, _>("hash")?
        .unwrap_or_else(|| vec![0u8; 32]);
    let h = audit_hash(&prev, id, now, actor, action, detail);
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE one = 1")
        .bind(h.to_vec())
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO audit_log (id, at, actor, action, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(id)
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(detail)
        .bind(prev)
        .bind(h.to_vec())
        .execute(&mut **tx)
        .await?;
    Ok(AuditEntry {
        id,
        at: now,
        actor: actor.into(),
        action: action.into(),
        detail: detail.into(),
        hash: hex::encode(h),
    })
}

/// Whether `tx` runs on PostgreSQL (the backend whose appraisals write their audit entries to
/// `audit_pending`; see migration 0008).
fn on_postgres(tx: &sqlx::Transaction<'_, sqlx::Any>) -> bool {
    tx.backend_name() == "PostgreSQL"
}

/// The sortable key of a pending audit entry: the writer's clock (µs), a counter of this process,
/// and this process's random tag (see migration 0008).
fn pending_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| {
        let mut b = [0u8; 4];
        let _ = aws_lc_rs_fill(&mut b);
        hex::encode(b)
    });
    let micros = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    format!(
        "{micros:020}-{:012}-{tag}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Move the committed pending audit entries into the chain, in `pid` order, under the head's row
/// lock (PostgreSQL; nothing is ever pending on SQLite). Returns how many were linked.
async fn link_pending(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<u64, StoreError> {
    if !on_postgres(tx) {
        return Ok(0);
    }
    let head = sqlx::query("SELECT id, hash FROM audit_head WHERE one = 1 FOR UPDATE")
        .fetch_one(&mut **tx)
        .await?;
    let rows = sqlx::query(
        "SELECT pid, at, actor, action, detail FROM audit_pending ORDER BY pid LIMIT 1000",
    )
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut id: i64 = head.try_get("id")?;
    let mut prev = head
        .try_get::<Option<Vec<u8>>, _>("hash")?
        .unwrap_or_else(|| vec![0u8; 32]);
    let sql = format!(
        "INSERT INTO audit_log (id, at, actor, action, detail, prev_hash, hash) VALUES {}",
        appraisals::placeholders(rows.len(), 7)
    );
    // Placeholders only, numbered here: no value is ever spliced into the text.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    let mut pids = Vec::with_capacity(rows.len());
    for r in &rows {
        id += 1;
        let (at, actor, action, detail): (i64, String, String, String) = (
            r.try_get("at")?,
            r.try_get("actor")?,
            r.try_get("action")?,
            r.try_get("detail")?,
        );
        let h = audit_hash(&prev, id, at, &actor, &action, &detail);
        q = q
            .bind(id)
            .bind(at)
            .bind(actor)
            .bind(action)
            .bind(detail)
            .bind(prev.clone())
            .bind(h.to_vec());
        prev = h.to_vec();
        pids.push(r.try_get::<String, _>("pid")?);
    }
    q.execute(&mut **tx).await?;
    let sql = format!(
        "DELETE FROM audit_pending WHERE pid IN ({})",
        (1..=pids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for pid in pids {
        q = q.bind(pid);
    }
    q.execute(&mut **tx).await?;
    sqlx::query("UPDATE audit_head SET id = $1, hash = $2 WHERE one = 1")
        .bind(id)
        .bind(prev)
        .execute(&mut **tx)
        .await?;
    Ok(rows.len() as u64)
}

async fn upsert_host(
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
async fn revoke(
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

/// An UPDATE keyed by VM id touched `rows` rows: none means the VM is not registered.
fn vm_found(vm_id: &str, rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        return Err(StoreError::NotFound(format!("VM {vm_id:?}")));
    }
    Ok(())
}

fn aws_lc_rs_fill(b: &mut [u8]) -> Result<(), StoreError> {
    // The sealer's RNG (AWS-LC) is the one vmseal uses everywhere.
    vmseal_sealer::keys::random_bytes(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_database_urls_are_never_shown() {
        assert_eq!(
            redact_url("postgres://vmseal:s3cr:et@db.example:5432/vmseal"),
            "postgres://vmseal:***@db.example:5432/vmseal"
        );
        assert_eq!(
            redact_url("postgres://vmseal@127.0.0.1/x"),
            "postgres://vmseal@127.0.0.1/x"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/v.db"),
            "sqlite:///var/lib/v.db"
        );
    }

    /// Each named test, as `on_sqlite::NAME` and `on_postgres::NAME`.
    macro_rules! on_both {
        ($($name:ident),* $(,)?) => {
            mod on_sqlite {
                $(#[tokio::test]
                async fn $name() {
                    super::$name(super::Db::Sqlite).await
                })*
            }
            mod on_postgres {
                $(#[tokio::test]
                async fn $name() {
                    super::$name(super::Db::Postgres).await
                })*
            }
        };
    }
    pub(super) use on_both;

    on_both!(
        a_host_id_stays_with_its_hardware_unless_an_admin_replaces_it,
        a_token_enrols_once_and_re_enrolment_keeps_the_vms,
        vms_need_an_enrolled_host_and_unique_ids,
        nonces_are_single_use_per_vm_and_expire,
        the_chain_advances_once_per_sequence,
        baselines_are_versioned_never_overwritten,
        audit_log_is_hash_chained_and_tampering_shows,
        every_acknowledged_write_is_durable,
        a_removed_vm_leaves_nothing_and_its_id_can_be_registered_again,
        a_rebuilt_host_continues_chains_only_with_the_admins_leave,
    );

    async fn every_acknowledged_write_is_durable(db: Db) {
        let (_d, s) = empty(db).await;
        let how = s.durability().await.unwrap();
        match db {
            Db::Sqlite => assert!(
                how.contains("synchronous=FULL") && how.contains("wal"),
                "{how}"
            ),
            Db::Postgres => {
                assert!(
                    how.contains("synchronous_commit=on") && how.contains("fsync=on"),
                    "{how}"
                )
            }
        }
    }

    async fn a_removed_vm_leaves_nothing_and_its_id_can_be_registered_again(db: Db) {
        let (_d, s) = store(db).await;
        let p0 = ChainPoint {
            seq: 0,
            digest: [1; 32],
        };
        s.record_appraisal("vm1", None, p0, &V, &NO, 1)
            .await
            .unwrap();
        let region = NewBaselineRegion {
            name: "code".into(),
            class: RegionClass::Code,
            severity: Severity::Critical,
            hash: HashAlg::Sha256,
            leaves: vec![[7; 32]],
            ranges: vec![[0x1000, 0x2000]],
        };
        s.promote_baseline(
            "vm1",
            BaselineSource::Snapshot(0),
            &[3; 32],
            &[region],
            "admin",
            5,
        )
        .await
        .unwrap();
        s.issue_nonce("vm1", 60, 3).await.unwrap();
        assert!(matches!(
            s.register_vm("vm1", "h1", 70, 6).await,
            Err(StoreError::Conflict(m)) if m.contains("vms remove")
        ));
        let before = s.vm_record("vm1").await.unwrap().incarnation;
        let r = s.remove_vm("vm1").await.unwrap();
        assert_eq!(
            (r.host_id.as_str(), r.last_seq, r.appraisals, r.baselines),
            ("h1", Some(0), 1, 1)
        );
        for t in [
            "appraisals",
            "baselines",
            "baseline_regions",
            "nonces",
            "vms",
        ] {
            let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {t} WHERE vm_id = 'vm1'"
            )))
            .fetch_one(&s.pool)
            .await
            .unwrap()
            .get("n");
            assert_eq!(n, 0, "{t}");
        }
        assert!(matches!(
            s.remove_vm("vm1").await,
            Err(StoreError::NotFound(_))
        ));
        // Registered again: a new incarnation, a chain from #0, no baseline.
        s.register_vm("vm1", "h1", 70, 7).await.unwrap();
        let rec = s.vm_record("vm1").await.unwrap();
        assert_ne!(rec.incarnation, before);
        assert_eq!((rec.last, rec.baseline_version), (None, None));
    }

    async fn a_rebuilt_host_continues_chains_only_with_the_admins_leave(db: Db) {
        let (_d, s) = store(db).await;
        s.record_appraisal(
            "vm1",
            None,
            ChainPoint {
                seq: 0,
                digest: [1; 32],
            },
            &V,
            &NO,
            1,
        )
        .await
        .unwrap();
        let token = |id: &'static str, restart: bool| {
            let s = &s;
            async move {
                s.create_enrollment_token(&NewToken {
                    token_id: id,
                    created_by: "admin",
                    host_id: Some("h1"),
                    require: None,
                    replace: false,
                    restart_chains: restart,
                    hardware: None,
                    now: 100,
                    expires_at: 200,
                })
                .await
                .unwrap()
            }
        };
        let rebuilt = |restart: bool| HostEnrollment {
            host_id: "h1",
            intermediate_der: b"rebuilt-intermediate",
            hardware_root: "tpm:e1",
            agent_serial: "05",
            restart_chains: restart,
            hardware_checked: "[]",
            ..Default::default()
        };
        token("t1", false).await;
        let pinned = s.vm_record("vm1").await.unwrap().intermediate_digest;
        assert!(matches!(
            s.complete_enrollment("t1", None, &rebuilt(false), 150).await,
            Err(StoreError::ChainsExist(m)) if m.contains("--restart-chains") && m.contains("vm1")
        ));
        // Nothing changed: the token is still usable, the old key still pinned.
        assert!(matches!(
            s.enrollment_token("t1", 150).await.unwrap(),
            TokenState::Usable { .. }
        ));
        assert_eq!(
            s.vm_record("vm1").await.unwrap().intermediate_digest,
            pinned
        );
        token("t2", true).await;
        let (sha, continued) = s
            .complete_enrollment("t2", None, &rebuilt(true), 150)
            .await
            .unwrap();
        assert_eq!(continued, vec![("vm1".to_owned(), 1)]);
        let rec = s.vm_record("vm1").await.unwrap();
        assert_eq!(rec.intermediate_digest, sha);
        assert_eq!(
            rec.last.map(|l| l.seq),
            Some(0),
            "the chain goes on from its head"
        );
        // The same intermediate enrolling again (an agent certificate renewed) needs no leave.
        token("t3", false).await;
        let again = HostEnrollment {
            agent_serial: "06",
            ..rebuilt(false)
        };
        s.complete_enrollment("t3", None, &again, 160)
            .await
            .unwrap();
    }

    /// Which engine a test runs on: every store test runs on both.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Db {
        Sqlite,
        Postgres,
    }

    /// Keeps a test's database alive.
    #[allow(dead_code)]
    pub(super) enum Guard {
        Dir(tempfile::TempDir),
        Pg(vmseal_testkit::postgres::PgDatabase),
    }

    /// An empty, migrated store on `db`.
    pub(super) async fn empty(db: Db) -> (Guard, Store) {
        let (g, url) = match db {
            Db::Sqlite => {
                let d = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", d.path().join("v.db").display());
                (Guard::Dir(d), url)
            }
            Db::Postgres => {
                let pg = tokio::task::spawn_blocking(vmseal_testkit::postgres::PgDatabase::create)
                    .await
                    .unwrap()
                    .unwrap();
                let url = pg.url.clone();
                (Guard::Pg(pg), url)
            }
        };
        (g, Store::open(&url).await.unwrap())
    }

    /// A store with host h1 enrolled and its VM vm1 (threshold 70) registered.
    pub(super) async fn store(db: Db) -> (Guard, Store) {
        let (d, s) = empty(db).await;
        s.enroll_host(
            &HostEnrollment {
                host_id: "h1",
                intermediate_der: b"intermediate-der",
                ak_name: b"ak",
                insecure_anchor: false,
                hardware_root: "tpm:e1",
                agent_serial: "01",
                replace: false,
                restart_chains: false,
                hardware_checked: "[]",
                hardware_policy: None,
            },
            100,
        )
        .await
        .unwrap();
        s.register_vm("vm1", "h1", 70, 100).await.unwrap();
        (d, s)
    }

    async fn a_token_enrols_once_and_re_enrolment_keeps_the_vms(db: Db) {
        let (_d, s) = store(db).await;
        s.create_enrollment_token(&NewToken {
            token_id: "t1",
            created_by: "admin",
            host_id: Some("h1"),
            require: Some("snp"),
            replace: false,
            restart_chains: false,
            hardware: None,
            now: 100,
            expires_at: 200,
        })
        .await
        .unwrap();
        assert_eq!(
            s.enrollment_token("t1", 150).await.unwrap(),
            TokenState::Usable {
                host_id: Some("h1".into()),
                require: Some("snp".into()),
                replace: false,
                restart_chains: false,
                hardware: None,
            }
        );
        assert_eq!(
            s.enrollment_token("t1", 201).await.unwrap(),
            TokenState::Expired
        );
        assert_eq!(
            s.enrollment_token("nope", 150).await.unwrap(),
            TokenState::Unknown
        );
        let e = |der: &'static [u8]| HostEnrollment {
            host_id: "h1",
            intermediate_der: der,
            ak_name: b"ak2",
            insecure_anchor: false,
            hardware_root: "tpm:e1;snp:c1",
            agent_serial: "02",
            replace: false,
            restart_chains: false,
            hardware_checked: "[]",
            hardware_policy: None,
        };
        // A token limited to h1 does not enrol another host.
        let other = HostEnrollment {
            host_id: "h2",
            ..e(b"x")
        };
        assert!(matches!(
            s.complete_enrollment("t1", None, &other, 150).await,
            Err(StoreError::Conflict(_))
        ));
        // h1 already has vm1 (from `store()`): re-enrolment replaces the pin, keeps the VM.
        let (sha, continued) = s
            .complete_enrollment("t1", None, &e(b"new-intermediate"), 150)
            .await
            .unwrap();
        assert!(continued.is_empty(), "vm1 has no chain yet");
        assert_eq!(s.vm_record("vm1").await.unwrap().intermediate_digest, sha);
        assert_eq!(
            s.enrollment_token("t1", 150).await.unwrap(),
            TokenState::Used
        );
        assert!(matches!(
            s.complete_enrollment("t1", None, &e(b"again"), 150).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.vm_record("vm1").await.unwrap().intermediate_digest,
            sha,
            "a refused enrollment changes nothing"
        );
        // The first agent certificate was revoked by the re-enrolment.
        assert!(s.revoked_serials().await.unwrap().contains("01"));
    }

    async fn a_host_id_stays_with_its_hardware_unless_an_admin_replaces_it(db: Db) {
        let (_d, s) = store(db).await; // h1: tpm:e1, agent certificate 01
        let host = |root: &'static str, serial: &'static str, replace: bool| HostEnrollment {
            host_id: "h1",
            intermediate_der: b"other-intermediate",
            ak_name: b"ak9",
            insecure_anchor: false,
            hardware_root: root,
            agent_serial: serial,
            replace,
            restart_chains: false,
            hardware_checked: "[]",
            hardware_policy: None,
        };
        let token = |id: &str| {
            let id = id.to_owned();
            let s = &s;
            async move {
                s.create_enrollment_token(&NewToken {
                    token_id: &id,
                    created_by: "admin",
                    host_id: None,
                    require: None,
                    replace: false,
                    restart_chains: false,
                    hardware: None,
                    now: 100,
                    expires_at: 900,
                })
                .await
                .unwrap();
            }
        };
        // Another TPM claims h1 with a token that does not name it: refused, nothing changes,
        // and the token is not used up.
        token("t2").await;
        let before = s.vm_record("vm1").await.unwrap().intermediate_digest;
        assert!(matches!(
            s.complete_enrollment("t2", None, &host("tpm:e2", "03", false), 150).await,
            Err(StoreError::IdentityChanged(m)) if m.contains("--replace")
        ));
        assert_eq!(
            s.vm_record("vm1").await.unwrap().intermediate_digest,
            before
        );
        assert!(matches!(
            s.enrollment_token("t2", 150).await.unwrap(),
            TokenState::Usable { .. }
        ));
        assert!(!s.revoked_serials().await.unwrap().contains("01"));
        // Dropping the TPM anchor is no continuation either.
        assert!(matches!(
            s.complete_enrollment("t2", None, &host("snp:c1", "03", false), 150)
                .await,
            Err(StoreError::IdentityChanged(_))
        ));
        // The same TPM, with an SNP anchor added: continuous.
        s.complete_enrollment("t2", None, &host("tpm:e1;snp:c1", "03", false), 150)
            .await
            .unwrap();
        assert!(s.revoked_serials().await.unwrap().contains("01"));
        // An admin's replacement hands the id to new hardware.
        token("t3").await;
        s.complete_enrollment("t3", None, &host("tpm:e3", "04", true), 160)
            .await
            .unwrap();
        assert_eq!(
            s.host_hardware_root("h1").await.unwrap().as_deref(),
            Some("tpm:e3")
        );
        assert!(s.revoked_serials().await.unwrap().contains("03"));
        // Disabling revokes the current certificate.
        assert_eq!(
            s.disable_host("h1", 170).await.unwrap().as_deref(),
            Some("04")
        );
        assert!(s.revoked_serials().await.unwrap().contains("04"));
        assert!(matches!(
            s.disable_host("nope", 170).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(hardware_root_continues("", "tpm:x"));
        assert!(hardware_root_continues("tpm:a", "snp:b;tpm:a"));
        assert!(!hardware_root_continues("tpm:a;snp:b", "tpm:a"));
    }

    async fn vms_need_an_enrolled_host_and_unique_ids(db: Db) {
        let (_d, s) = store(db).await;
        assert!(matches!(
            s.register_vm("vm2", "nohost", 70, 1).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.register_vm("vm1", "h1", 70, 1).await,
            Err(StoreError::Conflict(_))
        ));
        let r = s.vm_record("vm1").await.unwrap();
        assert_eq!(
            r.intermediate_digest,
            HashAlg::Sha256.hash(&[b"intermediate-der"])
        );
        assert_eq!((r.threshold, r.last, r.policy_digest), (70, None, None));
        let text = "name = \"p\"\nversion = 1\n[[region]]\nname = \"c\"\nclass = \"code\"\nseverity = \"critical\"\ngpa = { start = 0, len = 0x1000 }\n";
        s.assign_policy("vm1", &[7; 32], text).await.unwrap();
        let r = s.vm_record("vm1").await.unwrap();
        assert_eq!(r.policy_digest, Some([7; 32]));
        assert_eq!(r.policy.unwrap().regions[0].name, "c");
        assert_eq!(
            s.policy_text("vm1").await.unwrap(),
            Some(([7; 32], text.to_owned()))
        );
        assert!(matches!(
            s.vm_record("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }

    async fn nonces_are_single_use_per_vm_and_expire(db: Db) {
        let (_d, s) = store(db).await;
        s.register_vm("vm2", "h1", 70, 100).await.unwrap();
        let point = |seq: u64| ChainPoint {
            seq,
            digest: [seq as u8 + 1; 32],
        };
        fn with(n: &[u8]) -> Verdict<'_> {
            Verdict {
                nonce: Some(n),
                ..V
            }
        }
        let n = s.issue_nonce("vm1", 60, 1000).await.unwrap();
        assert!(s.nonce_valid("vm1", &n, 1001).await.unwrap());
        assert!(!s.nonce_valid("vm2", &n, 1001).await.unwrap());
        // Another VM's appraisal cannot use it; nothing is written.
        assert!(matches!(
            s.record_appraisal("vm2", None, point(0), &with(&n), &NO, 1001)
                .await,
            Err(StoreError::NonceUsed)
        ));
        assert_eq!(s.vm_record("vm2").await.unwrap().last, None);
        // Its own VM's appraisal uses it up; a second use is refused.
        s.record_appraisal("vm1", None, point(0), &with(&n), &NO, 1001)
            .await
            .unwrap();
        assert!(!s.nonce_valid("vm1", &n, 1002).await.unwrap());
        assert!(matches!(
            s.record_appraisal("vm1", Some(0), point(1), &with(&n), &NO, 1002)
                .await,
            Err(StoreError::NonceUsed)
        ));
        // After its lifetime it is refused too.
        let n2 = s.issue_nonce("vm1", 60, 1000).await.unwrap();
        assert!(!s.nonce_valid("vm1", &n2, 1061).await.unwrap(), "expired");
        assert!(matches!(
            s.record_appraisal("vm1", Some(0), point(1), &with(&n2), &NO, 1061)
                .await,
            Err(StoreError::NonceUsed)
        ));
        assert_eq!(s.vm_record("vm1").await.unwrap().last, Some(point(0)));
    }

    pub(super) static NO: AlertPlan = AlertPlan {
        raise: None,
        resolve_threshold: None,
        recovered_from: Vec::new(),
    };

    pub(super) const V: Verdict<'static> = Verdict {
        score: 100,
        tier: "affirming",
        json: "{}",
        nonce: None,
        layout: None,
    };

    async fn the_chain_advances_once_per_sequence(db: Db) {
        let (_d, s) = store(db).await;
        let p0 = ChainPoint {
            seq: 0,
            digest: [1; 32],
        };
        s.record_appraisal("vm1", None, p0, &V, &NO, 1)
            .await
            .unwrap();
        assert!(matches!(
            s.record_appraisal("vm1", None, p0, &V, &NO, 1).await,
            Err(StoreError::Conflict(_))
        ));
        let p1 = ChainPoint {
            seq: 1,
            digest: [2; 32],
        };
        s.record_appraisal("vm1", Some(0), p1, &V, &NO, 2)
            .await
            .unwrap();
        assert!(matches!(
            s.record_appraisal("vm1", Some(0), p1, &V, &NO, 2).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.vm_record("vm1").await.unwrap().last, Some(p1));
        // Two verdicts in the audit chain; the refused ones left no entry.
        assert_eq!(s.verify_audit().await.unwrap(), 2);
        let last: String =
            sqlx::query("SELECT detail FROM audit_log WHERE action = 'appraisal' ORDER BY id DESC")
                .fetch_one(&s.pool)
                .await
                .unwrap()
                .get("detail");
        assert!(last.contains("\"seq\":1"), "{last}");

        // With a nonce: used up in the same transaction; a second use writes nothing.
        let n = s.issue_nonce("vm1", 60, 3).await.unwrap();
        let with = Verdict {
            nonce: Some(&n),
            ..V
        };
        let p2 = ChainPoint {
            seq: 2,
            digest: [3; 32],
        };
        s.record_appraisal("vm1", Some(1), p2, &with, &NO, 4)
            .await
            .unwrap();
        let p3 = ChainPoint {
            seq: 3,
            digest: [4; 32],
        };
        assert!(matches!(
            s.record_appraisal("vm1", Some(2), p3, &with, &NO, 5).await,
            Err(StoreError::NonceUsed)
        ));
        assert_eq!(s.vm_record("vm1").await.unwrap().last, Some(p2));
        assert_eq!(s.verify_audit().await.unwrap(), 3);
    }

    async fn baselines_are_versioned_never_overwritten(db: Db) {
        let (_d, s) = store(db).await;
        assert!(s.active_baseline("vm1").await.unwrap().is_none());
        let region = |tag: u8| NewBaselineRegion {
            name: "code".into(),
            class: RegionClass::Code,
            severity: Severity::Critical,
            hash: HashAlg::Sha256,
            leaves: vec![[tag; 32], [tag + 1; 32], [tag + 2; 32]],
            ranges: vec![[0x1000, 0x3000]],
        };
        assert_eq!(
            s.promote_baseline(
                "vm1",
                BaselineSource::Snapshot(0),
                &[3; 32],
                &[region(1)],
                "admin",
                5
            )
            .await
            .unwrap(),
            1
        );
        assert_eq!(
            s.promote_baseline(
                "vm1",
                BaselineSource::Snapshot(4),
                &[4; 32],
                &[region(9)],
                "admin",
                6
            )
            .await
            .unwrap(),
            2
        );
        let b = s.active_baseline("vm1").await.unwrap().unwrap();
        assert_eq!(b.version, 2);
        assert_eq!(b.policy_digest, Some([4; 32]));
        assert_eq!(b.regions[0].ranges, Some(vec![[0x1000, 0x3000]]));
        assert_eq!(b.regions[0].tree.leaves()[0], [9; 32]);
        let old: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM baseline_regions WHERE vm_id = 'vm1' AND version = 1",
        )
        .fetch_one(&s.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
        assert_eq!(old, 1, "version 1 is kept");
    }

    async fn audit_log_is_hash_chained_and_tampering_shows(db: Db) {
        let (_d, s) = store(db).await;
        s.audit("admin", "register_vm", "{\"vm\":\"vm1\"}", 1)
            .await
            .unwrap();
        s.audit("admin", "promote_baseline", "{\"v\":1}", 2)
            .await
            .unwrap();
        s.audit("verifier", "appraisal", "{\"score\":100}", 3)
            .await
            .unwrap();
        assert_eq!(s.verify_audit().await.unwrap(), 3);
        sqlx::query("UPDATE audit_log SET detail = '{\"v\":2}' WHERE id = 2")
            .execute(&s.pool)
            .await
            .unwrap();
        assert!(
            matches!(s.verify_audit().await, Err(StoreError::Corrupt(m)) if m.contains("entry 2"))
        );
    }
}
