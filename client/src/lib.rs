//! The vmseal verifier API: its request and response types, and a blocking mutual-TLS client.
//!
//! Agents (`vmseal-host`) and admins (`vmseal-verifier admin`) talk to the verifier through
//! [`Client`]; the verifier serves the same types. TLS 1.3 with the verifier's CA as the only root
//! and a client certificate from that CA.
#![forbid(unsafe_code)]

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

pub mod audit;
pub mod cli;
pub mod corim;
pub mod doctor;
pub mod wire;

pub use wire::*;

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Credentials or CA could not be loaded.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The verifier URL is not one a client can use.
    #[error("verifier URL {0}")]
    Url(String),
    /// The verifier could not be reached (including a refused TLS handshake). The message names
    /// every cause down the chain, and the fix when it is a known one.
    #[error("cannot reach the verifier at {url}: {}", transport_text(.cause))]
    Transport {
        /// URL.
        url: String,
        /// Cause (not a `source`: its whole chain is in this error's message already).
        cause: reqwest::Error,
    },
    /// The verifier answered 2xx with something this client does not understand.
    #[error("unexpected answer from the verifier (is it the same vmseal version?): {0}")]
    Answer(String),
    /// The TPM could not answer the credential challenge.
    #[error("credential activation in the TPM failed: {0}")]
    Activation(String),
    /// The attestation result's signature or certificate did not verify.
    #[error("the verifier's signed attestation result (EAR) is not valid: {0}")]
    Ear(#[from] EarError),
    /// The verifier answered with an error.
    #[error("verifier refused ({status}, {}): {}", .body.code, .body.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// Its answer.
        body: ApiErrorBody,
    },
}

/// A transport error's whole cause chain (reqwest's own message omits it), each cause once, and
/// the fix for the common ones.
fn transport_text(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        let t = c.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = c.source();
    }
    let text = parts.join(": ");
    let hint = if text.contains("UnknownIssuer")
        || text.contains("unknown issuer")
        || text.contains("BadSignature")
    {
        " — the verifier's certificate is not issued by the CA given (--verifier-ca, --ca or [verifier] \
         ca): give the verifier's own ca.pem"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        " — the verifier's certificate does not name this host: use a name it was issued for \
         (localhost, or one given to `vmseal-verifier init --name`)"
    } else if text.contains("CertificateRequired") || text.contains("certificate required") {
        " — the verifier wants a client certificate from its CA: enrol the host (`vmseal-host \
         enroll`) or give --cert/--key"
    } else if text.contains("Connection refused") {
        " — nothing listens there: is `vmseal-verifier serve` running, and the port right?"
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        " — that port does not speak TLS: is the URL's port the verifier's?"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// Unix seconds `t` as an RFC 3339 date and time (UTC), for people; the number itself if it is
/// out of range.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// An error and its causes as one line, each cause once: a cause whose text its parent's message
/// already holds (many messages embed their cause) is not repeated. For a command's final error
/// message (`error_text(anyhow_error.chain())`).
pub fn error_text<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut out = String::new();
    for c in chain {
        let t = c.to_string();
        if out.contains(&t) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&t);
    }
    out
}

/// [`error_text`] of an error and its `source()` chain.
pub fn error_chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    error_text(std::iter::successors(Some(e), |e| e.source()))
}

/// Check a verifier URL before anything is sent: `https://host[:port]`, nothing else.
pub fn check_url(url: &str) -> Result<(), ClientError> {
    let rest = match url.split_once("://") {
        Some(("https", rest)) => rest,
        Some(("http", rest)) => {
            return Err(ClientError::Url(format!(
                "{url:?} is plain HTTP: the verifier speaks mutual TLS only; use https://{rest}"
            )));
        }
        Some((scheme, _)) => {
            return Err(ClientError::Url(format!(
                "{url:?}: scheme {scheme:?}; use https://host:port"
            )));
        }
        None => {
            return Err(ClientError::Url(format!(
                "{url:?} has no scheme: use https://{url}"
            )));
        }
    };
    if rest.trim_end_matches('/').is_empty() {
        return Err(ClientError::Url(format!(
            "{url:?} names no host: use https://host:port"
        )));
    }
    Ok(())
}

impl ClientError {
    /// Whether trying the same request again later may succeed: the verifier was not reached
    /// (connection refused or reset, timeout), was overloaded (429) or its database was
    /// unavailable (503), or a proxy in front of it failed (502, 504). A refusal (4xx) or an
    /// internal error (500) stays what it is, and so does a TLS handshake the verifier refused
    /// (a wrong CA or certificate is fixed by configuration, not by waiting).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { cause, .. } => {
                let text = format!("{cause:?}");
                // A certificate problem reaches reqwest as a connect error too: not transient.
                let tls = [
                    "certificate",
                    "Certificate",
                    "UnknownIssuer",
                    "AlertReceived",
                ]
                .iter()
                .any(|w| text.contains(w));
                !tls && (cause.is_connect() || cause.is_timeout() || cause.is_request())
            }
            Self::Api { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Whether the verifier received the request and answered (a refusal, an answer this client
    /// rejected), as opposed to a request that never reached it (unreachable, TLS refused, bad
    /// local credentials).
    pub fn reached_verifier(&self) -> bool {
        matches!(self, Self::Api { .. } | Self::Answer(_) | Self::Ear(_))
    }

    /// The chain head a refusal of evidence carried, if any.
    pub fn chain_head(&self) -> Option<&ChainHead> {
        match self {
            Self::Api { body, .. } => body.chain.as_ref(),
            _ => None,
        }
    }

    /// The verifier's refusal code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }
}

/// A blocking mutual-TLS client of the verifier.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    ca_pem: Vec<u8>,
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
        check_url(base)?;
        let cfg = tls_config(ca_pem, cert_pem, key_pem)?;
        let http = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(cfg)
            .default_headers(default_headers())
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            ca_pem: ca_pem.to_vec(),
        })
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let body = self.send_raw(req, url)?;
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// The body of a 2xx answer; an API error otherwise.
    fn send_raw(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let transport = |cause| ClientError::Transport {
            url: url.to_owned(),
            cause,
        };
        let resp = req.send().map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().map_err(transport)?.to_vec();
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            let text = String::from_utf8_lossy(&body).into_owned();
            let body = serde_json::from_str(&text).unwrap_or(ApiErrorBody {
                code: ErrorCode::Unknown,
                message: format!("HTTP {status}: {text}"),
                chain: None,
            });
            Err(ClientError::Api { status, body })
        }
    }

    /// POST raw bytes.
    pub fn post_bytes(&self, path: &str, body: Vec<u8>) -> Result<serde_json::Value, ClientError> {
        self.post_typed(path, body, "application/octet-stream")
    }

    /// POST raw bytes of the media type `content_type`.
    pub fn post_typed(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(
            self.http
                .post(&url)
                .header("content-type", content_type)
                .body(body),
            &url,
        )
    }

    /// GET a body that is not JSON (a signed CoRIM, a PEM key), as it came.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send_raw(self.http.get(&url), &url)
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

    /// DELETE.
    pub fn delete(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.delete(&url), &url)
    }

    /// Follow the alert stream (`GET /v1/alerts/stream`, server-sent events) from after alert
    /// `after` (None: from now on), calling `on_alert` for each until it returns false or the
    /// connection ends. Returns the id of the last alert seen, to resume from.
    pub fn follow_alerts(
        &self,
        after: Option<i64>,
        mut on_alert: impl FnMut(Alert) -> bool,
    ) -> Result<Option<i64>, ClientError> {
        use std::io::BufRead as _;
        let path = match after {
            Some(a) => format!("/v1/alerts/stream?after={a}"),
            None => "/v1/alerts/stream".to_owned(),
        };
        let url = format!("{}{path}", self.base);
        let transport = |cause| ClientError::Transport {
            url: url.clone(),
            cause,
        };
        // A stream stays open: no overall deadline (the server sends a keep-alive every 15 s).
        let resp = self
            .http
            .get(&url)
            .timeout(std::time::Duration::from_secs(365 * 24 * 3600))
            .send()
            .map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp.text().map_err(transport)?;
            let body = serde_json::from_str(&text).unwrap_or(ApiErrorBody {
                code: ErrorCode::Unknown,
                message: format!("HTTP {status}: {text}"),
                chain: None,
            });
            return Err(ClientError::Api { status, body });
        }
        let mut last = after;
        let mut data = String::new();
        for line in std::io::BufReader::new(resp).lines() {
            let line = line.map_err(|e| ClientError::Answer(format!("alert stream: {e}")))?;
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                let alert: Alert = serde_json::from_str(&data)
                    .map_err(|e| ClientError::Answer(format!("alert stream event: {e}")))?;
                data.clear();
                last = Some(alert.alert_id);
                if !on_alert(alert) {
                    break;
                }
            }
        }
        Ok(last)
    }

    fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ClientError> {
        serde_json::from_value(v).map_err(|e| ClientError::Answer(e.to_string()))
    }

    /// Create a one-use enrollment token (admin).
    pub fn create_enrollment_token(
        &self,
        req: &NewEnrollmentToken,
    ) -> Result<EnrollmentToken, ClientError> {
        Self::decode(self.post_json("/v1/enrollment-tokens", req)?)
    }

    /// Send an enrollment bundle (with an enrollment token's certificate).
    pub fn enroll(&self, req: &EnrollmentRequest) -> Result<EnrollmentAnswer, ClientError> {
        Self::decode(self.post_json("/v1/enrollments", req)?)
    }

    /// Answer a credential challenge (with the same enrollment token's certificate).
    pub fn activate(&self, enrollment_id: &str, a: &Activation) -> Result<Enrolled, ClientError> {
        Self::decode(self.post_json(&format!("/v1/enrollments/{enrollment_id}/activation"), a)?)
    }

    /// The VM's active golden baseline (`GET /v1/vms/{vm}/baseline`), or None before one is
    /// promoted.
    pub fn active_baseline(&self, vm_id: &str) -> Result<Option<ActiveBaseline>, ClientError> {
        match self.get(&format!("/v1/vms/{vm_id}/baseline")) {
            Ok(b) => Self::decode(b).map(Some),
            Err(ClientError::Api { body, .. }) if body.code == ErrorCode::NoBaseline => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where the VM's evidence chain stands at the verifier (the VM's host agent, an admin or a
    /// viewer).
    pub fn chain_head(&self, vm_id: &str) -> Result<ChainHead, ClientError> {
        Self::decode(self.get(&format!("/v1/vms/{vm_id}/chain"))?)
    }

    /// The capture policy assigned to the VM (`GET /v1/vms/{vm}/policy`): its text, or None when
    /// the VM has none assigned.
    pub fn assigned_policy(&self, vm_id: &str) -> Result<Option<String>, ClientError> {
        let p: VmPolicy = Self::decode(self.get(&format!("/v1/vms/{vm_id}/policy"))?)?;
        Ok(p.policy)
    }

    /// A single-use verifier nonce for the VM (its host's agent, or an admin).
    pub fn nonce(&self, vm_id: &str) -> Result<Vec<u8>, ClientError> {
        let n: Nonce = Self::decode(self.post_json(&format!("/v1/vms/{vm_id}/nonce"), &())?)?;
        n.bytes()
            .ok_or_else(|| ClientError::Answer("the nonce is not hex".into()))
    }

    /// Submit evidence for a VM (agent); returns the appraisal once its signed EAR verified
    /// against the verifier CA and agrees with it (score, tier, sequence number).
    pub fn submit_evidence(
        &self,
        vm_id: &str,
        evidence: Vec<u8>,
    ) -> Result<AppraisalResult, ClientError> {
        let a: AppraisalResult =
            Self::decode(self.post_bytes(&format!("/v1/vms/{vm_id}/evidence"), evidence)?)?;
        let claims = verify_ear(&a.ear, &self.ca_pem, time::OffsetDateTime::now_utc())?;
        let sub = &claims["submods"][vm_id];
        if sub["vmseal.score"] != a.score
            || sub["ear_status"] != a.tier.name()
            || sub["vmseal.seq"] != a.seq
        {
            return Err(ClientError::Ear(EarError::Invalid(
                "the signed EAR disagrees with the appraisal it came with".into(),
            )));
        }
        Ok(a)
    }

    /// Open capture requests for `host_id` (agent), waiting up to `wait_secs` (0–60) for one.
    pub fn capture_requests(
        &self,
        host_id: &str,
        wait_secs: u32,
    ) -> Result<Vec<CaptureRequest>, ClientError> {
        let r: CaptureRequests = Self::decode(self.get(&format!(
            "/v1/hosts/{host_id}/capture-requests?wait={wait_secs}"
        ))?)?;
        Ok(r.requests)
    }

    /// Renew this host's agent certificate (its agent, with the current certificate): a
    /// challenge, fresh anchors over its nonce from `fresh` (the TPM quote by the same AK, the SNP
    /// report of the same chip), and a new key whose certificate the verifier issues. Returns
    /// (certificate PEM, key PEM, not_after); the old certificate is revoked.
    pub fn renew_agent(
        &self,
        host_id: &str,
        fresh: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<(String, String, i64), ClientError> {
        use base64::Engine as _;
        let c: Nonce =
            Self::decode(self.post_json(&format!("/v1/hosts/{host_id}/renewal-challenges"), &())?)?;
        let nonce = c
            .bytes()
            .ok_or_else(|| ClientError::Answer("the renewal challenge has no hex nonce".into()))?;
        let anchors = fresh(&nonce).map_err(ClientError::Activation)?;
        let (csr_pem, key_pem) = new_key_and_request()?;
        let r: Renewed = Self::decode(self.post_json(
            &format!("/v1/hosts/{host_id}/renewals"),
            &AgentRenewal {
                fresh: base64::engine::general_purpose::STANDARD.encode(anchors),
                csr_pem,
            },
        )?)?;
        Ok((r.agent_cert_pem, key_pem, r.not_after))
    }

    /// Renew the certificate this client presents (an admin's or a viewer's): (certificate PEM,
    /// key PEM, not_after); the old one is revoked.
    pub fn renew_own(&self) -> Result<(String, String, i64), ClientError> {
        let (csr_pem, key_pem) = new_key_and_request()?;
        let r: Renewed =
            Self::decode(self.post_json("/v1/certificates/renewals", &PersonRenewal { csr_pem })?)?;
        Ok((r.agent_cert_pem, key_pem, r.not_after))
    }

    /// Enrol this host with an enrollment token's client (see [`enroll_host`]).
    pub fn enroll_host(
        &self,
        intermediate_der: &[u8],
        ek_public: &[u8],
        fresh: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
        activate: impl FnOnce(&[u8], &[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<HostCredentials, ClientError> {
        enroll_host(self, intermediate_der, ek_public, fresh, activate)
    }
}

/// A new P-256 key and a certificate request for it: (request PEM, key PEM). The key an agent's
/// certificate will carry is made where it is used, so it never travels.
pub fn new_key_and_request() -> Result<(String, String), ClientError> {
    let err = |e: rcgen::Error| ClientError::Tls(format!("making the agent key: {e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(err)?;
    Ok((csr.pem().map_err(err)?, key.serialize_pem()))
}

/// What enrollment leaves a host with.
#[derive(Debug, Clone)]
pub struct HostCredentials {
    /// The verifier's answer.
    pub enrolled: Enrolled,
    /// The agent key (PEM) that `enrolled.agent_cert_pem` certifies.
    pub agent_key_pem: String,
}

/// The host side of enrollment, over a client holding an enrollment token: ask for the
/// verifier's challenge and make fresh anchors for its nonce with `fresh(nonce)` (CBOR
/// `FreshAnchors`), make the agent key, send the bundle, answer the credential challenge with
/// `activate(credential_blob, encrypted_secret)` (TPM2_ActivateCredential), and return the agent
/// certificate and key.
pub fn enroll_host(
    client: &Client,
    intermediate_der: &[u8],
    ek_public: &[u8],
    fresh: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
    activate: impl FnOnce(&[u8], &[u8]) -> Result<Vec<u8>, String>,
) -> Result<HostCredentials, ClientError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let c: Nonce = Client::decode(client.post_json("/v1/enrollment-challenges", &())?)?;
    let nonce = c
        .bytes()
        .ok_or_else(|| ClientError::Answer("the enrollment challenge carries no nonce".into()))?;
    let fresh = fresh(&nonce).map_err(ClientError::Activation)?;
    let (csr_pem, agent_key_pem) = new_key_and_request()?;
    let answer = client.enroll(&EnrollmentRequest {
        intermediate: B64.encode(intermediate_der),
        ek_public: (!ek_public.is_empty()).then(|| B64.encode(ek_public)),
        csr_pem,
        fresh: Some(B64.encode(fresh)),
    })?;
    let enrolled = match answer {
        EnrollmentAnswer::Enrolled(e) => e,
        EnrollmentAnswer::Challenge(c) => {
            let blob = B64
                .decode(&c.credential_blob)
                .map_err(|e| ClientError::Answer(format!("credential_blob: {e}")))?;
            let secret = B64
                .decode(&c.encrypted_secret)
                .map_err(|e| ClientError::Answer(format!("encrypted_secret: {e}")))?;
            let got = activate(&blob, &secret).map_err(ClientError::Activation)?;
            client.activate(
                &c.enrollment_id,
                &Activation {
                    secret: B64.encode(&got),
                },
            )?
        }
    };
    Ok(HostCredentials {
        enrolled,
        agent_key_pem,
    })
}

/// The EAR profile of vmseal's attestation results: draft-ietf-rats-ear-04, as Veraison's `ear`
/// crate 0.6 implements it (claim names with underscores: `ear_verifier_id`, `ear_status`,
/// `ear_trustworthiness_vector`, `ear_appraisal_policy_ids`).
pub const EAR_PROFILE: &str = "tag:ietf.org,2026:rats/ear#04";

/// The older Veraison profile (dotted claim names: `ear.verifier-id`, `ear.status`, …), still
/// signed when the service is configured for relying parties on older libraries
/// (`ear_profile = "veraison-2023"`), and still read by [`verify_ear`].
pub const EAR_PROFILE_VERAISON_2023: &str = "tag:github.com,2023:veraison/ear";

/// Which EAR profile results are signed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EarProfile {
    /// [`EAR_PROFILE`]: the draft as it stands (the default).
    #[default]
    Draft04,
    /// [`EAR_PROFILE_VERAISON_2023`]: for relying parties on older libraries.
    Veraison2023,
}

impl EarProfile {
    /// By its configuration name: `ear-04` or `veraison-2023`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "ear-04" => Some(Self::Draft04),
            "veraison-2023" => Some(Self::Veraison2023),
            _ => None,
        }
    }

    /// Its `eat_profile` value.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Draft04 => EAR_PROFILE,
            Self::Veraison2023 => EAR_PROFILE_VERAISON_2023,
        }
    }
}

/// An EAR's claims in the current draft's names: a result in the older profile is read with its
/// dotted names renamed (`ear.status` → `ear_status`, …; its one `ear.appraisal-policy-id`
/// becomes the list `ear_appraisal_policy_ids`), so a relying party reads one vocabulary.
fn normalize_ear(mut claims: serde_json::Value) -> serde_json::Value {
    if claims["eat_profile"] != EAR_PROFILE_VERAISON_2023 {
        return claims;
    }
    let rename = |m: &mut serde_json::Map<String, serde_json::Value>, from: &str, to: &str| {
        if let Some(v) = m.remove(from) {
            m.insert(to.to_owned(), v);
        }
    };
    if let Some(m) = claims.as_object_mut() {
        rename(m, "ear.verifier-id", "ear_verifier_id");
        rename(m, "ear.status", "ear_status");
    }
    if let Some(subs) = claims["submods"].as_object_mut() {
        for sub in subs.values_mut() {
            if let Some(m) = sub.as_object_mut() {
                rename(m, "ear.status", "ear_status");
                rename(
                    m,
                    "ear.trustworthiness-vector",
                    "ear_trustworthiness_vector",
                );
                if let Some(p) = m.remove("ear.appraisal-policy-id") {
                    m.insert(
                        "ear_appraisal_policy_ids".into(),
                        serde_json::Value::Array(vec![p]),
                    );
                }
            }
        }
    }
    claims
}

/// Extended key usage of the verifier's EAR-signing certificate.
pub const EAR_SIGNING_EKU: [u64; 5] = vmseal_sealer::oid::EKU_EAR_SIGNING;

/// Why an EAR was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EarError {
    /// Not a JWT, or its header is not ES256 with an `x5c` certificate.
    #[error("not a vmseal EAR: {0}")]
    Format(String),
    /// The signing certificate is not the verifier's EAR certificate under the trusted CA.
    #[error("EAR signing certificate: {0}")]
    Certificate(String),
    /// The signature does not verify, or the claims are not an EAR.
    #[error("EAR signature or claims: {0}")]
    Invalid(String),
}

/// The header every vmseal client sends: the verifier refuses state-changing requests that carry
/// neither it nor a JSON or octet-stream body, so a page of another origin in a browser holding an
/// admin's client certificate cannot change anything (no CORS preflight is ever granted).
pub const REQUEST_HEADER: &str = "x-vmseal-request";

/// Default headers of vmseal's HTTP clients ([`REQUEST_HEADER`]).
pub fn default_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        REQUEST_HEADER,
        reqwest::header::HeaderValue::from_static("1"),
    );
    h
}

/// Which TLS key exchanges a vmseal endpoint offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyExchange {
    /// The hybrid post-quantum X25519MLKEM768 first (offered with a key share, so it is what two
    /// vmseal endpoints negotiate), classical X25519, P-256 and P-384 after it for peers without it.
    #[default]
    PostQuantumPreferred,
    /// X25519MLKEM768 only: a classical-only peer cannot connect.
    PostQuantumOnly,
}

impl KeyExchange {
    /// From its configuration name: `pq-preferred` or `pq-only`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "pq-preferred" => Some(Self::PostQuantumPreferred),
            "pq-only" => Some(Self::PostQuantumOnly),
            _ => None,
        }
    }
}

/// The rustls crypto provider of every vmseal TLS endpoint: aws-lc-rs with the key-exchange
/// groups of `kx`, in preference order. (rustls's own default, without its
/// `prefer-post-quantum` feature, puts X25519 first, and a client sends its key share for the
/// first group only: the connection then settles on classical X25519.)
pub fn crypto_provider(kx: KeyExchange) -> rustls::crypto::CryptoProvider {
    use rustls::crypto::aws_lc_rs::kx_group;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = match kx {
        KeyExchange::PostQuantumPreferred => vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
        ],
        KeyExchange::PostQuantumOnly => vec![kx_group::X25519MLKEM768],
    };
    p
}

/// The TLS configuration every vmseal client uses: TLS 1.3, X25519MLKEM768 preferred (see
/// [`crypto_provider`]), the verifier's CA (`ca_pem`) as the only root, and a client certificate
/// and key (PEM). For async clients, e.g. a `reqwest::Client` built with
/// `tls_backend_preconfigured`.
pub fn tls_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ClientConfig, ClientError> {
    tls_config_with(ca_pem, cert_pem, key_pem, KeyExchange::default())
}

/// [`tls_config`] with the key exchanges of `kx`.
pub fn tls_config_with(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    kx: KeyExchange,
) -> Result<rustls::ClientConfig, ClientError> {
    let tls = |e: String| ClientError::Tls(e);
    let provider = Arc::new(crypto_provider(kx));
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
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls(e.to_string()))
}

/// Verify an EAR (compact JWT) from public material only: its `x5c` certificate must be issued
/// by one of `ca_pem`'s certificates, valid at `now`, and marked for EAR signing; the ES256
/// signature must verify with it; the profile must be [`EAR_PROFILE`] or the older
/// [`EAR_PROFILE_VERAISON_2023`]. Returns the claims in the current draft's names (see
/// `normalize_ear`).
pub fn verify_ear(
    token: &str,
    ca_pem: &[u8],
    now: time::OffsetDateTime,
) -> Result<serde_json::Value, EarError> {
    let claims = verify_signed(token, ca_pem, "JWT", now)?;
    if claims["eat_profile"] != EAR_PROFILE && claims["eat_profile"] != EAR_PROFILE_VERAISON_2023 {
        return Err(EarError::Invalid(format!(
            "eat_profile is {}, not {EAR_PROFILE} (or {EAR_PROFILE_VERAISON_2023})",
            claims["eat_profile"]
        )));
    }
    if !claims["submods"].is_object() {
        return Err(EarError::Invalid("no submods".into()));
    }
    Ok(normalize_ear(claims))
}

/// The checks every JWS the verifier signs gets: ES256 with `typ`, an `x5c` certificate issued
/// by one of `ca_pem`'s certificates, valid at `now` and marked for signing results; the
/// signature. Returns the claims.
fn verify_signed(
    token: &str,
    ca_pem: &[u8],
    typ: &str,
    now: time::OffsetDateTime,
) -> Result<serde_json::Value, EarError> {
    use base64::Engine as _;
    use vmseal_sealer::x509::{ParsedCert, chains_to, parse_bundle};
    let header = jsonwebtoken::decode_header(token).map_err(|e| EarError::Format(e.to_string()))?;
    if header.alg != jsonwebtoken::Algorithm::ES256 {
        return Err(EarError::Format(format!(
            "algorithm {:?}, not ES256",
            header.alg
        )));
    }
    if header.typ.as_deref() != Some(typ) {
        return Err(EarError::Format(format!(
            "typ {:?}, not {typ:?}",
            header.typ.as_deref().unwrap_or("")
        )));
    }
    let x5c = header
        .x5c
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 2)
        .ok_or_else(|| {
            EarError::Format(
                "x5c must hold the signer's certificate and at most its issuing CA".into(),
            )
        })?;
    let parse = |b64: &String| -> Result<ParsedCert, EarError> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| EarError::Format(format!("x5c: {e}")))?;
        ParsedCert::from_der(&der).map_err(|e| EarError::Certificate(e.to_string()))
    };
    let cert = parse(&x5c[0])?;
    let roots: Vec<Vec<u8>> = parse_bundle(ca_pem)
        .map_err(|e| EarError::Certificate(format!("CA: {e}")))?
        .into_iter()
        .map(|c| c.der)
        .collect();
    match x5c.get(1) {
        // Issued by the root directly (states made before the issuing CA).
        None => chains_to(&cert, &roots).map_err(EarError::Certificate)?,
        // Issued by the issuing CA, which the root issued.
        Some(i) => {
            let issuing = parse(i)?;
            chains_to(&issuing, &roots).map_err(EarError::Certificate)?;
            if !issuing.is_ca || !issuing.valid_at(now.unix_timestamp()) {
                return Err(EarError::Certificate(
                    "the issuing certificate is not a CA valid now".into(),
                ));
            }
            if !vmseal_sealer::x509::signed_by(&cert, &issuing) {
                return Err(EarError::Certificate(
                    "not issued by the issuing CA it names".into(),
                ));
            }
            Vec::new()
        }
    };
    if !cert.valid_at(now.unix_timestamp()) {
        return Err(EarError::Certificate("outside its validity period".into()));
    }
    if !cert.has_eku(vmseal_sealer::oid::EKU_EAR_SIGNING_STR) {
        return Err(EarError::Certificate(
            "not marked for signing attestation results (EKU)".into(),
        ));
    }
    let key = jsonwebtoken::DecodingKey::from_ec_der(&cert.public_key);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map_err(|e| EarError::Invalid(e.to_string()))?;
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner cause")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] Outer);
        let e = Wrapper(Outer(Inner));
        let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![&e];
        while let Some(s) = chain.last().and_then(|c| c.source()) {
            chain.push(s);
        }
        assert_eq!(error_text(chain), "wrapper: outer: inner cause");
    }

    #[test]
    fn verifier_urls_are_checked_before_anything_is_sent() {
        check_url("https://verifier:8443").unwrap();
        check_url("https://localhost:8443/").unwrap();
        for (bad, says) in [
            ("http://verifier:8443", "use https://verifier:8443"),
            ("verifier:8443", "no scheme: use https://verifier:8443"),
            ("ftp://x", "use https://host:port"),
            ("https://", "names no host"),
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
