//! Every error code the verifier answers, with its HTTP status: one table, read by the server to
//! answer, by clients to decide, and by the test that holds docs/api.md to it.

/// Defines [`ErrorCode`] from one table: variant, wire name, HTTP status, meaning.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $name:literal, $status:literal; )+) => {
        /// A stable error code of the verifier's API (`{code, message}` answers). Clients decide
        /// on it, never on the message. A code this build does not know reads as
        /// [`ErrorCode::Unknown`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $variant, )+
            /// A code a newer verifier answered that this build does not know, or an answer that
            /// was not the verifier's JSON (a proxy's error page).
            Unknown,
        }

        impl ErrorCode {
            /// Every code the verifier answers (not [`ErrorCode::Unknown`]).
            pub const ALL: &'static [ErrorCode] = &[$( ErrorCode::$variant, )+];

            /// The code on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $name, )+
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// The HTTP status the verifier answers it with.
            pub fn status(self) -> u16 {
                match self {
                    $( ErrorCode::$variant => $status, )+
                    ErrorCode::Unknown => 500,
                }
            }

            /// The code named `name`; [`ErrorCode::Unknown`] for any other.
            pub fn from_name(name: &str) -> Self {
                match name {
                    $( $name => ErrorCode::$variant, )+
                    _ => ErrorCode::Unknown,
                }
            }
        }
    };
}

error_codes! {
    /// The client certificate's role may not make this request.
    Forbidden = "forbidden", 403;
    /// No such VM, host, alert, webhook, capture request or endpoint.
    NotFound = "not_found", 404;
    /// The VM has no golden baseline yet (an admin promotes or imports one).
    NoBaseline = "no_baseline", 404;
    /// Another request changed the same state first.
    Conflict = "conflict", 409;
    /// A host id enrolled from other hardware than its own.
    HostIdentityChanged = "host_identity_changed", 409;
    /// The body is larger than the endpoint accepts.
    TooLarge = "too_large", 413;
    /// The client has too many requests in flight.
    TooManyRequests = "too_many_requests", 429;
    /// The database cannot be reached; nothing changed; retry.
    Unavailable = "unavailable", 503;
    /// A failure of the service (logged).
    Internal = "internal", 500;
    /// The body is not the JSON the endpoint takes.
    BadJson = "bad_json", 400;
    /// The body could not be read.
    BadBody = "bad_body", 400;
    /// The query string is not what the endpoint takes.
    BadQuery = "bad_query", 400;
    /// A VM id is not 1-128 characters of `[A-Za-z0-9._-]`.
    BadVmId = "bad_vm_id", 400;
    /// A host id is not 1-128 characters of `[A-Za-z0-9._-]`.
    BadHostId = "bad_host_id", 400;
    /// A threshold out of 0-100.
    BadThreshold = "bad_threshold", 400;
    /// A sequence number out of range.
    BadSeq = "bad_seq", 400;
    /// A lifetime out of range.
    BadLifetime = "bad_lifetime", 400;
    /// A capture schedule out of range.
    BadSchedule = "bad_schedule", 400;
    /// An alert id that is not one.
    BadAlertId = "bad_alert_id", 400;
    /// The policy text does not parse (line and column named).
    BadPolicy = "bad_policy", 400;
    /// A module rule is not `NAME VERSION [BUILD-SHA256]`.
    BadModule = "bad_module", 400;
    /// An enrollment token's `require` is not tpm, snp, both or none.
    BadRequire = "bad_require", 400;
    /// An enrollment token's `replace` without a host id.
    BadReplace = "bad_replace", 400;
    /// An enrollment token's `restart_chains` without a host id.
    BadRestartChains = "bad_restart_chains", 400;
    /// An enrollment token's hardware policy is inconsistent.
    BadHardware = "bad_hardware", 400;
    /// The agent's certificate request is unusable.
    BadCsr = "bad_csr", 400;
    /// The fresh anchors of an enrollment or renewal do not decode.
    BadFresh = "bad_fresh", 400;
    /// A field that must be base64 is not.
    BadBase64 = "bad_base64", 400;
    /// A TPM-anchored enrollment without the EK public area.
    EkPublicMissing = "ek_public_missing", 400;
    /// A baseline promotion's page hashes are malformed.
    BadLeaves = "bad_leaves", 400;
    /// A baseline lacks a region the assigned policy names.
    BaselineIncomplete = "baseline_incomplete", 400;
    /// A baseline promoted from a sampled region.
    BaselineSampled = "baseline_sampled", 400;
    /// A webhook URL is malformed.
    BadWebhook = "bad_webhook", 400;
    /// A silence is malformed.
    BadSilence = "bad_silence", 400;
    /// An imported baseline is not a well-formed signed CoRIM.
    BadCorim = "bad_corim", 400;
    /// The enrollment token was used already.
    TokenUsed = "token_used", 422;
    /// The enrollment token has expired.
    TokenExpired = "token_expired", 422;
    /// An enrollment without a fresh-anchor challenge.
    ChallengeMissing = "challenge_missing", 422;
    /// An enrollment with a wrong fresh-anchor challenge.
    BadChallenge = "bad_challenge", 422;
    /// The intermediate's anchors failed verification.
    EnrollmentRefused = "enrollment_refused", 422;
    /// The TPM's EK is not the one its certificate names.
    EkMismatch = "ek_mismatch", 422;
    /// The TPM's EK is of a kind vmseal does not support.
    EkUnsupported = "ek_unsupported", 422;
    /// Credential activation failed.
    ActivationFailed = "activation_failed", 422;
    /// The anchors do not meet the hardware policy (field, found and required named).
    HardwarePolicy = "hardware_policy", 422;
    /// A renewal whose fresh anchors do not prove the enrolled hardware.
    RenewalRefused = "renewal_refused", 422;
    /// A rebuilt host would continue its VMs' chains without a `--restart-chains` token.
    ChainsExist = "chains_exist", 422;
    /// The promoted page hashes do not give the snapshot's signed roots.
    BaselineMismatch = "baseline_mismatch", 422;
    /// No trusted key signed the CoRIM, or its signature does not verify.
    CorimUntrusted = "corim_untrusted", 422;
    /// A trusted CoRIM that is not a vmseal baseline.
    CorimInvalid = "corim_invalid", 422;
    /// An imported baseline names a region the assigned policy does not.
    CorimUnknownRegion = "corim_unknown_region", 422;
    /// An imported baseline hashes with another algorithm than the assigned policy.
    CorimHashMismatch = "corim_hash_mismatch", 422;
    /// The evidence does not verify (signature, chain, claims).
    EvidenceInvalid = "evidence_invalid", 422;
    /// The evidence's host is not enrolled, or its intermediate is not the pinned one.
    NotEnrolled = "not_enrolled", 422;
    /// The evidence is another VM's.
    WrongVm = "wrong_vm", 422;
    /// The evidence comes from another host than the VM's.
    WrongHost = "wrong_host", 422;
    /// The nonce is unknown, used or expired.
    BadNonce = "bad_nonce", 422;
    /// Evidence without a nonce older than `max_age`.
    Stale = "stale", 422;
    /// Evidence older than the VM's last accepted one.
    Reordered = "reordered", 422;
    /// A sequence number skipped.
    SeqGap = "seq_gap", 422;
    /// `prev` does not name the VM's last accepted evidence.
    BrokenChain = "broken_chain", 422;
    /// A chain started elsewhere than #0 or an admin's reset.
    ChainStart = "chain_start", 422;
    /// Captured under another policy than the VM's assigned one.
    PolicyMismatch = "policy_mismatch", 422;
    /// Captured under another policy than the baseline's.
    BaselinePolicyMismatch = "baseline_policy_mismatch", 422;
    /// The baseline predates the verifier's record of policies.
    BaselinePolicyUnknown = "baseline_policy_unknown", 422;
    /// A capture module the VM's rules do not allow.
    ModuleNotAllowed = "module_not_allowed", 422;
    /// A sampled region's evidence answered no nonce.
    SampleUnkeyed = "sample_unkeyed", 422;
    /// A sampled region holds other pages than the nonce selects.
    SampleMismatch = "sample_mismatch", 422;
    /// The delta leaves out changed pages.
    IncompleteDelta = "incomplete_delta", 422;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::from_name(&name))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Self::ALL.iter().map(|c| c.as_str())))
            .description(Some("A stable error code (docs/api.md, \"Error codes\")"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_name_a_status_and_reads_back() {
        let mut names = std::collections::BTreeSet::new();
        for &c in ErrorCode::ALL {
            assert!(names.insert(c.as_str()), "{c:?} named twice");
            assert!(
                matches!(
                    c.status(),
                    400 | 403 | 404 | 409 | 413 | 422 | 429 | 500 | 503
                ),
                "{c:?}"
            );
            assert_eq!(ErrorCode::from_name(c.as_str()), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), c);
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"from_a_newer_verifier\"").unwrap(),
            ErrorCode::Unknown
        );
    }
}
