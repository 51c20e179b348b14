//! The hash-chained audit log: appends under the head's lock, entries written pending and linked
//! (PostgreSQL), checkpoints, export and verification.

use super::{Backend, Store, StoreError, appraisals, aws_lc_rs_fill, digest};
use sqlx::Row;
use vmseal_client::audit::AuditEntry;
use vmseal_sealer::merkle::Digest;

impl Store {
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
    pub async fn audit_export(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.link_audit().await?;
        let rows = sqlx::query(
            "SELECT id, at, actor, action, detail, prev_hash, hash FROM audit_log ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
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

/// An entry's hash: the one the offline check (`vmseal-certs verify-audit`) computes.
pub(super) use vmseal_client::audit::entry_hash as audit_hash;

/// Append one entry to the hash-chained audit log inside `tx`. The head row's lock (held to the
/// end of `tx`) orders concurrent appends, across replicas too.
pub(super) async fn append_audit(
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
        .bind(prev.clone())
        .bind(h.to_vec())
        .execute(&mut **tx)
        .await?;
    Ok(AuditEntry {
        id,
        at: now,
        actor: actor.into(),
        action: action.into(),
        detail: detail.into(),
        prev_hash: hex::encode(&prev),
        hash: hex::encode(h),
    })
}

/// Whether `tx` runs on PostgreSQL (the backend whose appraisals write their audit entries to
/// `audit_pending`; see migration 0008).
pub(super) fn on_postgres(tx: &sqlx::Transaction<'_, sqlx::Any>) -> bool {
    tx.backend_name() == "PostgreSQL"
}

/// The sortable key of a pending audit entry: the writer's clock (µs), a counter of this process,
/// and this process's random tag (see migration 0008).
pub(super) fn pending_id() -> String {
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
pub(super) async fn link_pending(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<u64, StoreError> {
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
    let mut q = appraisals::multi_row(
        "INSERT INTO audit_log (id, at, actor, action, detail, prev_hash, hash) VALUES",
        rows.len(),
        7,
    );
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
