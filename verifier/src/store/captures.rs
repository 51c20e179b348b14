//! Nonces and captures on demand: issued, looked up, used up with the appraisal that answers
//! them.

use super::{Store, StoreError, aws_lc_rs_fill};
use sqlx::Row;
use sqlx::any::AnyRow;

impl Store {
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

    pub(super) async fn open_capture_request_rows(
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
        let rows = self.open_capture_request_rows(host_id, now).await?;
        collect_rows!(
            rows,
            PickedCapture {
                request_id,
                vm_id,
                nonce
            }
        )
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
}

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

pub(super) fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
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
