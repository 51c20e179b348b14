//! Writing appraisals, in groups.
//!
//! An appraisal's write is one transaction: the VM's chain advances (only from the sequence number
//! the appraisal was made against), the appraisal and its audit entry are stored, the nonce it
//! answered is used up, the alerts it raises or resolves are recorded — or nothing is. Its answer
//! goes out only after that transaction committed.
//!
//! Concurrent appraisals commit **together** (group commit, as databases do with their own logs):
//! the first writer to find the store idle becomes the leader and writes every appraisal waiting
//! at that moment in one transaction; those arriving meanwhile wait for the next. Under no load a
//! group is one appraisal and nothing waits; under load one `BEGIN`/`COMMIT` (and one WAL flush)
//! serves many, and the common appraisal — no nonce, no layout change, no alert — costs one
//! conditional `UPDATE` of its VM, while its appraisal row, its audit entry and the resolution of
//! its refusal alerts go in with the group's in multi-row statements. Appraisals that carry more
//! (a nonce, an alert to raise or resolve) run their own statements inside the group,
//! each in a savepoint, so that one refused by the database (a nonce used meanwhile) rolls back
//! alone. A group that fails as a whole (the database went away mid-way) is rolled back and each
//! of its appraisals is written again on its own, so one bad appraisal never fails another.
//!
//! The group is written by a spawned task holding the leader's lock, so a request cancelled while
//! it leads (a client hanging up) cancels neither the group nor the others' answers.

use std::sync::Arc;

use sqlx::Row;

use super::{Alert, AlertPlan, Store, StoreError, alerts, append_audit, audit_hash};
use crate::appraise::{ChainPoint, Layout};

/// Most appraisals one group commits.
pub const MAX_GROUP: usize = 64;

/// One appraisal to store (see [`Store::record_appraisal`]).
#[derive(Debug, Clone)]
struct Write {
    vm_id: String,
    expected: Option<u64>,
    point: ChainPoint,
    score: u8,
    tier: String,
    json: String,
    nonce: Option<Vec<u8>>,
    layout: Option<(Vec<u8>, Layout)>,
    plan: AlertPlan,
    now: i64,
}

impl Write {
    /// Whether it needs statements of its own (else it joins the group's multi-row statements; a
    /// new boot's layout rides on its chain's `UPDATE`).
    fn has_extras(&self) -> bool {
        self.nonce.is_some()
            || self.plan.raise.is_some()
            || self.plan.resolve_threshold.is_some()
            || !self.plan.recovered_from.is_empty()
    }
}

type Outcome = Result<Option<Alert>, StoreError>;

struct Job {
    write: Write,
    done: tokio::sync::oneshot::Sender<Outcome>,
}

/// The appraisals waiting for a group, and the leaders' permits: one on SQLite (one writer),
/// [`POSTGRES_LEADERS`] on PostgreSQL, whose appraisals no longer queue for the audit chain's head
/// (their entries are linked after the commit; see migration 0008).
pub(super) struct GroupCommit {
    waiting: std::sync::Mutex<Vec<Job>>,
    leaders: Arc<tokio::sync::Semaphore>,
    /// A linker of pending audit entries is running; another run is wanted after it.
    linking: std::sync::atomic::AtomicBool,
    relink: std::sync::atomic::AtomicBool,
    /// Groups written, and the appraisals in them.
    groups: std::sync::atomic::AtomicU64,
    grouped: std::sync::atomic::AtomicU64,
}

/// Groups written at once on PostgreSQL.
pub const POSTGRES_LEADERS: usize = 4;

impl GroupCommit {
    pub(super) fn new(leaders: usize) -> Self {
        Self {
            waiting: Default::default(),
            leaders: Arc::new(tokio::sync::Semaphore::new(leaders.max(1))),
            linking: Default::default(),
            relink: Default::default(),
            groups: Default::default(),
            grouped: Default::default(),
        }
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// The outcome stored with an appraisal.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    /// Trust score.
    pub score: u8,
    /// Tier name.
    pub tier: &'a str,
    /// The full result, JSON.
    pub json: &'a str,
    /// The verifier nonce the evidence answered, used up with the appraisal.
    pub nonce: Option<&'a [u8]>,
    /// The VM's guest boot and the ranges first seen in it, after this appraisal.
    pub layout: Option<&'a (Vec<u8>, Layout)>,
}

fn internal(what: &str) -> StoreError {
    StoreError::Corrupt(format!("the appraisal writer {what}"))
}

impl Store {
    /// Record an accepted appraisal, atomically and durably, committed with whatever other
    /// appraisals are being written at the same moment (group commit: one transaction for all of
    /// them, each answered only after it committed).
    /// The VM's chain advances from `expected` (None: the VM's first evidence) to `point`;
    /// another submission that moved it meanwhile makes this a `Conflict` and stores nothing. A
    /// nonce already used is `NonceUsed`, and stores nothing either. Returns the alert raised.
    pub async fn record_appraisal(
        &self,
        vm_id: &str,
        expected: Option<u64>,
        point: ChainPoint,
        verdict: &Verdict<'_>,
        plan: &AlertPlan,
        now: i64,
    ) -> Result<Option<Alert>, StoreError> {
        let write = Write {
            vm_id: vm_id.to_owned(),
            expected,
            point,
            score: verdict.score,
            tier: verdict.tier.to_owned(),
            json: verdict.json.to_owned(),
            nonce: verdict.nonce.map(<[u8]>::to_vec),
            layout: verdict.layout.cloned(),
            plan: plan.clone(),
            now,
        };
        let (done, mut answer) = tokio::sync::oneshot::channel();
        self.group
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Job { write, done });
        loop {
            let lead = self
                .group
                .leaders
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| internal("closed"))?;
            // A leader before us may have written it already: it answers before letting go.
            match answer.try_recv() {
                Ok(outcome) => return outcome,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(internal("stopped before answering"));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            let group: Vec<Job> = {
                let mut w = self.group.waiting.lock().unwrap_or_else(|p| p.into_inner());
                let n = w.len().min(MAX_GROUP);
                w.drain(..n).collect()
            };
            if group.is_empty() {
                // Another leader is writing ours (PostgreSQL runs several): wait for its answer.
                drop(lead);
                return answer
                    .await
                    .unwrap_or_else(|_| Err(internal("stopped before answering")));
            }
            let store = self.clone();
            let task = tokio::spawn(async move {
                let _lead = lead;
                store.write_group(group).await;
            });
            if task.await.is_err() {
                return Err(internal("failed"));
            }
        }
    }

    /// Link the audit entries the groups wrote off the commit path (PostgreSQL), in a task of its
    /// own: one linker at a time in this process, run again when groups committed meanwhile.
    fn schedule_link(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.backend != super::Backend::Postgres {
            return;
        }
        self.group.relink.store(true, SeqCst);
        if self.group.linking.swap(true, SeqCst) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            while store.group.relink.swap(false, SeqCst) {
                if let Err(e) = store.link_audit().await {
                    tracing::warn!("linking audit entries: {e}; the next group or read retries");
                }
            }
            store.group.linking.store(false, SeqCst);
            // A group that committed between the last run and now: link it too.
            if store.group.relink.load(SeqCst) {
                store.schedule_link();
            }
        });
    }

    /// Groups of appraisals committed so far by this store, and the appraisals in them (their
    /// ratio is the mean group size; exported on `/metrics`).
    pub fn group_commits(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.group.groups.load(Relaxed),
            self.group.grouped.load(Relaxed),
        )
    }

    /// Write a group: in one transaction, or each on its own when the transaction fails.
    async fn write_group(&self, group: Vec<Job>) {
        use std::sync::atomic::Ordering::Relaxed;
        if group.is_empty() {
            return;
        }
        self.group.groups.fetch_add(1, Relaxed);
        self.group.grouped.fetch_add(group.len() as u64, Relaxed);
        // The writes (each with its result JSON) move out of the jobs: nothing is copied.
        let (writes, answers): (Vec<Write>, Vec<_>) =
            group.into_iter().map(|j| (j.write, j.done)).unzip();
        let outcomes = match self.try_group(&writes).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                if writes.len() > 1 {
                    tracing::warn!(
                        "a group of {} appraisals failed ({e}); writing each on its own",
                        writes.len()
                    );
                }
                let mut outcomes = Vec::with_capacity(writes.len());
                for w in &writes {
                    outcomes.push(self.write_alone(w).await);
                }
                outcomes
            }
        };
        // The kept VM records (SQLite) follow what committed, before anyone hears of it.
        if let Some(r) = &self.records {
            for (w, o) in writes.iter().zip(&outcomes) {
                match o {
                    Ok(None) if w.plan.raise.is_none() => r.advanced(
                        &w.vm_id,
                        super::records::Advance {
                            point: w.point,
                            tier: &w.tier,
                            layout: w.layout.as_ref(),
                            threshold_resolved: w.plan.resolve_threshold.is_some(),
                        },
                    ),
                    _ => r.forget(&w.vm_id),
                }
            }
        }
        for (done, outcome) in answers.into_iter().zip(outcomes) {
            let _ = done.send(outcome);
        }
        self.schedule_link();
    }

    /// One appraisal in its own transaction.
    async fn write_alone(&self, w: &Write) -> Outcome {
        let mut tx = self.pool.begin().await?;
        let raised = write_one(&mut tx, w).await?;
        tx.commit().await?;
        Ok(raised)
    }

    /// The group in one transaction: each appraisal's outcome, or the error that failed the
    /// transaction (nothing of it is stored then).
    async fn try_group(&self, writes: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes: Vec<Option<Outcome>> = (0..writes.len()).map(|_| None).collect();
        // Plain appraisals whose chain advanced, waiting for the group's multi-row statements.
        let mut plain: Vec<usize> = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            if w.has_extras() {
                // Its own statements, after the plain ones before it (the audit chain keeps the
                // group's order), in a savepoint that a refusal rolls back alone.
                flush_plain(&mut tx, writes, &mut plain, &mut outcomes).await?;
                let mut sp = sqlx::Acquire::begin(&mut *tx).await?;
                match write_one(&mut sp, w).await {
                    Ok(raised) => {
                        sp.commit().await?;
                        outcomes[i] = Some(Ok(raised));
                    }
                    Err(e @ (StoreError::Conflict(_) | StoreError::NonceUsed)) => {
                        sp.rollback().await?;
                        outcomes[i] = Some(Err(e));
                    }
                    Err(e) => return Err(e),
                }
            } else if advance_chain(&mut tx, w).await? {
                plain.push(i);
            } else {
                outcomes[i] = Some(Err(conflict(w)));
            }
        }
        flush_plain(&mut tx, writes, &mut plain, &mut outcomes).await?;
        tx.commit().await?;
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| internal("lost an appraisal")))
            .collect()
    }
}

fn conflict(w: &Write) -> StoreError {
    StoreError::Conflict(format!(
        "VM {:?} advanced past #{:?} meanwhile",
        w.vm_id, w.expected
    ))
}

/// Advance the VM's chain from `w.expected` to `w.point` (and keep the guest boot's layout, when
/// the appraisal saw a new one): false when another submission moved it meanwhile (nothing
/// changed then). Evidence arriving ends a silence alert (the sweeper resolves it); a score back
/// at or above the threshold ends the below-threshold one.
async fn advance_chain(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    w: &Write,
) -> Result<bool, StoreError> {
    macro_rules! advance {
        ($layout:literal, $cond:literal) => {
            concat!(
                "UPDATE vms SET last_seq = $1, last_digest = $2, last_tier = $3, last_seen = $4, silent_alert = NULL, ",
                "threshold_alert = CASE WHEN $5 = 1 THEN NULL ELSE threshold_alert END",
                $layout,
                " WHERE vm_id = $6 AND ",
                $cond
            )
        };
    }
    let sql = match (w.expected, &w.layout) {
        (None, None) => advance!("", "last_seq IS NULL AND $7 = 0"),
        (Some(_), None) => advance!("", "last_seq = $7"),
        (None, Some(_)) => advance!(", boot = $8, layout = $9", "last_seq IS NULL AND $7 = 0"),
        (Some(_), Some(_)) => advance!(", boot = $8, layout = $9", "last_seq = $7"),
    };
    let mut q = sqlx::query(sql)
        .bind(w.point.seq as i64)
        .bind(w.point.digest.to_vec())
        .bind(w.tier.clone())
        .bind(w.now)
        .bind(i64::from(w.plan.resolve_threshold.is_some()))
        .bind(w.vm_id.clone())
        .bind(w.expected.map_or(0, |e| e as i64));
    if let Some((boot, layout)) = &w.layout {
        let layout = serde_json::to_string(layout)
            .map_err(|e| StoreError::Corrupt(format!("layout: {e}")))?;
        q = q.bind(boot.clone()).bind(layout);
    }
    let r = q.execute(&mut **tx).await?;
    Ok(r.rows_affected() == 1)
}

/// The audit entry of an appraisal.
fn audit_detail(w: &Write) -> String {
    serde_json::json!({
        "vm": w.vm_id,
        "seq": w.point.seq,
        "evidence": hex::encode(w.point.digest),
        "score": w.score,
        "tier": w.tier,
    })
    .to_string()
}

/// Everything of one appraisal, statement by statement (alone, or in a group's savepoint).
async fn write_one(tx: &mut sqlx::Transaction<'_, sqlx::Any>, w: &Write) -> Outcome {
    if !advance_chain(tx, w).await? {
        return Err(conflict(w));
    }
    // Accepted evidence ends the VM's refusal episodes (their alerts stay in the log).
    sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = $1 WHERE vm_id = $2 AND kind = 'evidence_refused' AND state <> 'resolved'")
        .bind(w.now)
        .bind(w.vm_id.clone())
        .execute(&mut **tx)
        .await?;
    bind_appraisal(multi_row(INSERT_APPRAISALS, 1, 7), w)
        .execute(&mut **tx)
        .await?;
    if let Some(n) = &w.nonce {
        let used =
            sqlx::query("DELETE FROM nonces WHERE nonce = $1 AND vm_id = $2 AND expires_at >= $3")
                .bind(n.clone())
                .bind(w.vm_id.clone())
                .bind(w.now)
                .execute(&mut **tx)
                .await?;
        if used.rows_affected() != 1 {
            return Err(StoreError::NonceUsed);
        }
        sqlx::query("UPDATE capture_requests SET done_seq = $1 WHERE vm_id = $2 AND nonce = $3 AND done_seq IS NULL")
            .bind(w.point.seq as i64)
            .bind(w.vm_id.clone())
            .bind(n.clone())
            .execute(&mut **tx)
            .await?;
    }
    // The verdict joins the audit chain in the same transaction: stored together or not at all.
    // On PostgreSQL it is written pending (linked after the commit), unless an alert raised with
    // it needs its id from the chain now.
    if w.plan.raise.is_none() && super::on_postgres(tx) {
        sqlx::query(
            "INSERT INTO audit_pending (pid, at, actor, action, detail) VALUES ($1, $2, 'verifier', 'appraisal', $3)",
        )
        .bind(super::pending_id())
        .bind(w.now)
        .bind(audit_detail(w))
        .execute(&mut **tx)
        .await?;
    } else {
        append_audit(tx, "verifier", "appraisal", &audit_detail(w), w.now).await?;
    }
    if let Some(id) = w.plan.resolve_threshold {
        alerts::resolve(tx, id, w.now).await?;
    }
    for tier in &w.plan.recovered_from {
        sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = $1 WHERE vm_id = $2 AND kind = 'tier_drop' AND tier = $3 AND state <> 'resolved'")
            .bind(w.now)
            .bind(w.vm_id.clone())
            .bind(*tier)
            .execute(&mut **tx)
            .await?;
    }
    match &w.plan.raise {
        Some(a) => Ok(Some(alerts::raise(tx, a, w.now).await?)),
        None => Ok(None),
    }
}

/// The appraisal rows' statement, without its values (seven columns).
const INSERT_APPRAISALS: &str =
    "INSERT INTO appraisals (vm_id, seq, evidence, score, tier, result, received_at) VALUES";

type AnyQuery = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// `w`'s appraisal row's seven values, bound to `q` in [`INSERT_APPRAISALS`]' order.
fn bind_appraisal(q: AnyQuery, w: &Write) -> AnyQuery {
    q.bind(w.vm_id.clone())
        .bind(w.point.seq as i64)
        .bind(w.point.digest.to_vec())
        .bind(i64::from(w.score))
        .bind(w.tier.clone())
        .bind(w.json.clone())
        .bind(w.now)
}

/// `prefix` followed by `rows` rows of `cols` placeholders: a multi-row statement whose values
/// are all bound afterwards, in order — no value is ever spliced into its text.
pub(super) fn multi_row(prefix: &str, rows: usize, cols: usize) -> AnyQuery {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{prefix} {}",
        placeholders(rows, cols)
    )))
}

/// `($1, $2, …), (…)`: `rows` rows of `cols` placeholders, numbered from `$1`.
pub(super) fn placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Store the plain appraisals whose chains advanced: their rows, their audit entries (in group
/// order, chained in one append) and the end of their VMs' refusal episodes, in four statements.
async fn flush_plain(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    writes: &[Write],
    plain: &mut Vec<usize>,
    outcomes: &mut [Option<Outcome>],
) -> Result<(), StoreError> {
    if plain.is_empty() {
        return Ok(());
    }
    let ws: Vec<&Write> = plain.iter().map(|&i| &writes[i]).collect();
    let mut q = multi_row(INSERT_APPRAISALS, ws.len(), 7);
    for w in &ws {
        q = bind_appraisal(q, w);
    }
    q.execute(&mut **tx).await?;
    // Accepted evidence ends the VM's refusal episodes (their alerts stay in the log).
    let sql = format!(
        "UPDATE alerts SET state = 'resolved', resolved_at = $1 WHERE kind = 'evidence_refused' AND state <> 'resolved' AND vm_id IN ({})",
        (0..ws.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ws[0].now);
    for w in &ws {
        q = q.bind(w.vm_id.clone());
    }
    q.execute(&mut **tx).await?;
    if super::on_postgres(tx) {
        // Off the commit path: written pending, linked into the chain after the commit.
        let mut q = multi_row(
            "INSERT INTO audit_pending (pid, at, actor, action, detail) VALUES",
            ws.len(),
            5,
        );
        for w in &ws {
            q = q
                .bind(super::pending_id())
                .bind(w.now)
                .bind("verifier")
                .bind("appraisal")
                .bind(audit_detail(w));
        }
        q.execute(&mut **tx).await?;
    } else {
        // The audit entries: ids reserved on the head row at once, hashes chained here.
        let n = ws.len() as i64;
        let head =
            sqlx::query("UPDATE audit_head SET id = id + $1 WHERE one = 1 RETURNING id, hash")
                .bind(n)
                .fetch_one(&mut **tx)
                .await?;
        let last: i64 = head.try_get("id")?;
        let mut prev = head
            .try_get::<Option<Vec<u8>>, _>("hash")?
            .unwrap_or_else(|| vec![0u8; 32]);
        let mut q = multi_row(
            "INSERT INTO audit_log (id, at, actor, action, detail, prev_hash, hash) VALUES",
            ws.len(),
            7,
        );
        for (k, w) in ws.iter().enumerate() {
            let id = last - n + 1 + k as i64;
            let detail = audit_detail(w);
            let h = audit_hash(&prev, id, w.now, "verifier", "appraisal", &detail);
            q = q
                .bind(id)
                .bind(w.now)
                .bind("verifier")
                .bind("appraisal")
                .bind(detail)
                .bind(prev.clone())
                .bind(h.to_vec());
            prev = h.to_vec();
        }
        q.execute(&mut **tx).await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE one = 1")
            .bind(prev)
            .execute(&mut **tx)
            .await?;
    }
    for &i in plain.iter() {
        outcomes[i] = Some(Ok(None));
    }
    plain.clear();
    Ok(())
}

impl Store {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Db, V, below_threshold, on_both, store};
    use super::*;

    #[test]
    fn placeholders_number_rows_and_columns() {
        assert_eq!(placeholders(1, 2), "($1, $2)");
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    on_both!(concurrent_appraisals_commit_in_groups_and_each_gets_its_own_outcome);

    /// `SELECT COUNT(*)` of `table`.
    async fn count(pool: &sqlx::AnyPool, table: &str) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(pool)
        .await
        .unwrap()
        .get("n")
    }

    /// Whether `audit_log`'s ids run 1..=N without a gap.
    async fn audit_ids_are_gap_free(pool: &sqlx::AnyPool) -> bool {
        let r = sqlx::query("SELECT COUNT(*) AS n, MAX(id) AS m FROM audit_log")
            .fetch_one(pool)
            .await
            .unwrap();
        r.get::<i64, _>("n") == r.get::<i64, _>("m")
    }

    fn point(seq: u64, tag: u8) -> ChainPoint {
        ChainPoint {
            seq,
            digest: [tag; 32],
        }
    }

    /// Many appraisals at once: 24 VMs advancing, two racing for the same sequence number of
    /// one VM, one answering a nonce and one reusing it, one raising an alert. Each gets its own
    /// outcome, groups form, the audit chain stays whole and gap-free, and what was refused left
    /// nothing behind.
    async fn concurrent_appraisals_commit_in_groups_and_each_gets_its_own_outcome(db: Db) {
        let (_d, s) = store(db).await;
        for i in 0..24 {
            s.register_vm(&format!("g{i}"), "h1", 70, 100)
                .await
                .unwrap();
        }
        let nonce = s.issue_nonce("vm1", 60, 100).await.unwrap();
        let raise = AlertPlan {
            raise: Some(below_threshold("g0", 1)),
            ..AlertPlan::default()
        };
        // Each VM's first evidence, alone, so the racing ones below build on it.
        for i in 0..24 {
            s.record_appraisal(
                &format!("g{i}"),
                None,
                point(0, 1),
                &V,
                &AlertPlan::default(),
                101,
            )
            .await
            .unwrap();
        }
        let (groups_before, grouped_before) = s.group_commits();
        let audited_before = s.verify_audit().await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for round in 0..4u64 {
            for i in 0..24 {
                let s = s.clone();
                let plan = if i == 0 && round == 0 {
                    raise.clone()
                } else {
                    AlertPlan::default()
                };
                tasks.spawn(async move {
                    // Rounds of the same VM wait for each other: each builds on the previous.
                    let vm = format!("g{i}");
                    loop {
                        let last = s.vm_record(&vm).await.unwrap().last.map(|l| l.seq);
                        if last == Some(round) {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    let r = s
                        .record_appraisal(&vm, Some(round), point(round + 1, 2), &V, &plan, 102)
                        .await;
                    ("plain", vm, r.map(|a| a.is_some()))
                });
            }
        }
        // Two racing for vm1's first sequence number: exactly one wins.
        for tag in [7u8, 8] {
            let s = s.clone();
            tasks.spawn(async move {
                let r = s
                    .record_appraisal("vm1", None, point(0, tag), &V, &AlertPlan::default(), 103)
                    .await;
                ("race", "vm1".to_owned(), r.map(|a| a.is_some()))
            });
        }
        let mut raced = Vec::new();
        let mut raised = 0;
        while let Some(r) = tasks.join_next().await {
            let (kind, vm, r) = r.unwrap();
            match kind {
                "race" => raced.push(r),
                _ => {
                    assert!(r.is_ok(), "{vm}: {r:?}");
                    raised += usize::from(r.unwrap());
                }
            }
        }
        assert_eq!(raised, 1, "the one alert was raised, once");
        assert_eq!(raced.iter().filter(|r| r.is_ok()).count(), 1, "{raced:?}");
        assert!(
            raced
                .iter()
                .any(|r| matches!(r, Err(StoreError::Conflict(_)))),
            "{raced:?}"
        );
        // The nonce: used once, refused the second time, in groups too.
        let with = Verdict {
            nonce: Some(&nonce),
            ..V
        };
        let none = AlertPlan::default();
        let (a, b) = tokio::join!(
            s.record_appraisal("vm1", Some(0), point(1, 9), &with, &none, 104),
            s.record_appraisal("g1", Some(4), point(5, 9), &with, &none, 104),
        );
        assert!(a.is_ok(), "{a:?}");
        assert!(matches!(b, Err(StoreError::NonceUsed)), "{b:?}");
        assert_eq!(
            s.vm_record("g1").await.unwrap().last,
            Some(point(4, 2)),
            "nothing of b stored"
        );
        let (groups, grouped) = s.group_commits();
        let (groups, grouped) = (groups - groups_before, grouped - grouped_before);
        assert!(
            grouped > groups,
            "{grouped} appraisals in {groups} groups: some were committed together"
        );
        // 96 rounds + the race's winner + the nonce's: one audit entry each, plus the alert's;
        // the chain verifies from its first entry and has no gap.
        let n = s.verify_audit().await.unwrap();
        assert_eq!(n - audited_before, 96 + 1 + 1 + 1);
        assert!(
            audit_ids_are_gap_free(&s.pool).await,
            "audit ids are gap-free"
        );
        assert_eq!(count(&s.pool, "appraisals").await, 24 + 96 + 1 + 1);
    }

    /// Two replicas (two stores over one PostgreSQL database) appraising at once: every appraisal
    /// commits without the chain head, and the chain that results is whole, gap-free, holds each
    /// appraisal once, and an alert raised after entries committed gets a later id than theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgres_replicas_write_audit_entries_off_the_commit_path_and_the_chain_stays_whole()
     {
        let (guard, a) = store(Db::Postgres).await;
        let super::super::tests::Guard::Pg(pg) = &guard else {
            unreachable!("a PostgreSQL store")
        };
        let b = Store::open(&pg.url).await.unwrap();
        for i in 0..16 {
            a.register_vm(&format!("r{i}"), "h1", 70, 100)
                .await
                .unwrap();
        }
        let audited_before = a.verify_audit().await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                let vm = format!("r{i}");
                for seq in 0..5u64 {
                    let expected = seq.checked_sub(1);
                    s.record_appraisal(
                        &vm,
                        expected,
                        point(seq, seq as u8 + 1),
                        &V,
                        &AlertPlan::default(),
                        200,
                    )
                    .await
                    .unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        // What a replica that died right after committing leaves: committed, not yet linked.
        sqlx::query("INSERT INTO audit_pending (pid, at, actor, action, detail) VALUES ($1, 201, 'verifier', 'appraisal', '{\"orphan\":true}')")
            .bind(super::super::pending_id())
            .execute(&a.pool)
            .await
            .unwrap();
        // An alert raised now (on the other replica) is appended after everything committed before.
        let raise = AlertPlan {
            raise: Some(below_threshold("r0", 5)),
            ..AlertPlan::default()
        };
        let alert = b
            .record_appraisal("r0", Some(4), point(5, 9), &V, &raise, 202)
            .await
            .unwrap()
            .expect("raised");
        let orphan_id: i64 =
            sqlx::query("SELECT id FROM audit_log WHERE detail = '{\"orphan\":true}'")
                .fetch_one(&a.pool)
                .await
                .unwrap()
                .get("id");
        assert!(
            alert.alert_id > orphan_id,
            "{} after {orphan_id}",
            alert.alert_id
        );
        // The whole chain: 80 appraisals + the orphan + r0's sixth appraisal + its alert.
        assert_eq!(
            b.verify_audit().await.unwrap() - audited_before,
            80 + 1 + 1 + 1
        );
        assert!(
            audit_ids_are_gap_free(&a.pool).await,
            "audit ids are gap-free"
        );
        assert_eq!(
            count(&a.pool, "audit_pending").await,
            0,
            "every read of the chain links what is pending first"
        );
        // Each appraisal once in the chain.
        for i in 0..16 {
            for seq in 0..5u64 {
                let n: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'appraisal' AND detail LIKE $1 AND detail LIKE $2",
                )
                .bind(format!("%\"vm\":\"r{i}\"%"))
                .bind(format!("%\"seq\":{seq},%"))
                .fetch_one(&a.pool)
                .await
                .unwrap()
                .get("n");
                assert_eq!(n, 1, "r{i} #{seq}");
            }
        }
    }
}
