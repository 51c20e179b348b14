//! Baselines: the per-page leaves of an earlier capture (or the verifier's golden baseline),
//! against which a snapshot reports which pages changed.

use serde::{Deserialize, Serialize};
use vmseal_sealer::merkle::Digest;

use crate::CaptureError;

/// Per-page leaves of a previous capture, against which later captures report a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// SHA-256 of the policy text.
    #[serde(with = "serde_bytes")]
    pub policy_digest: Vec<u8>,
    /// Hash name.
    pub hash: String,
    /// Regions.
    pub regions: Vec<BaselineRegion>,
    /// The snapshot's `kernel` claim, its deterministic CBOR, when it carried one: what a golden
    /// kernel state is promoted from (the verifier checks it against the digest it kept).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub kernel: Option<Vec<u8>>,
}

/// One region of a baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineRegion {
    /// Region name.
    pub name: String,
    /// Concatenated 32-byte leaves.
    #[serde(with = "serde_bytes")]
    pub leaves: Vec<u8>,
}

impl BaselineRegion {
    /// The leaves.
    pub fn leaves(&self) -> Vec<Digest> {
        self.leaves
            .chunks_exact(32)
            .filter_map(|c| c.try_into().ok())
            .collect()
    }
}

impl Baseline {
    /// The verifier's active baseline as `GET /v1/vms/{vm}/baseline` serves it (region names and
    /// hex leaves), checked like a decoded file.
    pub fn from_verifier(b: &vmseal_client::ActiveBaseline) -> Result<Self, CaptureError> {
        let bad = |w: &str| CaptureError::Baseline(format!("the verifier's baseline: {w}"));
        let regions = b
            .regions
            .iter()
            .map(|r| {
                Ok(BaselineRegion {
                    name: r.name.clone(),
                    leaves: hex::decode(&r.leaves).map_err(|_| bad("leaves are not hex"))?,
                })
            })
            .collect::<Result<Vec<_>, CaptureError>>()?;
        let policy_digest = match &b.policy_digest {
            Some(h) => hex::decode(h).map_err(|_| bad("policy digest is not hex"))?,
            None => Vec::new(),
        };
        // Through the decoder, which checks the leaves are whole digests.
        Self::from_bytes(
            &Self {
                policy_digest,
                hash: b.hash_alg.clone(),
                regions,
                kernel: None,
            }
            .to_bytes(),
        )
    }

    /// Encode as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// Decode from CBOR.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CaptureError> {
        let v: Self = ciborium::de::from_reader_with_recursion_limit(b, 8)
            .map_err(|e| CaptureError::Baseline(e.to_string()))?;
        if v.regions.iter().any(|r| r.leaves.len() % 32 != 0) {
            return Err(CaptureError::Baseline(
                "leaf data is not a whole number of 32-byte digests".into(),
            ));
        }
        Ok(v)
    }
}
