//! The one API error: a stable code ([`ErrorCode`]), its HTTP status, and a message that says
//! what to do; every refusal of every handler is one of these, answered as JSON
//! `{"code": …, "message": …}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use vmseal_client::ErrorCode;

use crate::store::StoreError;

/// An API error: a stable code, an HTTP status, and a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No usable client certificate role.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown VM or host.
    #[error("{0}")]
    NotFound(String),
    /// Malformed request.
    #[error("{message}")]
    BadRequest {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// The evidence or request was understood and refused.
    #[error("{message}")]
    Refused {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// The VM has no golden baseline yet.
    #[error("{0}")]
    NoBaseline(String),
    /// Another request changed the same state first.
    #[error("{0}")]
    Conflict(String),
    /// A host id is claimed by another hardware root than the one that enrolled it.
    #[error("{0}")]
    IdentityChanged(String),
    /// The request body is larger than the service accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The client has too many requests in flight.
    #[error("{0}")]
    TooMany(String),
    /// The database cannot be reached now; the client should retry.
    #[error("{0}")]
    Unavailable(String),
    /// A server-side failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error about a VM's evidence, answered with where the VM's chain stands (the agent
    /// builds its next snapshot on it).
    #[error("{0}")]
    WithChain(Box<ApiError>, vmseal_client::ChainHead),
}

impl ApiError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::NoBaseline(_) => ErrorCode::NoBaseline,
            Self::BadRequest { code, .. } | Self::Refused { code, .. } => *code,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::IdentityChanged(_) => ErrorCode::HostIdentityChanged,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::TooMany(_) => ErrorCode::TooManyRequests,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
            Self::WithChain(e, _) => e.code(),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    code: ErrorCode,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<&'a vmseal_client::ChainHead>,
}

impl ResponseError for ApiError {
    /// The code's status: one table ([`ErrorCode::status`]) for the server and its clients.
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    fn error_response(&self) -> HttpResponse {
        // Every refusal is logged with its code (the message says why and what to do).
        match self {
            Self::Internal(m) => tracing::error!(code = "internal", "{m}"),
            Self::Forbidden(_)
            | Self::NotFound(_)
            | Self::NoBaseline(_)
            | Self::TooMany(_)
            | Self::Unavailable(_) => {
                tracing::debug!(code = self.code().as_str(), "{self}")
            }
            _ => tracing::warn!(code = self.code().as_str(), "refused: {self}"),
        }
        let mut r = HttpResponse::build(self.status_code());
        let (inner, chain) = match self {
            Self::WithChain(e, c) => (e.as_ref(), Some(c)),
            e => (e, None),
        };
        if let Self::Unavailable(_) | Self::TooMany(_) = inner {
            r.insert_header(("retry-after", "2"));
        }
        r.json(ErrorBody {
            code: self.code(),
            message: self.to_string(),
            chain,
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Registering is the fix only for a VM; enrolling for a host; else it just is not.
            StoreError::NotFound(w) if w.starts_with("VM ") => Self::NotFound(format!(
                "{w} is not registered: an admin registers it (`vmseal-verifier admin register-vm --vm-id VM --host-id HOST`)"
            )),
            StoreError::NotFound(w) if w.starts_with("host ") => Self::NotFound(format!(
                "{w} is not enrolled: its agent enrols with an admin's token (`vmseal-host enroll`)"
            )),
            StoreError::NotFound(w) => Self::NotFound(format!("{w} does not exist")),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::IdentityChanged(m) => Self::IdentityChanged(m),
            StoreError::ChainsExist(m) => Self::Refused {
                code: ErrorCode::ChainsExist,
                message: m,
            },
            StoreError::NonceUsed => Self::Refused {
                code: ErrorCode::BadNonce,
                message:
                    "the nonce was used by another submission meanwhile, or expired; request a \
                          new one"
                        .into(),
            },
            StoreError::Unavailable(why) => {
                tracing::warn!("database unavailable: {why}");
                Self::Unavailable(
                    "the verifier's database is unavailable; nothing was changed: retry shortly"
                        .into(),
                )
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::state::CheckpointError> for ApiError {
    fn from(e: crate::state::CheckpointError) -> Self {
        match e {
            crate::state::CheckpointError::Store(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub(crate) fn bad(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code,
        message: message.into(),
    }
}

pub(crate) fn json_error(e: actix_web::error::JsonPayloadError) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    match e {
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => {
            ApiError::TooLarge(format!(
                "request body larger than {} KiB, the most this endpoint takes",
                limit >> 10
            ))
            .into()
        }
        e => ApiError::BadRequest {
            code: ErrorCode::BadJson,
            message: format!("request body is not the expected JSON: {e}"),
        }
        .into(),
    }
}
