//! The vmseal verifier: appraises publicly verified snapshot evidence against golden baselines and
//! scores trust. [`appraise`] is the decision logic, with no I/O; the service around it (mutual-TLS
//! API, enrollment, storage) builds on it.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod appraise;
pub mod config;
pub mod corim;
pub mod ear;
pub mod hardware;
pub mod kernel;
pub mod pki;
pub mod service;
pub mod state;
pub mod store;

/// Now, as Unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Entry points for the fuzz targets in `fuzz/`: every request body the server decodes.
#[doc(hidden)]
pub mod fuzzing {
    /// JSON bodies (VMs, baselines, enrollment tokens, enrollment bundles, activation answers,
    /// webhooks, silences, schedules), the client's error body, the certificate request inside an
    /// enrollment bundle, and the signed results and alerts relying parties verify.
    pub fn request_bodies(data: &[u8]) {
        let _ = serde_json::from_slice::<vmseal_client::NewVm>(data);
        let _ = serde_json::from_slice::<vmseal_client::PromoteBaseline>(data);
        let _ = serde_json::from_slice::<vmseal_client::ApiErrorBody>(data);
        if let Ok(t) = serde_json::from_slice::<vmseal_client::NewEnrollmentToken>(data)
            && let Some(h) = t.hardware
        {
            let _ = h.check();
        }
        let _ = serde_json::from_slice::<vmseal_client::EnrollmentRequest>(data);
        let _ = serde_json::from_slice::<vmseal_client::EnrollmentAnswer>(data);
        let _ = serde_json::from_slice::<vmseal_client::Activation>(data);
        let _ = serde_json::from_slice::<vmseal_client::SetThreshold>(data);
        if let Ok(p) = serde_json::from_slice::<vmseal_client::AssignPolicy>(data) {
            // What the verifier does with an assigned policy's text: the host's own parser.
            let _ = vmseal_policy::Policy::parse(&p.policy);
        }
        if let Ok(m) = serde_json::from_slice::<vmseal_client::AllowModules>(data) {
            for r in &m.allowed {
                let _ = crate::appraise::ModuleRule::parse(r);
            }
        }
        let _ = serde_json::from_slice::<vmseal_client::CaptureRequests>(data);
        let _ = serde_json::from_slice::<vmseal_client::NewWebhook>(data);
        let _ = serde_json::from_slice::<vmseal_client::NewSilence>(data);
        let _ = serde_json::from_slice::<vmseal_client::SetSchedule>(data);
        let _ = serde_json::from_slice::<vmseal_client::Alert>(data);
        let _ = serde_json::from_slice::<vmseal_client::ChainHead>(data);
        let _ = serde_json::from_slice::<vmseal_client::PersonRenewal>(data);
        let _ = serde_json::from_slice::<vmseal_client::Renewed>(data);
        if let Ok(r) = serde_json::from_slice::<vmseal_client::AgentRenewal>(data) {
            // What the verifier does with a renewal's fresh anchors before anything else.
            use base64::Engine as _;
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(r.fresh.trim()) {
                let _ = vmseal_sealer::anchor::decode::<vmseal_sealer::anchor::FreshAnchors>(&raw);
            }
            if let Ok(p) = pem::parse(r.csr_pem.as_bytes()) {
                let _ = crate::pki::check_request(p.contents());
            }
        }
        let _ = rcgen::CertificateSigningRequestParams::from_der(&data.into());
        // What relying parties parse from the verifier: its signed attestation results.
        if let Ok(token) = std::str::from_utf8(data) {
            let _ = vmseal_client::verify_ear(token, b"", time::OffsetDateTime::UNIX_EPOCH);
            // And what webhook receivers parse: signed alert deliveries.
            let _ = vmseal_client::verify_alert(
                token,
                b"",
                "ops",
                300,
                time::OffsetDateTime::UNIX_EPOCH,
            );
            // And what auditors parse: signed audit checkpoints.
            let _ = vmseal_client::audit::verify_checkpoint(
                token,
                b"",
                time::OffsetDateTime::UNIX_EPOCH,
            );
        }
        // An audit export, checked against no checkpoints and against a made-up one.
        if let Ok(e) = serde_json::from_slice::<vmseal_client::AuditExport>(data) {
            let cp = vmseal_client::audit::AuditCheckpoint {
                audit_id: e.entries.len() as i64,
                audit_hash: "00".repeat(32),
                iat: 0,
            };
            let _ = vmseal_client::audit::verify_export(&e.entries, &[]);
            let _ = vmseal_client::audit::verify_export(&e.entries, &[cp]);
        }
        // Evidence and intermediate certificates go through the sealer's public verification,
        // which has its own targets (evidence, certificate).
    }
}
