//! Enrolment of this host with a verifier: the enrollment bundle from the host state, the answer
//! to the verifier's credential challenge from the TPM, and the agent's certificate and key
//! written next to each other (the key is made here and never leaves the host).

use std::path::{Path, PathBuf};

use vmseal_client::{Client, Enrolled};
use vmseal_sealer::state::{EnrollmentMaterial, write_atomic};

/// Errors enrolling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The host state or its TPM.
    #[error(transparent)]
    State(#[from] vmseal_sealer::state::StateError),
    /// The verifier refused or could not be reached.
    #[error(transparent)]
    Client(#[from] vmseal_client::ClientError),
    /// The enrollment token cannot be used (checked here, before anything is sent).
    #[error("enrollment token {path}: {reason}")]
    Token {
        /// Its certificate file.
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
}

/// An enrollment token's certificate is checked before connecting: it must be a certificate,
/// and valid now (a token lives an hour by default).
fn check_token(path: &Path, pem: &[u8]) -> Result<(), EnrollError> {
    let bad = |reason: String| EnrollError::Token {
        path: path.to_owned(),
        reason,
    };
    let cert = vmseal_sealer::x509::parse_bundle(pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| bad("not a PEM certificate (the token's .pem file, not its key)".into()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let when = vmseal_client::rfc3339;
    if now > cert.not_after {
        return Err(bad(format!(
            "expired at {}: ask the admin for a new one (`vmseal-verifier admin enrollment-token`)",
            when(cert.not_after)
        )));
    }
    if now < cert.not_before {
        return Err(bad(format!(
            "not valid before {}: is this machine's clock right?",
            when(cert.not_before)
        )));
    }
    Ok(())
}

/// Where enrolment reads its inputs and writes the agent credentials.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// Host state directory (`vmseal-host init`).
    pub state: PathBuf,
    /// TPM TCTI override.
    pub tcti: Option<String>,
    /// Verifier URL.
    pub url: String,
    /// Verifier CA (PEM).
    pub ca: PathBuf,
    /// Enrollment token certificate (PEM).
    pub token_cert: PathBuf,
    /// Enrollment token key (PEM).
    pub token_key: PathBuf,
    /// Where the agent certificate goes.
    pub agent_cert: PathBuf,
    /// Where the agent key goes.
    pub agent_key: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, EnrollError> {
    std::fs::read(path).map_err(|source| EnrollError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Enrol: ask for the verifier's challenge and answer it with fresh anchors (a new quote and SNP
/// report over its nonce), send the bundle with the token, answer the credential challenge in the
/// TPM, write the agent key and certificate (key first, so a certificate on disk always has its
/// key).
pub fn enroll(o: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    let token = read(&o.token_cert)?;
    check_token(&o.token_cert, &token)?;
    vmseal_client::check_url(&o.url)?;
    let material = std::cell::RefCell::new(EnrollmentMaterial::open(&o.state, o.tcti.as_deref())?);
    let client = Client::new(&o.url, &read(&o.ca)?, &token, &read(&o.token_key)?)?;
    let ek_public = material.borrow().ek_public.clone();
    let intermediate = material.borrow().intermediate_der.clone();
    let creds = client.enroll_host(
        &intermediate,
        &ek_public,
        |nonce| {
            material
                .borrow_mut()
                .fresh_anchors(nonce)
                .map(|f| vmseal_sealer::anchor::encode(&f))
                .map_err(|e| format!("making fresh anchors for the verifier's challenge: {e}"))
        },
        |blob, secret| {
            material
                .borrow_mut()
                .activate(blob, secret)
                .map(|s| s.to_vec())
                .map_err(|e| e.to_string())
        },
    )?;
    write_atomic(&o.agent_key, creds.agent_key_pem.as_bytes())?;
    write_atomic(&o.agent_cert, creds.enrolled.agent_cert_pem.as_bytes())?;
    tracing::info!(
        host = creds.enrolled.host_id,
        activated = creds.enrolled.activated,
        "enrolled"
    );
    Ok(creds.enrolled)
}

/// Renew the agent certificate at `agent_cert` (with its key at `agent_key`): prove the enrolled
/// hardware again (fresh anchors over the verifier's renewal challenge), write the new key and
/// certificate in place (key first). Returns the new certificate's expiry (Unix seconds).
pub fn renew(
    state: &Path,
    tcti: Option<&str>,
    url: &str,
    ca: &Path,
    agent_cert: &Path,
    agent_key: &Path,
) -> Result<i64, EnrollError> {
    vmseal_client::check_url(url)?;
    let material = std::cell::RefCell::new(EnrollmentMaterial::open(state, tcti)?);
    let host_id = vmseal_sealer::state::HostState::host_id_of(state)?;
    let client = Client::new(url, &read(ca)?, &read(agent_cert)?, &read(agent_key)?)?;
    let (cert, key, not_after) = client.renew_agent(&host_id, |nonce| {
        material
            .borrow_mut()
            .fresh_anchors(nonce)
            .map(|f| vmseal_sealer::anchor::encode(&f))
            .map_err(|e| format!("making fresh anchors for the renewal challenge: {e}"))
    })?;
    write_atomic(agent_key, key.as_bytes())?;
    write_atomic(agent_cert, cert.as_bytes())?;
    tracing::info!(host = host_id, not_after, "agent certificate renewed");
    Ok(not_after)
}

/// Days left on the agent certificate at `path` (negative once expired).
pub fn days_left(path: &Path) -> Result<i64, EnrollError> {
    let pem = read(path)?;
    let cert = vmseal_sealer::x509::parse_bundle(&pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| EnrollError::Token {
            path: path.to_owned(),
            reason: "not a PEM certificate".into(),
        })?;
    Ok((cert.not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400)
}

/// An agent certificate with fewer days left than this is renewed by the agent at start and by
/// `vmseal-host renew` (it lives 397 days).
pub const RENEW_WITHIN_DAYS: i64 = 30;

#[cfg(test)]
mod tests {
    use super::*;
    use vmseal_sealer::keys::IntermediateKey;
    use vmseal_sealer::x509::{IntermediateProfile, issue_intermediate};

    fn cert(made: time::OffsetDateTime, days: i64) -> Vec<u8> {
        let key = IntermediateKey::generate().unwrap();
        issue_intermediate(
            &key,
            &IntermediateProfile {
                host_id: "h",
                tpm: None,
                snp: None,
                validity: time::Duration::days(days),
            },
            made,
        )
        .unwrap()
    }

    #[test]
    fn a_token_is_checked_before_anything_is_sent() {
        let now = time::OffsetDateTime::now_utc();
        let p = Path::new("token.pem");
        check_token(p, &cert(now, 1)).unwrap();
        let e = check_token(p, &cert(now - time::Duration::days(10), 1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expired at") && e.contains("ask the admin"),
            "{e}"
        );
        let e = check_token(p, &cert(now + time::Duration::days(10), 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("clock"), "{e}");
        let e = check_token(
            p,
            b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a PEM certificate"), "{e}");
    }
}
