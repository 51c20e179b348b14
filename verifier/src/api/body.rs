//! Request bodies and CPU work: body limits, the per-client in-flight limit, and the blocking
//! pool that runs verification.

use actix_web::{HttpRequest, web};
use vmseal_client::ErrorCode;

use crate::api::auth::PeerCert;
use crate::api::error::{ApiError, bad};
use crate::state::AppState;

/// Largest request body accepted (evidence with a large delta, baselines of big VMs).
pub const MAX_BODY: usize = 64 << 20;

/// Run CPU-heavy `f` on the blocking pool, at most one task per core at a time.
pub(crate) async fn cpu<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = st
        .cpu
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the verification pool is closed".into()))?;
    web::block(f)
        .await
        .map_err(|e| ApiError::Internal(format!("a verification task failed: {e}")))
}

/// Most evidence submissions one client certificate may have in flight at once (a host agent
/// captures two VMs at a time by default).
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = 8;

/// A submission slot of one client certificate, given back when dropped.
pub(crate) struct InFlight<'a> {
    st: &'a AppState,
    serial: String,
}

impl<'a> InFlight<'a> {
    pub(crate) fn take(st: &'a AppState, req: &HttpRequest) -> Result<Self, ApiError> {
        let serial = req
            .conn_data::<PeerCert>()
            .map(|c| c.1.clone())
            .unwrap_or_default();
        let mut m = st.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(serial.clone()).or_insert(0);
        if *n >= MAX_IN_FLIGHT_PER_CLIENT {
            return Err(ApiError::TooMany(format!(
                "this client already has {MAX_IN_FLIGHT_PER_CLIENT} submissions in flight; \
                 retry when one is answered"
            )));
        }
        *n += 1;
        Ok(Self { st, serial })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.st.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.serial) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.serial);
            }
        }
    }
}

/// Read a raw request body (`what`, for the message) of at most `limit` bytes (a JSON
/// `too_large` error beyond).
pub(crate) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    what: &str,
) -> Result<web::Bytes, ApiError> {
    use futures_util::StreamExt as _;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| bad(ErrorCode::BadBody, format!("reading the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!(
                "{what} larger than {} KiB, the most this endpoint takes here",
                limit >> 10
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Largest JSON body of most requests: admin and viewer bodies are small.
pub const MAX_JSON: usize = 64 << 10;

/// Largest JSON body that carries a policy text (a policy is at most 1 MiB; JSON escapes it).
pub const MAX_POLICY_JSON: usize = 3 << 20;
