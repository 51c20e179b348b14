//! The error answer.

use serde::{Deserialize, Serialize};

use super::{ChainHead, ErrorCode};

/// An error answer of the verifier.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
    /// For refused evidence: where the VM's chain stands, to build the next snapshot on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainHead>,
}
