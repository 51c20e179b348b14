//! Certificate renewals: agents by proving their hardware again, admins and viewers by their
//! own certificate.

use serde::{Deserialize, Serialize};

/// `POST /v1/hosts/{host}/renewals` body (the host's agent): fresh anchors over the renewal
/// challenge's nonce, and the request for the new certificate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRenewal {
    /// CBOR `FreshAnchors`, base64: a TPM quote by the enrolled AK and/or an SNP report of the
    /// enrolled chip, over the challenge's nonce.
    pub fresh: String,
    /// PKCS#10 request for the new agent key, PEM.
    pub csr_pem: String,
}

/// `POST /v1/certificates/renewals` body (an admin or a viewer): the request for the new key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonRenewal {
    /// PKCS#10 request for the new key, PEM.
    pub csr_pem: String,
}

/// The answer of a renewal (an agent's, or a person's: `agent_cert_pem` is then theirs).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Renewed {
    /// The new agent certificate (and its issuing CA), PEM.
    pub agent_cert_pem: String,
    /// When it expires, Unix seconds.
    pub not_after: i64,
}
