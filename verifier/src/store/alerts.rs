//! Alerts, their outbox of webhook deliveries, silences and the webhooks themselves.
//!
//! An alert is raised inside the transaction of the appraisal (or silence check) that caused it,
//! and its deliveries — one row per webhook — are written in that same transaction: the outbox
//! pattern, so an alert is never lost between "stored" and "sent". Replicas claim due deliveries
//! with a lease; see `0003_alerts.sql`.

use sqlx::Row;
use sqlx::any::AnyRow;

pub use vmseal_client::{Alert, DeliveryState, Silence, Webhook};

use super::{Backend, Store, StoreError, append_audit};

/// Seconds a replica owns a claimed delivery; a webhook call is cut off well before (10 s).
pub const DELIVERY_LEASE_S: i64 = 60;
/// Attempts before a delivery is given up (backoff 5 s doubling to 1 h: the last attempt comes
/// 15.4 hours after the first, as docs/api.md says).
pub const MAX_DELIVERY_ATTEMPTS: i64 = 25;

/// An alert to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    /// VM.
    pub vm_id: String,
    /// `below_threshold`, `tier_drop`, `silent` or `evidence_refused`.
    pub kind: &'static str,
    /// For `evidence_refused`: the refusal code.
    pub code: Option<String>,
    /// The appraisal that raised it.
    pub seq: Option<u64>,
    /// Its score.
    pub score: Option<u8>,
    /// Its tier.
    pub tier: Option<String>,
    /// The VM's threshold then.
    pub threshold: u8,
    /// What happened, for people.
    pub message: String,
}

/// Evidence of a known VM that the verifier refused.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    /// VM.
    pub vm_id: &'a str,
    /// Its refusal code.
    pub code: &'a str,
    /// Why, for people.
    pub message: &'a str,
    /// The sequence number the evidence claimed, when it could be read.
    pub seq: Option<u64>,
    /// The VM's threshold.
    pub threshold: u8,
}

/// What an appraisal does to alerts (decided by [`crate::alerts::plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertPlan {
    /// Raise this alert.
    pub raise: Option<NewAlert>,
    /// Resolve this below-threshold alert: the score is back at or above the threshold.
    pub resolve_threshold: Option<i64>,
    /// Resolve the VM's unresolved `tier_drop` alerts that dropped to one of these tiers: the
    /// tier recovered above them.
    pub recovered_from: Vec<&'static str>,
}

/// A delivery this replica claimed and must now make.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The alert.
    pub alert: Alert,
    /// Webhook name.
    pub webhook: String,
    /// Its URL when the alert was raised.
    pub url: String,
    /// This attempt's number (1 = first).
    pub attempt: i64,
}

macro_rules! alert_columns {
    () => {
        "alert_id, vm_id, kind, seq, score, tier, threshold, message, created_at, state, acked_by, acked_at, resolved_at, silenced, code, count"
    };
}

fn alert_row(r: &AnyRow) -> Result<Alert, StoreError> {
    Ok(Alert {
        alert_id: r.try_get("alert_id")?,
        vm_id: r.try_get("vm_id")?,
        kind: r.try_get("kind")?,
        seq: r.try_get::<Option<i64>, _>("seq")?.map(|s| s as u64),
        score: r
            .try_get::<Option<i64>, _>("score")?
            .map(|s| s.clamp(0, 100) as u8),
        tier: r.try_get("tier")?,
        threshold: r.try_get::<i64, _>("threshold")?.clamp(0, 100) as u8,
        message: r.try_get("message")?,
        created_at: r.try_get("created_at")?,
        state: r.try_get("state")?,
        acked_by: r.try_get("acked_by")?,
        acked_at: r.try_get("acked_at")?,
        resolved_at: r.try_get("resolved_at")?,
        silenced: r.try_get::<i64, _>("silenced")? != 0,
        code: r.try_get("code")?,
        count: r.try_get::<i64, _>("count")?.max(1) as u64,
    })
}

/// Raise `a` inside `tx`: its audit entry (whose id it takes), the alert, and — unless a silence
/// covers it — one outbox row per webhook.
pub(super) async fn raise(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    a: &NewAlert,
    now: i64,
) -> Result<Alert, StoreError> {
    let detail = serde_json::json!({
        "vm": a.vm_id, "kind": a.kind, "seq": a.seq, "score": a.score, "tier": a.tier,
        "threshold": a.threshold, "message": a.message,
    })
    .to_string();
    let entry = append_audit(tx, "verifier", "alert", &detail, now).await?;
    let silenced = sqlx::query(
        "SELECT silence_id FROM silences WHERE (vm_id = $1 OR vm_id IS NULL) AND ends_at > $2 LIMIT 1",
    )
    .bind(&a.vm_id)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?
    .is_some();
    sqlx::query("INSERT INTO alerts (alert_id, vm_id, kind, seq, score, tier, threshold, message, created_at, state, silenced, code) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $11)")
        .bind(entry.id)
        .bind(&a.vm_id)
        .bind(a.kind)
        .bind(a.seq.map(|s| s as i64))
        .bind(a.score.map(i64::from))
        .bind(a.tier.as_deref())
        .bind(i64::from(a.threshold))
        .bind(&a.message)
        .bind(now)
        .bind(i64::from(silenced))
        .bind(a.code.as_deref())
        .execute(&mut **tx)
        .await?;
    if !silenced {
        sqlx::query("INSERT INTO alert_deliveries (alert_id, webhook, url, attempts, next_attempt_at) SELECT $1, name, url, 0, $2 FROM webhooks")
            .bind(entry.id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    let mark = match a.kind {
        "below_threshold" => Some("UPDATE vms SET threshold_alert = $1 WHERE vm_id = $2"),
        "silent" => Some("UPDATE vms SET silent_alert = $1 WHERE vm_id = $2"),
        _ => None,
    };
    if let Some(sql) = mark {
        sqlx::query(sql)
            .bind(entry.id)
            .bind(&a.vm_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(Alert {
        alert_id: entry.id,
        vm_id: a.vm_id.clone(),
        kind: a.kind.into(),
        seq: a.seq,
        score: a.score,
        tier: a.tier.clone(),
        threshold: a.threshold,
        message: a.message.clone(),
        created_at: now,
        state: "open".into(),
        acked_by: None,
        acked_at: None,
        resolved_at: None,
        silenced,
        code: a.code.clone(),
        count: 1,
    })
}

/// Mark alert `id` resolved inside `tx`.
pub(super) async fn resolve(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE alerts SET state = 'resolved', resolved_at = $1 WHERE alert_id = $2 AND state <> 'resolved'",
    )
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Exponential backoff after `attempt` failed attempts: 5 s, 10 s, 20 s, … up to one hour.
pub fn backoff_s(attempt: i64) -> i64 {
    let shift = attempt.clamp(1, 20) - 1;
    (5i64 << shift).min(3600)
}

impl Store {
    /// Alerts, newest first: only those in `state` (open, acknowledged, resolved; `active` for
    /// open or acknowledged) and of `vm_id` when given, only those after `after` (oldest first
    /// then, for streams), at most `limit`.
    pub async fn alerts(
        &self,
        state: Option<&str>,
        vm_id: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut q = concat!("SELECT ", alert_columns!(), " FROM alerts WHERE 1 = 1").to_owned();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        match state {
            Some("active") => q.push_str(" AND state <> 'resolved'"),
            Some(_) => q.push_str(&format!(" AND state = {}", next())),
            None => {}
        }
        if vm_id.is_some() {
            q.push_str(&format!(" AND vm_id = {}", next()));
        }
        if after.is_some() {
            q.push_str(&format!(" AND alert_id > {} ORDER BY alert_id", next()));
        } else {
            q.push_str(" ORDER BY alert_id DESC");
        }
        q.push_str(&format!(" LIMIT {}", next()));
        // Audited: `q` is built from constant fragments and numbered placeholders only.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
        if let Some(s) = state.filter(|s| *s != "active") {
            query = query.bind(s);
        }
        if let Some(v) = vm_id {
            query = query.bind(v);
        }
        if let Some(a) = after {
            query = query.bind(a);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(alert_row).collect()
    }

    /// One alert.
    pub async fn alert(&self, alert_id: i64) -> Result<Alert, StoreError> {
        let r = sqlx::query(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE alert_id = $1"
        ))
        .bind(alert_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("alert {alert_id}")))?;
        alert_row(&r)
    }

    /// The deliveries of an alert.
    pub async fn deliveries(&self, alert_id: i64) -> Result<Vec<DeliveryState>, StoreError> {
        let rows = sqlx::query("SELECT webhook, attempts, delivered_at, failed_at, last_error, next_attempt_at FROM alert_deliveries WHERE alert_id = $1 ORDER BY webhook")
            .bind(alert_id)
            .fetch_all(&self.pool)
            .await?;
        collect_rows!(
            rows,
            DeliveryState {
                webhook,
                attempts,
                delivered_at,
                failed_at,
                last_error,
                next_attempt_at
            }
        )
    }

    /// Acknowledge an open alert (a person has seen it); it stays unresolved until the VM
    /// recovers. Acknowledging twice is harmless; a resolved alert cannot be acknowledged.
    pub async fn ack_alert(&self, alert_id: i64, by: &str, now: i64) -> Result<Alert, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE alerts SET state = 'acknowledged', acked_by = $1, acked_at = $2 WHERE alert_id = $3 AND state = 'open'")
            .bind(by)
            .bind(now)
            .bind(alert_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 1 {
            let detail = serde_json::json!({ "alert": alert_id }).to_string();
            append_audit(&mut tx, by, "ack_alert", &detail, now).await?;
        }
        tx.commit().await?;
        let a = self.alert(alert_id).await?;
        if a.state == "resolved" && r.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "alert {alert_id} is already resolved"
            )));
        }
        Ok(a)
    }

    /// Add a silence (audited).
    pub async fn add_silence(&self, s: &Silence) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(vm) = &s.vm_id {
            let found = sqlx::query("SELECT vm_id FROM vms WHERE vm_id = $1")
                .bind(vm)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Err(StoreError::NotFound(format!("VM {vm:?}")));
            }
        }
        sqlx::query("INSERT INTO silences (silence_id, vm_id, ends_at, reason, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&s.silence_id)
            .bind(s.vm_id.as_deref())
            .bind(s.ends_at)
            .bind(&s.reason)
            .bind(&s.created_by)
            .bind(s.created_at)
            .execute(&mut *tx)
            .await?;
        let detail = serde_json::to_string(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        append_audit(&mut tx, &s.created_by, "silence", &detail, s.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Silences still in force at `now`.
    pub async fn silences(&self, now: i64) -> Result<Vec<Silence>, StoreError> {
        let rows = sqlx::query("SELECT silence_id, vm_id, ends_at, reason, created_by, created_at FROM silences WHERE ends_at > $1 ORDER BY ends_at")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        collect_rows!(
            rows,
            Silence {
                silence_id,
                vm_id,
                ends_at,
                reason,
                created_by,
                created_at
            }
        )
    }

    /// End a silence now.
    pub async fn end_silence(
        &self,
        silence_id: &str,
        by: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT vm_id, created_at FROM silences WHERE silence_id = $1 AND ends_at > $2",
        )
        .bind(silence_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("silence {silence_id:?} in force")))?;
        let vm: Option<String> = row.try_get("vm_id")?;
        let since: i64 = row.try_get("created_at")?;
        sqlx::query("UPDATE silences SET ends_at = $1 WHERE silence_id = $2")
            .bind(now)
            .bind(silence_id)
            .execute(&mut *tx)
            .await?;
        // What it held back stays recorded (marked silenced) and is not delivered now: a silence
        // is for known work nobody should be paged about afterwards. Say how much that was.
        let held: i64 = sqlx::query("SELECT COUNT(*) AS n FROM alerts WHERE silenced = 1 AND created_at >= $1 AND created_at <= $2 AND ($3 IS NULL OR vm_id = $3)")
            .bind(since)
            .bind(now)
            .bind(vm.as_deref())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let detail = serde_json::json!({ "silence": silence_id, "held_back": held }).to_string();
        append_audit(&mut tx, by, "end_silence", &detail, now).await?;
        tx.commit().await?;
        Ok(held.max(0) as u64)
    }

    /// Add a webhook (audited); alerts raised from now on are delivered to it.
    pub async fn add_webhook(&self, w: &Webhook) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhooks (name, url, created_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&w.name)
        .bind(&w.url)
        .bind(&w.created_by)
        .bind(w.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!(
                "a webhook named {:?} exists; remove it first",
                w.name
            )),
            e => StoreError::from(e),
        })?;
        let detail = serde_json::json!({ "name": w.name, "url": w.url }).to_string();
        append_audit(&mut tx, &w.created_by, "add_webhook", &detail, w.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The webhooks.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let rows =
            sqlx::query("SELECT name, url, created_by, created_at FROM webhooks ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        collect_rows!(
            rows,
            Webhook {
                name,
                url,
                created_by,
                created_at
            }
        )
    }

    /// Remove a webhook (audited); its undelivered alerts are given up.
    pub async fn remove_webhook(&self, name: &str, by: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("DELETE FROM webhooks WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("webhook {name:?}")));
        }
        sqlx::query("UPDATE alert_deliveries SET failed_at = $1, last_error = 'webhook removed' WHERE webhook = $2 AND delivered_at IS NULL AND failed_at IS NULL")
            .bind(now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let detail = serde_json::json!({ "name": name }).to_string();
        append_audit(&mut tx, by, "remove_webhook", &detail, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claim up to `limit` due deliveries for `owner` (a replica) for [`DELIVERY_LEASE_S`]. A row
    /// is due when undelivered, not given up, its next attempt has come and no live lease holds
    /// it. On PostgreSQL rows another replica is claiming are skipped, not waited for.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        macro_rules! claim {
            ($lock:literal) => {
                concat!(
                    "UPDATE alert_deliveries SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 ",
                    "WHERE (alert_id, webhook) IN (SELECT alert_id, webhook FROM alert_deliveries ",
                    "WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $3 ",
                    "AND (lease_until IS NULL OR lease_until < $3) ORDER BY alert_id LIMIT $4",
                    $lock,
                    ") RETURNING alert_id, webhook, url, attempts"
                )
            };
        }
        let q = match self.backend {
            Backend::Postgres => claim!(" FOR UPDATE SKIP LOCKED"),
            Backend::Sqlite => claim!(""),
        };
        let rows = sqlx::query(q)
            .bind(owner)
            .bind(now + DELIVERY_LEASE_S)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(ClaimedDelivery {
                alert: self.alert(r.try_get("alert_id")?).await?,
                webhook: r.try_get("webhook")?,
                url: r.try_get("url")?,
                attempt: r.try_get("attempts")?,
            });
        }
        out.sort_by_key(|d| d.alert.alert_id);
        Ok(out)
    }

    /// Record a delivery made by `owner` (ignored if its lease passed to another replica, which
    /// then delivers again: at least once).
    pub async fn delivery_done(
        &self,
        d: &ClaimedDelivery,
        owner: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE alert_deliveries SET delivered_at = $1, lease_owner = NULL, lease_until = NULL, last_error = NULL WHERE alert_id = $2 AND webhook = $3 AND lease_owner = $4 AND delivered_at IS NULL")
            .bind(now)
            .bind(d.alert.alert_id)
            .bind(&d.webhook)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record a failed attempt: retry after [`backoff_s`], or give up after
    /// [`MAX_DELIVERY_ATTEMPTS`]. Returns whether it was given up.
    pub async fn delivery_failed(
        &self,
        d: &ClaimedDelivery,
        owner: &str,
        error: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let give_up = d.attempt >= MAX_DELIVERY_ATTEMPTS;
        sqlx::query("UPDATE alert_deliveries SET next_attempt_at = $1, failed_at = $2, last_error = $3, lease_owner = NULL, lease_until = NULL WHERE alert_id = $4 AND webhook = $5 AND lease_owner = $6 AND delivered_at IS NULL")
            .bind(now + backoff_s(d.attempt))
            .bind(give_up.then_some(now))
            .bind(error)
            .bind(d.alert.alert_id)
            .bind(&d.webhook)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(give_up)
    }

    /// Set (or clear) the VM's capture schedule: evidence is expected at least every
    /// `every_s` seconds, and a `silent` alert is raised when none arrives for twice that.
    pub async fn set_schedule(&self, vm_id: &str, every_s: Option<i64>) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE vms SET expect_every = $1 WHERE vm_id = $2")
            .bind(every_s)
            .bind(vm_id)
            .execute(&self.pool)
            .await?;
        super::vm_found(vm_id, r.rows_affected())
    }

    /// Record refused evidence of a known VM: an audit entry, and an `evidence_refused` alert
    /// naming `code` — or, while one for this VM and code is unresolved, one more on its count.
    /// Returns the alert when a new one was raised.
    pub async fn record_refusal(
        &self,
        r: &Refusal<'_>,
        now: i64,
    ) -> Result<Option<Alert>, StoreError> {
        match self.record_refusal_once(r, now).await {
            // Another replica raised the alert for this (VM, code) meanwhile: count on it.
            Err(StoreError::Conflict(_)) => self.record_refusal_once(r, now).await,
            other => other,
        }
    }

    async fn record_refusal_once(
        &self,
        r: &Refusal<'_>,
        now: i64,
    ) -> Result<Option<Alert>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let detail = serde_json::json!({
            "vm": r.vm_id, "code": r.code, "seq": r.seq, "message": r.message,
        })
        .to_string();
        append_audit(&mut tx, "verifier", "evidence_refused", &detail, now).await?;
        let bumped = sqlx::query("UPDATE alerts SET count = count + 1 WHERE kind = 'evidence_refused' AND vm_id = $1 AND code = $2 AND state <> 'resolved'")
            .bind(r.vm_id)
            .bind(r.code)
            .execute(&mut *tx)
            .await?;
        if bumped.rows_affected() > 0 {
            tx.commit().await?;
            return Ok(None);
        }
        let a = NewAlert {
            vm_id: r.vm_id.to_owned(),
            kind: "evidence_refused",
            code: Some(r.code.to_owned()),
            seq: r.seq,
            score: None,
            tier: None,
            threshold: r.threshold,
            message: format!(
                "VM {}: evidence{} refused ({}): {}",
                r.vm_id,
                r.seq.map(|s| format!(" #{s}")).unwrap_or_default(),
                r.code,
                r.message
            ),
        };
        let raised = raise(&mut tx, &a, now).await.map_err(|e| match e {
            StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                StoreError::Conflict("an evidence_refused alert was raised meanwhile".into())
            }
            e => e,
        })?;
        tx.commit().await?;
        Ok(Some(raised))
    }

    /// Raise a `silent` alert for every VM on a schedule whose evidence is overdue (none
    /// accepted for twice its interval) and that has none yet; resolve `silent` alerts of VMs
    /// heard from since. Each alert is raised once, whichever replica sweeps first.
    pub async fn sweep_silent(&self, now: i64) -> Result<Vec<Alert>, StoreError> {
        sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = $1 WHERE kind = 'silent' AND state <> 'resolved' AND alert_id NOT IN (SELECT silent_alert FROM vms WHERE silent_alert IS NOT NULL)")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT vm_id, threshold, expect_every, COALESCE(last_seen, created_at) AS seen FROM vms WHERE expect_every IS NOT NULL AND silent_alert IS NULL AND COALESCE(last_seen, created_at) + 2 * expect_every < $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        let mut raised = Vec::new();
        for r in rows {
            let vm: String = r.try_get("vm_id")?;
            let every: i64 = r.try_get("expect_every")?;
            let seen: i64 = r.try_get("seen")?;
            let mut tx = self.pool.begin().await?;
            // Claim: only the replica whose UPDATE finds the VM still unalerted raises it.
            let claim = sqlx::query("UPDATE vms SET silent_alert = 0 WHERE vm_id = $1 AND silent_alert IS NULL AND COALESCE(last_seen, created_at) + 2 * expect_every < $2")
                .bind(&vm)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if claim.rows_affected() != 1 {
                continue;
            }
            let a = NewAlert {
                vm_id: vm.clone(),
                kind: "silent",
                code: None,
                seq: None,
                score: None,
                tier: None,
                threshold: r.try_get::<i64, _>("threshold")?.clamp(0, 100) as u8,
                message: format!(
                    "VM {vm}: no evidence accepted for {} s (its schedule is every {every} s)",
                    now - seen
                ),
            };
            raised.push(raise(&mut tx, &a, now).await?);
            tx.commit().await?;
        }
        Ok(raised)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Db, NO, V, below_threshold, on_both, store};
    use super::*;
    use crate::appraise::ChainPoint;
    use crate::store::Verdict;

    #[test]
    fn the_documented_retry_span_is_the_codes() {
        let span: i64 = (1..MAX_DELIVERY_ATTEMPTS).map(backoff_s).sum();
        let hours = format!("{:.1} hours", span as f64 / 3600.0);
        assert_eq!(hours, "15.4 hours");
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"),
        )
        .unwrap();
        let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            doc.contains(&format!("the last {hours} after the first")),
            "docs/api.md"
        );
    }

    fn below(seq: u64) -> AlertPlan {
        AlertPlan {
            raise: Some(below_threshold("vm1", seq)),
            resolve_threshold: None,
            ..Default::default()
        }
    }

    fn point(seq: u64) -> ChainPoint {
        ChainPoint {
            seq,
            digest: [seq as u8 + 1; 32],
        }
    }

    fn hook(name: &str) -> Webhook {
        Webhook {
            name: name.into(),
            url: format!("http://127.0.0.1:9/{name}"),
            created_by: "admin".into(),
            created_at: 1,
        }
    }

    async fn raise_one(s: &Store, t: i64) -> Alert {
        s.record_appraisal("vm1", None, point(0), &V, &below(0), t)
            .await
            .unwrap()
            .expect("an alert")
    }

    async fn an_alert_enters_the_outbox_once_per_webhook(db: Db) {
        let (_d, s) = store(db).await;
        s.add_webhook(&hook("ops")).await.unwrap();
        s.add_webhook(&hook("pager")).await.unwrap();
        assert!(matches!(
            s.add_webhook(&hook("ops")).await,
            Err(StoreError::Conflict(_))
        ));
        let a = raise_one(&s, 10).await;
        assert_eq!(
            (a.kind.as_str(), a.state.as_str(), a.silenced),
            ("below_threshold", "open", false)
        );
        assert_eq!(s.alert(a.alert_id).await.unwrap(), a);
        let d = s.deliveries(a.alert_id).await.unwrap();
        assert_eq!(
            d.iter().map(|d| d.webhook.as_str()).collect::<Vec<_>>(),
            ["ops", "pager"]
        );
        assert_eq!(
            s.vm_record("vm1").await.unwrap().threshold_alert,
            Some(a.alert_id)
        );
        assert_eq!(
            s.alerts(Some("open"), None, None, 10).await.unwrap(),
            std::slice::from_ref(&a)
        );
        assert!(
            s.alerts(Some("resolved"), None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.alerts(None, None, Some(a.alert_id - 1), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            s.alerts(None, None, Some(a.alert_id), 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Webhook adds, the appraisal and the alert: one chain.
        assert_eq!(s.verify_audit().await.unwrap(), 4);
        // The next appraisal, back above the threshold, resolves it.
        let up = AlertPlan {
            raise: None,
            resolve_threshold: Some(a.alert_id),
            ..Default::default()
        };
        s.record_appraisal("vm1", Some(0), point(1), &V, &up, 11)
            .await
            .unwrap();
        let r = s.alert(a.alert_id).await.unwrap();
        assert_eq!((r.state.as_str(), r.resolved_at), ("resolved", Some(11)));
        assert_eq!(s.vm_record("vm1").await.unwrap().threshold_alert, None);
        assert!(matches!(
            s.ack_alert(a.alert_id, "admin", 12).await,
            Err(StoreError::Conflict(_))
        ));
    }

    async fn a_tier_drop_resolves_when_the_tier_recovers(db: Db) {
        let (_d, s) = store(db).await;
        let mut drop = below(0);
        if let Some(r) = drop.raise.as_mut() {
            r.kind = "tier_drop";
            r.tier = Some("warning".into());
        }
        let a = s
            .record_appraisal("vm1", None, point(0), &V, &drop, 10)
            .await
            .unwrap()
            .expect("an alert");
        // Still warning: stays open. Back to affirming: resolved.
        let still = AlertPlan {
            recovered_from: vec!["contraindicated"],
            ..Default::default()
        };
        s.record_appraisal("vm1", Some(0), point(1), &V, &still, 11)
            .await
            .unwrap();
        assert_eq!(s.alert(a.alert_id).await.unwrap().state, "open");
        let back = AlertPlan {
            recovered_from: vec!["warning", "contraindicated"],
            ..Default::default()
        };
        s.record_appraisal("vm1", Some(1), point(2), &V, &back, 12)
            .await
            .unwrap();
        let r = s.alert(a.alert_id).await.unwrap();
        assert_eq!((r.state.as_str(), r.resolved_at), ("resolved", Some(12)));
    }

    async fn acknowledging_records_who_and_changes_nothing_else(db: Db) {
        let (_d, s) = store(db).await;
        let a = raise_one(&s, 10).await;
        let k = s.ack_alert(a.alert_id, "alice", 20).await.unwrap();
        assert_eq!(
            (k.state.as_str(), k.acked_by.as_deref(), k.acked_at),
            ("acknowledged", Some("alice"), Some(20))
        );
        // Twice is harmless; the first acknowledgement stands.
        let again = s.ack_alert(a.alert_id, "bob", 30).await.unwrap();
        assert_eq!(again.acked_by.as_deref(), Some("alice"));
        assert!(matches!(
            s.ack_alert(999, "bob", 30).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            s.alerts(Some("active"), None, None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.verify_audit().await.unwrap(), 3);
    }

    async fn silenced_alerts_are_recorded_not_queued(db: Db) {
        let (_d, s) = store(db).await;
        s.register_vm("vm2", "h1", 70, 1).await.unwrap();
        s.add_webhook(&hook("ops")).await.unwrap();
        let silence = |id: &str, vm: Option<&str>, ends_at| Silence {
            silence_id: id.into(),
            vm_id: vm.map(str::to_owned),
            ends_at,
            reason: "maintenance".into(),
            created_by: "admin".into(),
            created_at: 1,
        };
        // Another VM's silence, and one already over, do not apply.
        s.add_silence(&silence("s1", Some("vm2"), 1000))
            .await
            .unwrap();
        s.add_silence(&silence("s2", None, 5)).await.unwrap();
        assert!(matches!(
            s.add_silence(&silence("s3", Some("nope"), 1000)).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.silences(10).await.unwrap().len(), 1);
        let a = raise_one(&s, 10).await;
        assert!(!a.silenced);
        assert_eq!(s.deliveries(a.alert_id).await.unwrap().len(), 1);
        // A silence for vm1: recorded, no delivery.
        s.add_silence(&silence("s4", Some("vm1"), 1000))
            .await
            .unwrap();
        let up = AlertPlan {
            raise: None,
            resolve_threshold: Some(a.alert_id),
            ..Default::default()
        };
        s.record_appraisal("vm1", Some(0), point(1), &V, &up, 11)
            .await
            .unwrap();
        let mut p = below(2);
        p.raise.as_mut().unwrap().seq = Some(2);
        let b = s
            .record_appraisal("vm1", Some(1), point(2), &V, &p, 12)
            .await
            .unwrap()
            .unwrap();
        assert!(b.silenced);
        assert!(s.deliveries(b.alert_id).await.unwrap().is_empty());
        // Its end says what it held back; that stays recorded, undelivered.
        assert_eq!(s.end_silence("s4", "admin", 13).await.unwrap(), 1);
        assert!(s.deliveries(b.alert_id).await.unwrap().is_empty());
        assert!(s.alert(b.alert_id).await.unwrap().silenced);
        assert!(matches!(
            s.end_silence("s4", "admin", 14).await,
            Err(StoreError::NotFound(_))
        ));
    }

    async fn deliveries_are_claimed_once_retried_and_given_up(db: Db) {
        let (_d, s) = store(db).await;
        s.add_webhook(&hook("ops")).await.unwrap();
        let a = raise_one(&s, 100).await;
        let got = s.claim_deliveries("a", 100, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].attempt, got[0].webhook.as_str()), (1, "ops"));
        assert_eq!(got[0].alert, a);
        // Leased: another replica gets nothing.
        assert!(s.claim_deliveries("b", 100, 10).await.unwrap().is_empty());
        // A failure: due again after the backoff, to whoever claims first.
        assert!(!s.delivery_failed(&got[0], "a", "503", 101).await.unwrap());
        assert!(s.claim_deliveries("b", 105, 10).await.unwrap().is_empty());
        let again = s.claim_deliveries("b", 106, 10).await.unwrap();
        assert_eq!(again[0].attempt, 2);
        // A replica that lost the lease cannot record the delivery; the owner can.
        s.delivery_done(&again[0], "a", 107).await.unwrap();
        assert_eq!(
            s.deliveries(a.alert_id).await.unwrap()[0].delivered_at,
            None
        );
        s.delivery_done(&again[0], "b", 107).await.unwrap();
        let d = &s.deliveries(a.alert_id).await.unwrap()[0];
        assert_eq!((d.delivered_at, d.attempts), (Some(107), 2));
        assert!(
            s.claim_deliveries("a", 10_000, 10)
                .await
                .unwrap()
                .is_empty()
        );

        // A replica that dies holding a lease: the row is due again when the lease runs out.
        s.add_webhook(&hook("pager")).await.unwrap();
        let mut p = below(1);
        p.raise.as_mut().unwrap().kind = "tier_drop";
        let b = s
            .record_appraisal("vm1", Some(0), point(1), &V, &p, 200)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.claim_deliveries("dead", 200, 10).await.unwrap().len(), 2);
        assert!(
            s.claim_deliveries("b", 200 + DELIVERY_LEASE_S, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let mut t = 201 + DELIVERY_LEASE_S;
        let mut claimed = s.claim_deliveries("b", t, 10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        claimed.sort_by(|x, y| x.webhook.cmp(&y.webhook));
        s.delivery_done(&claimed.remove(0), "b", t).await.unwrap();
        // Keep failing "pager": given up after MAX_DELIVERY_ATTEMPTS, never claimed again.
        loop {
            let d = claimed.remove(0);
            assert_eq!(d.webhook, "pager");
            assert_eq!(d.alert.alert_id, b.alert_id);
            let gave_up = s
                .delivery_failed(&d, "b", "connection refused", t)
                .await
                .unwrap();
            if d.attempt == MAX_DELIVERY_ATTEMPTS {
                assert!(gave_up);
                break;
            }
            assert!(!gave_up);
            t += backoff_s(d.attempt);
            claimed = s.claim_deliveries("b", t, 1).await.unwrap();
        }
        let ds = s.deliveries(b.alert_id).await.unwrap();
        let given_up: Vec<_> = ds.iter().filter(|d| d.failed_at.is_some()).collect();
        assert_eq!(given_up.len(), 1);
        assert_eq!(
            given_up[0].last_error.as_deref(),
            Some("connection refused")
        );
        // Removing a webhook gives up its undelivered rows.
        s.remove_webhook("pager", "admin", t).await.unwrap();
        assert!(
            s.claim_deliveries("b", t + 100_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            s.remove_webhook("pager", "admin", t).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.webhooks().await.unwrap(), [hook("ops")]);
    }

    async fn a_silent_vm_alerts_once_and_resolves_when_heard_from(db: Db) {
        let (_d, s) = store(db).await;
        // vm1 was registered at 100; evidence is due every 10 s.
        s.set_schedule("vm1", Some(10)).await.unwrap();
        assert!(matches!(
            s.set_schedule("nope", Some(10)).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            s.sweep_silent(120).await.unwrap().is_empty(),
            "not overdue yet"
        );
        let a = s.sweep_silent(121).await.unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, "silent");
        assert!(
            a[0].message.contains("no evidence accepted for 21 s"),
            "{}",
            a[0].message
        );
        assert!(s.sweep_silent(200).await.unwrap().is_empty(), "raised once");
        s.record_appraisal("vm1", None, point(0), &V, &NO, 201)
            .await
            .unwrap();
        assert!(s.sweep_silent(202).await.unwrap().is_empty());
        assert_eq!(s.alert(a[0].alert_id).await.unwrap().state, "resolved");
        // Silent again later: a new alert.
        assert_eq!(s.sweep_silent(222).await.unwrap().len(), 1);
        s.set_schedule("vm1", None).await.unwrap();
        assert_eq!(s.verify_audit().await.unwrap(), 3);
    }

    /// Two stores on one database act as two verifier replicas: concurrent appraisals keep one
    /// gap-free audit chain, a nonce is used by one of them only, and each delivery is claimed
    /// by one replica only.
    async fn replicas_share_one_chain_and_never_double_claim(db: Db) {
        let (d, a) = store(db).await;
        let url = match &d {
            super::super::tests::Guard::Dir(dir) => {
                format!("sqlite://{}", dir.path().join("v.db").display())
            }
            super::super::tests::Guard::Pg(pg) => pg.url.clone(),
        };
        let b = Store::open(&url).await.unwrap();
        for i in 0..8 {
            a.register_vm(&format!("r{i}"), "h1", 70, 1).await.unwrap();
        }
        a.add_webhook(&hook("ops")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let vm = format!("r{i}");
                let mut plan = below(0);
                plan.raise.as_mut().unwrap().vm_id = vm.clone();
                let mut raised = 0;
                for seq in 0..10u64 {
                    let p = if seq == 0 { &plan } else { &NO };
                    let prev = seq.checked_sub(1);
                    loop {
                        match s.record_appraisal(&vm, prev, point(seq), &V, p, 10).await {
                            Ok(r) => {
                                raised += usize::from(r.is_some());
                                break;
                            }
                            // SQLite: the other connection holds the write lock past the
                            // busy timeout under this load; retry like an agent would.
                            Err(StoreError::Db(e)) if e.to_string().contains("locked") => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                raised
            }));
        }
        let mut raised = 0;
        for t in tasks {
            raised += t.await.unwrap();
        }
        assert_eq!(raised, 8);
        // 1 webhook + 80 appraisals + 8 alerts.
        assert_eq!(a.verify_audit().await.unwrap(), 89);
        assert_eq!(b.verify_audit().await.unwrap(), 89);
        let ids: Vec<i64> = a
            .alerts(None, None, Some(0), 100)
            .await
            .unwrap()
            .iter()
            .map(|x| x.alert_id)
            .collect();
        assert_eq!(ids.len(), 8);

        // One nonce, two replicas racing to use it: one wins.
        let n = a.issue_nonce("vm1", 60, 10).await.unwrap();
        let with = Verdict {
            nonce: Some(&n),
            ..V
        };
        let (x, y) = tokio::join!(
            a.record_appraisal("vm1", None, point(0), &with, &NO, 11),
            b.record_appraisal("vm1", None, point(0), &with, &NO, 11)
        );
        assert!(x.is_ok() != y.is_ok(), "{x:?} {y:?}");

        // Both replicas claim at once: every delivery goes to exactly one.
        let (ca, cb) = tokio::join!(
            a.claim_deliveries("a", 10, 100),
            b.claim_deliveries("b", 10, 100)
        );
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        let mut all: Vec<i64> = ca.iter().chain(&cb).map(|d| d.alert.alert_id).collect();
        all.sort();
        assert_eq!(all, ids);
    }

    async fn refusals_are_audited_and_a_flood_is_one_alert_with_a_count(db: Db) {
        let (_d, s) = store(db).await;
        s.add_webhook(&hook("ops")).await.unwrap();
        let refusal = |code: &'static str| Refusal {
            vm_id: "vm1",
            code,
            message: "captured under policy aa but the VM is assigned policy bb",
            seq: Some(4),
            threshold: 70,
        };
        let audit_before = s.verify_audit().await.unwrap();
        let a = s
            .record_refusal(&refusal("policy_mismatch"), 10)
            .await
            .unwrap()
            .expect("the first refusal raises an alert");
        assert_eq!(
            (a.kind.as_str(), a.code.as_deref(), a.count),
            ("evidence_refused", Some("policy_mismatch"), 1)
        );
        assert!(
            a.message.contains("#4 refused (policy_mismatch)"),
            "{}",
            a.message
        );
        assert_eq!(s.deliveries(a.alert_id).await.unwrap().len(), 1);
        // A flood of the same refusal: audited each time, counted on the one alert, delivered once.
        for t in 11..20 {
            assert!(
                s.record_refusal(&refusal("policy_mismatch"), t)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        let again = s.alert(a.alert_id).await.unwrap();
        assert_eq!((again.count, again.state.as_str()), (10, "open"));
        assert_eq!(s.deliveries(a.alert_id).await.unwrap().len(), 1);
        // Audit entries: ten refusals and the alert.
        assert_eq!(s.verify_audit().await.unwrap(), audit_before + 11);
        // Another code is another alert.
        let b = s
            .record_refusal(&refusal("broken_chain"), 20)
            .await
            .unwrap()
            .expect("another code, another alert");
        assert_ne!(a.alert_id, b.alert_id);
        // Accepted evidence resolves both; the next refusal starts a new episode.
        s.record_appraisal("vm1", None, point(0), &V, &AlertPlan::default(), 21)
            .await
            .unwrap();
        for id in [a.alert_id, b.alert_id] {
            assert_eq!(s.alert(id).await.unwrap().state, "resolved");
        }
        let c = s
            .record_refusal(&refusal("policy_mismatch"), 22)
            .await
            .unwrap()
            .expect("a new episode");
        assert_eq!(c.count, 1);
    }

    on_both!(
        refusals_are_audited_and_a_flood_is_one_alert_with_a_count,
        an_alert_enters_the_outbox_once_per_webhook,
        acknowledging_records_who_and_changes_nothing_else,
        silenced_alerts_are_recorded_not_queued,
        deliveries_are_claimed_once_retried_and_given_up,
        a_silent_vm_alerts_once_and_resolves_when_heard_from,
        a_tier_drop_resolves_when_the_tier_recovers,
    );

    /// Replicas are PostgreSQL's (a SQLite database serves one verifier, which holds its file:
    /// `store::tests::a_second_verifier_on_one_sqlite_file_is_refused`).
    #[tokio::test]
    async fn replicas_share_one_chain_and_never_double_claim_on_postgres() {
        replicas_share_one_chain_and_never_double_claim(Db::Postgres).await
    }
}
