//! The vmseal verifier: appraises publicly verified snapshot evidence against golden baselines and
//! scores trust. [`appraise`] is the decision logic, with no I/O; the service around it (mutual-TLS
//! API, enrollment, storage) builds on it.
#![forbid(unsafe_code)]

pub mod appraise;
pub mod bench;
pub mod pki;
pub mod server;
pub mod store;

/// Entry points for the fuzz targets in `fuzz/`: every request body the server decodes.
#[doc(hidden)]
pub mod fuzzing {
    /// JSON bodies (`POST /v1/vms`, `POST /v1/vms/{vm}/baselines`) and the client's error body.
    pub fn request_bodies(data: &[u8]) {
        let _ = serde_json::from_slice::<vmseal_client::NewVm>(data);
        let _ = serde_json::from_slice::<vmseal_client::PromoteBaseline>(data);
        let _ = serde_json::from_slice::<vmseal_client::ApiErrorBody>(data);
        // Evidence and intermediate certificates go through the sealer's public verification,
        // which has its own targets (evidence, certificate).
    }
}
