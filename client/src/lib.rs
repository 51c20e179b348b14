//! The vmseal verifier API: its request and response types, and a blocking mutual-TLS client.
//!
//! Agents (`vmseal-host`) and admins (`vmseal-verifier admin`) talk to the verifier through
//! [`Client`]; the verifier serves the same types. TLS 1.3 with the verifier's CA as the only root
//! and a client certificate from that CA.
#![forbid(unsafe_code)]

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Enrollment result: the host's pinned intermediate and its agent credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    /// Host id (from the intermediate certificate).
    pub host_id: String,
    /// SHA-256 of the pinned intermediate, hex.
    pub intermediate_sha256: String,
    /// Whether the SNP anchor was the INSECURE stand-in (accepted by configuration).
    pub insecure: bool,
    /// Agent client certificate, PEM.
    pub agent_cert_pem: String,
    /// Agent client key, PEM.
    pub agent_key_pem: String,
}

/// `POST /v1/vms` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewVm {
    /// VM id.
    pub vm_id: String,
    /// Host id.
    pub host_id: String,
    /// Alert threshold (0–100).
    #[serde(default)]
    pub threshold: Option<u8>,
    /// SHA-256 of the capture policy text the VM must be captured under, hex.
    #[serde(default)]
    pub policy_digest: Option<String>,
}

/// `POST /v1/vms/{vm}/baselines` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteBaseline {
    /// The appraised snapshot the baseline comes from.
    pub seq: u64,
    /// Per region, the page hashes.
    pub regions: Vec<BaselineLeaves>,
}

/// Leaves of one region.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineLeaves {
    /// Region name.
    pub name: String,
    /// Concatenated 32-byte leaves, hex.
    pub leaves: String,
}

/// An error answer of the verifier.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ApiErrorBody {
    /// Stable code.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Credentials or CA could not be loaded.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The verifier could not be reached (including a refused TLS handshake).
    #[error("cannot reach the verifier at {url}: {source}")]
    Transport {
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The verifier answered with an error.
    #[error("verifier refused ({status}, {}): {}", .body.code, .body.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// Its answer.
        body: ApiErrorBody,
    },
}

/// A blocking mutual-TLS client of the verifier.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client for `base` (https://host:port) trusting `ca_pem`, authenticating with a PEM
    /// certificate and key.
    pub fn new(
        base: &str,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, ClientError> {
        let tls = |e: String| ClientError::Tls(e);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(c.map_err(|e| tls(format!("CA: {e}")))?)
                .map_err(|e| tls(format!("CA: {e}")))?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| tls(format!("certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls(format!("key: {e}")))?;
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls(e.to_string()))?;
        let http = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(cfg)
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| tls(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let resp = req.send().map_err(|source| ClientError::Transport {
            url: url.to_owned(),
            source,
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().map_err(|source| ClientError::Transport {
            url: url.to_owned(),
            source,
        })?;
        if (200..300).contains(&status) {
            Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
        } else {
            let body = serde_json::from_str(&text).unwrap_or(ApiErrorBody {
                code: "http".into(),
                message: text,
            });
            Err(ClientError::Api { status, body })
        }
    }

    /// POST raw bytes.
    pub fn post_bytes(&self, path: &str, body: Vec<u8>) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(
            self.http
                .post(&url)
                .header("content-type", "application/octet-stream")
                .body(body),
            &url,
        )
    }

    /// POST JSON.
    pub fn post_json<T: Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.post(&url).json(body), &url)
    }

    /// GET.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &url)
    }

    /// Enrol a host by its intermediate certificate (admin).
    pub fn enroll_host(&self, intermediate_der: Vec<u8>) -> Result<Enrolled, ClientError> {
        let v = self.post_bytes("/v1/hosts", intermediate_der)?;
        serde_json::from_value(v).map_err(|e| ClientError::Tls(format!("unexpected answer: {e}")))
    }

    /// Submit evidence for a VM (agent); returns the appraisal.
    pub fn submit_evidence(
        &self,
        vm_id: &str,
        evidence: Vec<u8>,
    ) -> Result<serde_json::Value, ClientError> {
        self.post_bytes(&format!("/v1/vms/{vm_id}/evidence"), evidence)
    }
}
