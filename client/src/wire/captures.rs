//! Captures on demand, as the agent's long-poll hands them out.

use serde::{Deserialize, Serialize};

/// A capture the verifier asks a host for (`GET /v1/hosts/{host}/capture-requests`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureRequest {
    /// Id (`GET /v1/capture-requests/{id}` follows it).
    pub request_id: String,
    /// VM to capture.
    pub vm_id: String,
    /// The nonce the evidence must carry, hex.
    pub nonce: String,
}

/// The answer of `GET /v1/hosts/{host}/capture-requests`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureRequests {
    /// Requests handed to this caller (each is handed out once).
    pub requests: Vec<CaptureRequest>,
}
