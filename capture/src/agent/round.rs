//! One attestation round, as the host agent and the guest shim both run it:
//!
//! 1. **baseline** — the verifier's active baseline for the VM (the one it appraises against),
//!    else the agent's own;
//! 2. **chain** — where the verifier's record of the VM's chain stands, so the evidence builds on
//!    it and a refusal or a lost answer never wedges the next round;
//! 3. **nonce** — a fresh one from the verifier, the one its capture request carried, or none for a
//!    scheduled capture;
//! 4. **capture** — the caller's, answering the nonce;
//! 5. **seal** — the next evidence of the VM's chain, written under `out_dir` as `VM-SEQ.cose`
//!    (with its page hashes beside it as `VM-SEQ.baseline.cbor` when asked: what an admin
//!    promotes);
//! 6. **submit** — delivered by the [`Courier`], which retries what waiting can fix and sets the
//!    rest aside.
//!
//! Without a verifier (an offline agent) a round stops after the seal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmseal_client::{Client, ClientError};
use vmseal_sealer::state::{HostState, StateError, write_atomic};

use crate::agent::courier::{Courier, Delivery};
use crate::agent::seal::{SealSnapshotError, Sealed, seal_snapshot};
use crate::{Baseline, CaptureError, Snapshot};

/// Where a round's nonce comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Ask the verifier for a nonce now (`POST /v1/vms/{vm}/nonce`).
    Ask,
    /// The nonce of the verifier's capture request being answered.
    Given(Vec<u8>),
    /// A scheduled capture: no nonce.
    Scheduled,
}

/// Why a round did not produce evidence. (Evidence that was sealed but refused or undelivered is
/// a [`Round`] whose delivery says so, not an error.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoundError {
    /// The verifier's baseline could not be asked for.
    #[error("asking the verifier for VM {vm}'s baseline: {source}")]
    Baseline {
        /// VM.
        vm: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The verifier served a baseline the agent cannot use.
    #[error("the verifier's baseline of VM {vm}: {source}")]
    BadBaseline {
        /// VM.
        vm: String,
        /// Why.
        #[source]
        source: CaptureError,
    },
    /// No nonce.
    #[error("asking the verifier for a nonce for VM {vm}: {source}")]
    Nonce {
        /// VM.
        vm: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The capture failed.
    #[error("capturing VM {vm}: {source}")]
    Capture {
        /// VM.
        vm: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The chain position could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// Sealing failed.
    #[error("sealing the evidence of VM {vm}: {source}")]
    Seal {
        /// VM.
        vm: String,
        /// Why.
        #[source]
        source: SealSnapshotError,
    },
    /// The evidence directory.
    #[error("cannot write {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a round produced.
#[derive(Debug)]
pub struct Round {
    /// The snapshot captured.
    pub snapshot: Snapshot,
    /// The evidence sealed from it (its file is `sealed.out`).
    pub sealed: Sealed,
    /// The baseline its deltas were taken against.
    pub baseline: Option<Baseline>,
    /// Where its page hashes were kept, when asked.
    pub page_hashes: Option<PathBuf>,
    /// What became of the submission (`None` without a verifier).
    pub delivery: Option<Delivery>,
}

/// An agent: a host state (its sealer and chains), the module name it seals under, and the
/// verifier it talks to, if any.
pub struct Agent<'a> {
    state: &'a HostState,
    module: &'a str,
    verifier: Option<(&'a Client, Courier<'a>)>,
    keep_page_hashes: bool,
}

impl<'a> Agent<'a> {
    /// An agent sealing as `module` ("vmseal-host", "vmseal-shim").
    pub fn new(state: &'a HostState, module: &'a str) -> Self {
        Self {
            state,
            module,
            verifier: None,
            keep_page_hashes: false,
        }
    }

    /// Talk to a verifier; `courier` (built on the same client) delivers the evidence.
    pub fn with_verifier(mut self, client: &'a Client, courier: Courier<'a>) -> Self {
        self.verifier = Some((client, courier));
        self
    }

    /// Keep each snapshot's page hashes beside its evidence (`VM-SEQ.baseline.cbor`).
    pub fn keep_page_hashes(mut self, keep: bool) -> Self {
        self.keep_page_hashes = keep;
        self
    }

    /// The verifier's client, if any.
    pub fn client(&self) -> Option<&'a Client> {
        self.verifier.as_ref().map(|(c, _)| *c)
    }

    /// The courier, if any.
    pub fn courier(&self) -> Option<&Courier<'a>> {
        self.verifier.as_ref().map(|(_, c)| c)
    }

    /// The baseline the verifier appraises `vm` against (its active one), else `own`.
    pub fn baseline(
        &self,
        vm: &str,
        own: Option<&Baseline>,
    ) -> Result<Option<Baseline>, RoundError> {
        let served = match self.client() {
            Some(c) => c
                .active_baseline(vm)
                .map_err(|source| RoundError::Baseline {
                    vm: vm.to_owned(),
                    source,
                })?,
            None => None,
        };
        match served {
            Some(b) => {
                Baseline::from_verifier(&b)
                    .map(Some)
                    .map_err(|source| RoundError::BadBaseline {
                        vm: vm.to_owned(),
                        source,
                    })
            }
            None => Ok(own.cloned()),
        }
    }

    /// Run one round for `vm`: see the [module documentation](self). `capture` gets the nonce the
    /// evidence must carry; `on_retry` hears of each failed submission attempt (attempt, error,
    /// wait before the next).
    pub fn round<E>(
        &self,
        vm: &str,
        fresh: Freshness,
        own_baseline: Option<&Baseline>,
        out_dir: &Path,
        capture: impl FnOnce(Option<&[u8]>) -> Result<Snapshot, E>,
        on_retry: &dyn Fn(u32, &ClientError, Duration),
    ) -> Result<Round, RoundError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let baseline = self.baseline(vm, own_baseline)?;
        if let Some(c) = self.courier()
            && let Err(e) = c.sync(vm)
        {
            // The courier delivers against the local record and corrects it from the refusal.
            tracing::warn!(vm, "sealing from the local record of the chain: {e}");
        }
        let nonce = match (fresh, self.client()) {
            (Freshness::Given(n), _) => Some(n),
            (Freshness::Ask, Some(c)) => Some(c.nonce(vm).map_err(|source| RoundError::Nonce {
                vm: vm.to_owned(),
                source,
            })?),
            (Freshness::Ask | Freshness::Scheduled, _) => None,
        };
        let snapshot = capture(nonce.as_deref()).map_err(|e| RoundError::Capture {
            vm: vm.to_owned(),
            source: e.into(),
        })?;
        std::fs::create_dir_all(out_dir).map_err(|source| RoundError::Io {
            path: out_dir.to_owned(),
            source,
        })?;
        let base = self.state.vm_chain(vm)?;
        let seq = base.next_seq;
        let out = out_dir.join(format!("{vm}-{seq:06}.cose"));
        let sealed = seal_snapshot(
            self.state,
            self.module,
            vm,
            &snapshot,
            baseline.as_ref(),
            &out,
        )
        .map_err(|source| RoundError::Seal {
            vm: vm.to_owned(),
            source,
        })?;
        let page_hashes = if self.keep_page_hashes {
            let p = out_dir.join(format!("{vm}-{seq:06}.baseline.cbor"));
            write_atomic(&p, &snapshot.baseline().to_bytes())?;
            Some(p)
        } else {
            None
        };
        let delivery = self
            .courier()
            .map(|c| c.deliver(vm, &sealed, &out, &base, on_retry));
        Ok(Round {
            snapshot,
            sealed,
            baseline,
            page_hashes,
            delivery,
        })
    }
}
