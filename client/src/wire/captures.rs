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

/// `POST /v1/vms/{vm}/capture-requests`: the capture asked of the VM's host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureRequestMade {
    /// Id (`GET /v1/capture-requests/{id}` follows it).
    pub request_id: String,
    /// VM.
    pub vm_id: String,
    /// Its host.
    pub host_id: String,
    /// The nonce the evidence must carry, hex.
    pub nonce: String,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
}

/// Where a capture request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CaptureState {
    /// No agent has taken it yet.
    Pending,
    /// The host's agent took it.
    Picked,
    /// Evidence answering its nonce was appraised.
    Done,
    /// It expired unanswered.
    Expired,
}

impl CaptureState {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Picked => "picked",
            Self::Done => "done",
            Self::Expired => "expired",
        }
    }
}

/// `GET /v1/capture-requests/{id}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptureStatus {
    /// Id.
    pub request_id: String,
    /// VM.
    pub vm_id: String,
    /// Its host.
    pub host_id: String,
    /// Where it stands.
    pub state: CaptureState,
    /// The sequence number of the evidence that answered it.
    pub seq: Option<u64>,
    /// That evidence's appraisal, once done.
    pub appraisal: Option<super::AppraisalResult>,
}
