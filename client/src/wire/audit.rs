//! Audit log answers: checkpoints, the export, the verification.

use serde::{Deserialize, Serialize};

use crate::audit::AuditEntry;

/// A signed audit checkpoint, with what its token says (`POST /v1/audit/checkpoint`, and each
/// of `GET /v1/audit/checkpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedCheckpoint {
    /// The chain's head entry when it was signed.
    pub audit_id: i64,
    /// Its hash (hex).
    pub audit_hash: String,
    /// When it was signed (Unix seconds).
    pub iat: i64,
    /// The checkpoint itself: a JWT (ES256) signed under the verifier's CA, which
    /// `vmseal-certs verify-audit --checkpoint` checks from the CA certificate alone.
    pub token: String,
}

/// `GET /v1/audit/checkpoints` answer: the newest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointList {
    /// The checkpoints.
    pub checkpoints: Vec<SignedCheckpoint>,
}

/// `GET /v1/audit/export` answer: the whole log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditExport {
    /// Every entry.
    pub entries: Vec<AuditEntry>,
}

/// `GET /v1/audit/verify` answer: the whole chain re-hashed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditVerified {
    /// Whether every entry hashes to the next one's link.
    pub ok: bool,
    /// How many entries were checked (when intact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Where and how the chain breaks (when not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /healthz` and `GET /readyz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` (the process answers) or `ready` (and its database does).
    pub status: String,
}
