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

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use vmseal_sealer::merkle::Digest;

/// `Vec<Type>` from `rows`, each `Type { a, b, … }` with every field read from the column of its
/// name (a `Result` whose error is the first column that does not read).
macro_rules! collect_rows {
    ($rows:expr, $t:ident { $($f:ident),* $(,)? }) => {
        $rows
            .iter()
            .map(|r| Ok($t { $($f: r.try_get(stringify!($f))?),* }))
            .collect()
    };
}

mod alerts;
mod appraisals;
mod audit;
mod baselines;
mod captures;
mod hosts;
mod records;
mod vms;

pub use alerts::{
    Alert, AlertPlan, ClaimedDelivery, DELIVERY_LEASE_S, DeliveryState, MAX_DELIVERY_ATTEMPTS,
    NewAlert, Refusal, Silence, Webhook, backoff_s,
};
pub use appraisals::{MAX_GROUP, POSTGRES_LEADERS, Verdict};
use audit::{append_audit, audit_hash, on_postgres, pending_id};
pub use baselines::{BaselineSource, NewBaselineRegion};
pub use captures::{CaptureRequestState, NewCaptureRequest, PickedCapture};
pub use hosts::{
    HostEnrollment, HostToReappraise, NewToken, PendingEnrollment, TokenState,
    hardware_root_continues,
};
pub use vms::RemovedVm;
use vms::vm_found;

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
    /// The VM records a SQLite store keeps (it is its database's only writer; see
    /// `records`); none on PostgreSQL.
    records: Option<std::sync::Arc<records::VmRecords>>,
}

/// A SQLite database another process holds (another verifier on the same state) is named as
/// such; any other error is itself.
fn in_use(sqlite: bool, url: &str, e: sqlx::Error) -> StoreError {
    let locked = matches!(&e, sqlx::Error::Database(d) if d.message().contains("locked"));
    if sqlite && locked {
        StoreError::Unavailable(format!(
            "the SQLite database {} is in use by another process (another verifier on the same \
             state?): SQLite serves one verifier, which holds its file; stop the other, or run \
             several verifiers on PostgreSQL (docs/operations.md, PostgreSQL and several replicas)",
            url.split('?').next().unwrap_or(url)
        ))
    } else {
        e.into()
    }
}

fn digest(v: Vec<u8>, what: &str) -> Result<Digest, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
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
        if sqlite {
            // One direct connection first, as the pool's would be: a pool only says "timed
            // out", this names another process holding the file.
            use sqlx::Connection as _;
            let mut c = sqlx::AnyConnection::connect(&url).await?;
            let mut r = Ok(());
            for q in [
                "PRAGMA locking_mode=EXCLUSIVE",
                "PRAGMA busy_timeout=2000",
                "SELECT COUNT(*) FROM sqlite_master",
            ] {
                r = sqlx::query(q).execute(&mut c).await.map(drop);
                if r.is_err() {
                    break;
                }
            }
            let _ = c.close().await;
            r.map_err(|e| in_use(true, &url, e))?;
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
                        // This process is the database's only user: set before the first
                        // access, so the WAL needs no shared memory and another process (another
                        // verifier on the same state) is refused at open. That is what lets the
                        // store keep VM records in memory (`store::records`).
                        sqlx::query("PRAGMA locking_mode=EXCLUSIVE")
                            .execute(&mut *conn)
                            .await?;
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
            .await
            .map_err(|e| in_use(sqlite, &url, e))?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => in_use(sqlite, &url, e),
            e => StoreError::Migrate(e),
        })?;
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
            records: sqlite.then(Default::default),
        })
    }

    /// Close the database (a SQLite store lets go of its file: another may open it now).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Any VM record may have changed (after the commit of a write to `vms`, `hosts` or
    /// `baselines`; see `records`).
    pub(super) fn vms_changed(&self) {
        if let Some(r) = &self.records {
            r.clear();
        }
    }

    /// `vm`'s record may have changed (after the commit).
    pub(super) fn vm_changed(&self, vm: &str) {
        if let Some(r) = &self.records {
            r.forget(vm);
        }
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
}

pub use vmseal_client::VmSummary;

fn aws_lc_rs_fill(b: &mut [u8]) -> Result<(), StoreError> {
    // The sealer's RNG (AWS-LC) is the one vmseal uses everywhere.
    vmseal_sealer::keys::random_bytes(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appraise::ChainPoint;
    use sqlx::Row;
    use vmseal_sealer::claims::{RegionClass, Severity};
    use vmseal_sealer::merkle::HashAlg;

    /// Every statement of the store that writes a table a VM record is read from (`vms`,
    /// `hosts`, `baselines`) is in a function that tells the kept records after its commit
    /// (`vms_changed`, `vm_changed`, or the group writer's `advanced`/`forget`), or in one named
    /// here with the reason it need not: a writer that forgets would let a SQLite verifier
    /// appraise with a record the database no longer holds.
    #[test]
    fn every_writer_of_a_vm_record_tells_the_records() {
        let exempt = [
            (
                "upsert_host",
                "enroll_host and complete_enrollment, its callers, clear the records",
            ),
            (
                "advance_chain",
                "write_group reports each appraisal's outcome to the records",
            ),
            (
                "raise",
                "only a below-threshold alert marks its VM, and only appraisal writes raise one; \
                 write_group forgets those VMs",
            ),
            ("set_schedule", "expect_every is not in a VM record"),
            ("sweep_silent", "silent_alert is not in a VM record"),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let write = regex_lite::Regex::new(
            r"(?i)(UPDATE|INSERT INTO|DELETE FROM)\s+(vms|hosts|baselines|baseline_regions)\b",
        )
        .unwrap();
        let fn_start =
            regex_lite::Regex::new(r"\n\s*(?:pub(?:\(\w+\))? )?(?:async )?fn (\w+)").unwrap();
        let mut seen = std::collections::BTreeSet::<String>::new();
        let mut writers = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // The tests' own statements are not the store's.
            let text = text.split("#[cfg(test)]").next().unwrap();
            let starts: Vec<(usize, &str)> = fn_start
                .captures_iter(text)
                .map(|c| (c.get(0).unwrap().start(), c.get(1).unwrap().as_str()))
                .collect();
            for (i, (at, name)) in starts.iter().enumerate() {
                let end = starts.get(i + 1).map_or(text.len(), |n| n.0);
                let body = &text[*at..end];
                if !write.is_match(body) {
                    continue;
                }
                writers += 1;
                seen.insert(name.to_string());
                let tells = body.contains("vms_changed()")
                    || body.contains("vm_changed(")
                    || (body.contains(".advanced(") && body.contains(".forget("));
                assert!(
                    tells || exempt.iter().any(|(n, _)| n == name),
                    "{}: fn {name} writes a VM record's table but does not tell the kept records \
                     (call self.vms_changed() or self.vm_changed(vm) after its commit)",
                    path.display()
                );
            }
        }
        for (name, why) in &exempt {
            assert!(
                seen.contains(*name),
                "fn {name} is exempt ({why}) but no longer writes a VM record's table: drop it"
            );
        }
        assert!(
            writers >= 15,
            "only {writers} writers found: is the scan still right?"
        );
    }

    /// A SQLite database serves one verifier: a second store on the same file (another verifier
    /// on the same state) is refused at open, naming the cause and the fix, and the first goes on.
    #[tokio::test]
    async fn a_second_verifier_on_one_sqlite_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", d.path().join("v.db").display());
        let a = Store::open(&url).await.unwrap();
        a.register_vm("vm-x", "h0", 70, 1).await.unwrap_err(); // (no such host: a read)
        let e = Store::open(&url).await.unwrap_err().to_string();
        assert!(
            e.contains("in use by another process") && e.contains("PostgreSQL"),
            "{e}"
        );
        assert!(
            a.vm_record("vm-x")
                .await
                .is_err_and(|e| matches!(e, StoreError::NotFound(_)))
        );
        a.close().await;
        let b = Store::open(&url).await.unwrap();
        b.close().await;
    }

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
        first_appraisal(&s).await;
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
            None,
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

    /// vm1's first appraisal (#0, evidence digest `[1; 32]`) recorded at time 1; its chain point.
    pub(super) async fn first_appraisal(s: &Store) -> ChainPoint {
        let p0 = ChainPoint {
            seq: 0,
            digest: [1; 32],
        };
        s.record_appraisal("vm1", None, p0, &V, &NO, 1)
            .await
            .unwrap();
        p0
    }

    /// The alert a score of 0 raises on `vm`'s snapshot `seq` (threshold 70).
    pub(super) fn below_threshold(vm: &str, seq: u64) -> NewAlert {
        NewAlert {
            vm_id: vm.into(),
            kind: "below_threshold",
            code: None,
            seq: Some(seq),
            score: Some(0),
            tier: Some("contraindicated".into()),
            threshold: 70,
            message: format!("VM {vm}: trust score 0 is below its threshold 70"),
        }
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
        let p0 = first_appraisal(&s).await;
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
        let promote = |seq: u64, policy: u8, tag: u8, now: i64| {
            let s = s.clone();
            async move {
                s.promote_baseline(
                    "vm1",
                    BaselineSource::Snapshot(seq),
                    &[policy; 32],
                    &[region(tag)],
                    None,
                    "admin",
                    now,
                )
                .await
                .unwrap()
            }
        };
        assert_eq!(promote(0, 3, 1, 5).await, 1);
        assert_eq!(promote(4, 4, 9, 6).await, 2);
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
