//! Delivering sealed evidence to the verifier so that neither a refusal nor an outage wedges a VM.
//!
//! The verifier's record of a VM's chain is the one that counts: every snapshot is built on the
//! verifier's head (`GET /v1/vms/{vm}/chain`, and the head every refusal carries), never on a
//! local guess. A delivery ends one of three ways:
//!
//! - **accepted** — the appraisal came back (a retry of evidence the verifier already accepted
//!   gets its stored appraisal back, marked `duplicate`: retrying is idempotent);
//! - **refused** — a permanent refusal (4xx): the evidence is set aside under `refused/` with the
//!   verifier's reason beside it, and the local chain moves to the head the refusal named, so the
//!   next snapshot is accepted once the cause is fixed;
//! - **undelivered** — the verifier could not be reached (or was overloaded) for the whole retry
//!   window, or the request could not be made at all (a CA that is not the verifier's): the same
//!   evidence was retried with backoff where waiting can help, then set aside under
//!   `undelivered/`, and the local chain stepped back so the next snapshot takes its place.
//!
//! Nothing a host sealed is ever overwritten: the files set aside stay beside the accepted ones.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vmseal_client::{ChainHead, Client, ClientError};
use vmseal_sealer::state::{HostState, VmChain, write_atomic};

use crate::agent::seal::Sealed;

/// How long a transient failure is retried with the same evidence, by default.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(60);

/// The first wait between attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What became of one evidence.
#[derive(Debug)]
pub enum Delivery {
    /// The verifier appraised it.
    Accepted {
        /// The appraisal (its EAR verified by the client).
        appraisal: Box<vmseal_client::AppraisalResult>,
        /// The verifier had accepted it already (an answer lost on the way): this is its stored
        /// appraisal.
        duplicate: bool,
        /// Attempts it took.
        attempts: u32,
    },
    /// The verifier refused it for good; the next snapshot builds on `head`.
    Refused {
        /// The verifier's code (`policy_mismatch`, `seq_gap`, …); `None` for an answer the
        /// client itself rejected.
        code: Option<vmseal_client::ErrorCode>,
        /// The whole error, with its cause and fix.
        error: String,
        /// Where the VM's chain stands now, when known.
        head: Option<ChainHead>,
        /// Where the refused evidence was set aside (None: it was accepted after all, and stays).
        kept: Option<PathBuf>,
    },
    /// The verifier could not be reached for the whole retry window.
    Undelivered {
        /// The last error.
        error: String,
        /// Attempts made.
        attempts: u32,
        /// Where the evidence was set aside.
        kept: Option<PathBuf>,
    },
}

impl Delivery {
    /// Whether the verifier accepted the evidence.
    pub fn accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }

    /// One line for a log: what happened and what happens next.
    pub fn describe(&self) -> String {
        match self {
            Self::Accepted {
                duplicate: true,
                attempts,
                ..
            } => format!(
                "accepted earlier (its answer was lost; the stored appraisal came back on attempt {attempts})"
            ),
            Self::Accepted { attempts: 1, .. } => "accepted".into(),
            Self::Accepted { attempts, .. } => format!("accepted on attempt {attempts}"),
            Self::Refused {
                error, head, kept, ..
            } => format!(
                "refused: {error}{}{}",
                kept.as_deref()
                    .map(|k| format!("; the evidence is kept at {}", k.display()))
                    .unwrap_or_default(),
                head.as_ref()
                    .map(|h| format!("; the next snapshot is #{}", h.next_seq))
                    .unwrap_or_default()
            ),
            Self::Undelivered {
                error,
                attempts,
                kept,
            } => format!(
                "not delivered after {attempts} attempt(s): {error}{}; the next snapshot takes its place",
                kept.as_deref()
                    .map(|k| format!("; the evidence is kept at {}", k.display()))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Why the chain could not be brought to the verifier's head.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CourierError {
    /// Asking the verifier.
    #[error("asking the verifier where VM {vm}'s chain stands: {source}")]
    Ask {
        /// VM.
        vm: String,
        /// Cause.
        #[source]
        source: Box<ClientError>,
    },
    /// The verifier's answer is not a chain head of this VM.
    #[error("the verifier's chain head for VM {vm} is not usable: {reason}")]
    BadHead {
        /// VM.
        vm: String,
        /// Why.
        reason: String,
    },
    /// Writing the local record.
    #[error("recording VM {vm}'s chain position: {source}")]
    State {
        /// VM.
        vm: String,
        /// Cause.
        #[source]
        source: vmseal_sealer::state::StateError,
    },
}

/// Delivers a host's (or a guest shim's) evidence to the verifier.
#[derive(Debug)]
pub struct Courier<'a> {
    client: &'a Client,
    state: &'a HostState,
    retry_for: Duration,
    stop: Option<&'a AtomicBool>,
}

impl<'a> Courier<'a> {
    /// A courier for `state`'s evidence through `client`, retrying for [`DEFAULT_RETRY`].
    pub fn new(client: &'a Client, state: &'a HostState) -> Self {
        Self {
            client,
            state,
            retry_for: DEFAULT_RETRY,
            stop: None,
        }
    }

    /// Retry a transient failure for this long (zero: one attempt).
    pub fn retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// Stop retrying once `flag` is set (the agent is shutting down).
    pub fn stop_on(mut self, flag: &'a AtomicBool) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Bring the local record of `vm`'s chain to the verifier's head, and return it.
    pub fn sync(&self, vm: &str) -> Result<ChainHead, CourierError> {
        let head = self
            .client
            .chain_head(vm)
            .map_err(|source| CourierError::Ask {
                vm: vm.to_owned(),
                source: Box::new(source),
            })?;
        self.adopt(vm, &head)?;
        Ok(head)
    }

    fn adopt(&self, vm: &str, head: &ChainHead) -> Result<(), CourierError> {
        if head.vm_id != vm {
            return Err(CourierError::BadHead {
                vm: vm.to_owned(),
                reason: format!("it names VM {:?}", head.vm_id),
            });
        }
        self.state
            .set_chain(
                vm,
                &VmChain {
                    next_seq: head.next_seq,
                    prev: head.prev.clone(),
                },
            )
            .map_err(|source| CourierError::State {
                vm: vm.to_owned(),
                source,
            })
    }

    /// Deliver `sealed` (evidence of `vm`, its file at `file`) that was built on `base`, the chain
    /// position before it was sealed. See the module documentation for the three outcomes.
    /// `on_retry(attempt, error, wait)` is called before each wait.
    pub fn deliver(
        &self,
        vm: &str,
        sealed: &Sealed,
        file: &Path,
        base: &VmChain,
        on_retry: &dyn Fn(u32, &ClientError, Duration),
    ) -> Delivery {
        let deadline = Instant::now() + self.retry_for;
        let mut wait = FIRST_BACKOFF;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let e = match self.client.submit_evidence(vm, sealed.evidence.clone()) {
                Ok(appraisal) => {
                    return Delivery::Accepted {
                        duplicate: appraisal.duplicate,
                        appraisal: Box::new(appraisal),
                        attempts,
                    };
                }
                Err(e) => e,
            };
            let stopping = self.stop.is_some_and(|s| s.load(Ordering::Relaxed));
            if e.is_transient() || !e.reached_verifier() {
                if e.is_transient() && !stopping && Instant::now() + wait < deadline {
                    on_retry(attempts, &e, wait);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_BACKOFF);
                    continue;
                }
                // The next snapshot takes this one's place: the chain steps back to where it
                // stood. (Had the verifier accepted it after all, the next one is refused naming
                // the head, and the one after it is accepted.)
                let _ = self.state.set_chain(vm, base);
                return Delivery::Undelivered {
                    error: e.to_string(),
                    attempts,
                    kept: set_aside(
                        file,
                        "undelivered",
                        vm,
                        sealed,
                        "unreachable",
                        &e.to_string(),
                    ),
                };
            }
            // A refusal: follow the verifier's head (the one it named, else ask for it).
            let head = match e.chain_head() {
                Some(h) => self.adopt(vm, h).ok().map(|()| h.clone()),
                None => self.sync(vm).ok(),
            };
            if head.is_none() {
                let _ = self.state.set_chain(vm, base);
            }
            // An answer the client rejected (its EAR) may follow evidence the verifier accepted:
            // then the evidence is part of the chain and stays where it is.
            let accepted = head.as_ref().is_some_and(|h| {
                h.next_seq == sealed.claims.seq + 1
                    && h.prev.as_deref() == Some(hex::encode(sealed.digest).as_str())
            });
            let code = e.code();
            let kept = if accepted {
                None
            } else {
                let named = code.map_or("client", vmseal_client::ErrorCode::as_str);
                set_aside(file, "refused", vm, sealed, named, &e.to_string())
            };
            return Delivery::Refused {
                code,
                error: e.to_string(),
                head,
                kept,
            };
        }
    }
}

/// Move `file` to `DIR/<why>/` beside it, with the reason in a `.json` file of the same name; the
/// name carries the evidence's digest, so nothing set aside is ever overwritten. Returns the new
/// path (None when it could not be moved: it then stays where it was, and is logged).
fn set_aside(
    file: &Path,
    why: &str,
    vm: &str,
    sealed: &Sealed,
    code: &str,
    message: &str,
) -> Option<PathBuf> {
    let dir = file.parent().unwrap_or(Path::new(".")).join(why);
    let name = format!(
        "{vm}-{:06}-{}.cose",
        sealed.claims.seq,
        &hex::encode(sealed.digest)[..16]
    );
    let to = dir.join(&name);
    let moved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::rename(file, &to));
    if let Err(e) = moved {
        tracing::warn!(
            "keeping {} in place: cannot move it to {}: {e}",
            file.display(),
            to.display()
        );
        return None;
    }
    let note = serde_json::json!({
        "vm_id": vm,
        "seq": sealed.claims.seq,
        "evidence_sha256": hex::encode(sealed.digest),
        "code": code,
        "message": message,
        "at": time::OffsetDateTime::now_utc().unix_timestamp(),
    });
    if let Err(e) = write_atomic(&to.with_extension("json"), note.to_string().as_bytes()) {
        tracing::warn!("cannot write the reason beside {}: {e}", to.display());
    }
    Some(to)
}
