//! The snapshot claims: a deterministic CBOR map (an EAT, RFC 9711, with a vmseal profile).
//!
//! Every field is documented in `docs/evidence-format.md`. Encoding follows the core
//! deterministic encoding requirements of RFC 8949 §4.2.1 (shortest integers and lengths,
//! definite lengths, map keys sorted by their encoded bytes); [`Claims::decode`] re-encodes what it
//! parsed and rejects any input that is not byte-identical, so one set of claims has exactly one
//! encoding and one digest.

use ciborium::value::Value;

use crate::merkle::{Digest, HashAlg, MerkleError, root_of};

pub mod kernel;
pub use kernel::{KernelObjects, ModuleFact, TaskFact, WalkFailure};

/// The EAT profile of vmseal snapshot claims: the claims EAT and CWT register under their integer
/// keys ([`REGISTERED`]), vmseal's own as private claims under text keys.
pub const PROFILE: &str = "tag:vmseal.dev,2026:snapshot-evidence/v2";

/// The previous profile, every claim under a text key: read (with a warning from the verifier)
/// for one release, never written.
pub const PROFILE_V1: &str = "tag:vmseal.dev,2026:snapshot-evidence/v1";

/// The claims vmseal carries whose meaning EAT or CWT registers, with their keys: `iat` (CWT,
/// RFC 8392: 6), the nonce (`eat_nonce`, RFC 9711: 10) and the profile (`eat_profile`, RFC 9711:
/// 265).
pub const REGISTERED: [(&str, i64); 3] = [("iat", 6), ("nonce", 10), ("eat_profile", 265)];

/// Which profile a claims map is encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimsProfile {
    /// [`PROFILE`]: registered claims under their integer keys.
    V2,
    /// [`PROFILE_V1`]: every claim under a text key (read for one release).
    V1,
}

/// The page size of every region's ranges.
pub const PAGE: u64 = 4096;

/// Upper bound on an encoded claims map, to refuse absurd inputs before parsing.
pub const MAX_CLAIMS_LEN: usize = 64 * 1024 * 1024;

/// Errors decoding or checking claims.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The bytes are not CBOR.
    #[error("claims are not valid CBOR: {0}")]
    Cbor(String),
    /// The CBOR is valid but not in deterministic encoding.
    #[error("claims are not deterministically encoded (RFC 8949 §4.2.1)")]
    NotDeterministic,
    /// A field is missing or has the wrong type.
    #[error("claim `{field}`: {problem}")]
    Field {
        /// Claim path.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The profile is not vmseal's.
    #[error("unknown EAT profile {0:?}")]
    Profile(String),
    /// `memory_root` or `code_hash` does not match the regions.
    #[error("{0} does not match the region roots")]
    Inconsistent(&'static str),
    /// Claims too large.
    #[error("claims are {0} bytes, more than the {MAX_CLAIMS_LEN}-byte limit")]
    TooLarge(usize),
    /// Merkle computation failed.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> ClaimsError {
    ClaimsError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// What a region holds; drives how a change is scored. On the verifier's JSON API it is its
/// [`name`](Self::name) (`"code"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "lowercase"))]
pub enum RegionClass {
    /// Executable code: any change is a likely injection.
    Code,
    /// Read-only data.
    Rodata,
    /// Mutable data.
    Data,
    /// A structure with known layout (task lists, descriptor tables).
    Structure,
}

impl std::fmt::Display for RegionClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl RegionClass {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Rodata => "rodata",
            Self::Data => "data",
            Self::Structure => "structure",
        }
    }
    /// Parse a stable name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "code" => Self::Code,
            "rodata" => Self::Rodata,
            "data" => Self::Data,
            "structure" => Self::Structure,
            _ => return None,
        })
    }
}

/// How much a change in a region matters. On the verifier's JSON API it is its
/// [`name`](Self::name) (`"critical"`, …).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "lowercase"))]
pub enum Severity {
    /// Informational.
    Low,
    /// Worth a look.
    Medium,
    /// Likely compromise.
    High,
    /// Compromise.
    Critical,
}

impl Severity {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
    /// Parse a stable name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            "critical" => Self::Critical,
            _ => return None,
        })
    }
}

/// A guest-physical range that was read: `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpaRange {
    /// First guest-physical address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One captured region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Name from the policy.
    pub name: String,
    /// Class.
    pub class: RegionClass,
    /// Severity of a change.
    pub severity: Severity,
    /// Guest-physical ranges actually read, in tree order.
    pub ranges: Vec<GpaRange>,
    /// Number of pages (leaves).
    pub pages: u64,
    /// Merkle root over the page hashes.
    pub root: Digest,
}

/// The capture policy that chose the regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// Policy name.
    pub name: String,
    /// Policy version.
    pub version: u64,
    /// Digest of the exact policy text.
    pub digest: Digest,
}

/// The capture module that produced the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// Digest of the module's build (its executable).
    pub build_digest: Digest,
}

/// Full or incremental capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureKind {
    /// Every page was read.
    Full,
    /// Only pages dirtied since snapshot `base_seq` were read.
    Incremental {
        /// Sequence number of the base snapshot.
        base_seq: u64,
    },
}

/// How the capture went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureInfo {
    /// Full or incremental.
    pub kind: CaptureKind,
    /// Pages read.
    pub pages_read: u64,
    /// Time the VM was paused, microseconds.
    pub pause_us: u64,
    /// Total capture time, microseconds.
    pub duration_us: u64,
}

/// Changed leaves of one region relative to the enrolled baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionDelta {
    /// Region name.
    pub region: String,
    /// (leaf index, new leaf hash), sorted by index.
    pub changes: Vec<(u64, Digest)>,
}

/// The claims of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// VM identifier.
    pub vm_id: String,
    /// Host identifier.
    pub host_id: String,
    /// Sequence number, monotonic per VM, from 0.
    pub seq: u64,
    /// Digest (SHA-256) of the previous evidence of this VM; `None` for the first.
    pub prev: Option<Digest>,
    /// Issued-at, seconds since the Unix epoch.
    pub iat: i64,
    /// The verifier's nonce, when the capture answers a challenge.
    pub nonce: Option<Vec<u8>>,
    /// Which boot of the guest the snapshot belongs to, as its capture source knows it (16
    /// bytes). Guest-physical ranges of code may move across boots (KASLR), never within one:
    /// the verifier compares them between snapshots of the same boot. Absent: the source cannot
    /// tell, and the verifier treats every such snapshot as one boot.
    pub boot: Option<[u8; 16]>,
    /// Capture policy.
    pub policy: PolicyRef,
    /// Page and tree hash.
    pub hash_alg: HashAlg,
    /// Regions, in policy order.
    pub regions: Vec<Region>,
    /// Root over the region roots.
    pub memory_root: Digest,
    /// Root over the roots of the code regions (all-zero if there are none).
    pub code_hash: Digest,
    /// Capture module.
    pub module: ModuleInfo,
    /// Capture details.
    pub capture: CaptureInfo,
    /// Changed leaves per region, against the baseline the host was told about.
    pub delta: Vec<RegionDelta>,
    /// Small structure regions encrypted to the verifier (opaque here).
    pub sealed: Option<Vec<u8>>,
    /// What the guest kernel's own structures held at the pause, when the policy asks for
    /// kernel objects.
    pub kernel: Option<KernelObjects>,
}

impl Claims {
    /// Compute `memory_root` and `code_hash` from the regions.
    pub fn compute_roots(
        alg: HashAlg,
        regions: &[Region],
    ) -> Result<(Digest, Digest), ClaimsError> {
        let all: Vec<Digest> = regions.iter().map(|r| r.root).collect();
        let memory_root = root_of(alg, &all)?;
        let code: Vec<Digest> = regions
            .iter()
            .filter(|r| r.class == RegionClass::Code)
            .map(|r| r.root)
            .collect();
        let code_hash = if code.is_empty() {
            [0u8; 32]
        } else {
            root_of(alg, &code)?
        };
        Ok((memory_root, code_hash))
    }

    /// Check the internal consistency of the claims.
    pub fn check(&self) -> Result<(), ClaimsError> {
        if self.regions.is_empty() {
            return Err(field("regions", "no regions"));
        }
        // Linear in regions + delta entries: one index of names, looked up once per entry.
        let mut names = std::collections::HashMap::with_capacity(self.regions.len());
        for r in &self.regions {
            if names.insert(r.name.as_str(), r).is_some() {
                return Err(field(
                    "regions",
                    format!("region {:?} appears twice", r.name),
                ));
            }
            if r.pages == 0 {
                return Err(field(format!("regions.{}.pages", r.name), "zero pages"));
            }
            // The ranges are the pages read: whole pages, as many as the region has.
            let mut total = 0u64;
            for g in &r.ranges {
                if g.len == 0 || g.start % PAGE != 0 || g.len % PAGE != 0 {
                    return Err(field(
                        format!("regions.{}.ranges", r.name),
                        "a range is not whole, non-empty pages",
                    ));
                }
                total = total.saturating_add(g.len / PAGE);
            }
            if total != r.pages {
                return Err(field(
                    format!("regions.{}.ranges", r.name),
                    format!("cover {total} pages, but the region has {}", r.pages),
                ));
            }
        }
        let mut seen = std::collections::HashSet::with_capacity(self.delta.len());
        for d in &self.delta {
            let Some(r) = names.get(d.region.as_str()) else {
                return Err(field(
                    "delta",
                    format!("names unknown region {:?}", d.region),
                ));
            };
            if !seen.insert(d.region.as_str()) {
                return Err(field(
                    "delta",
                    format!("region {:?} has two delta entries", d.region),
                ));
            }
            if !d.changes.windows(2).all(|w| w[0].0 < w[1].0) {
                return Err(field(
                    format!("delta.{}", d.region),
                    "indices not strictly increasing",
                ));
            }
            if d.changes.last().is_some_and(|c| c.0 >= r.pages) {
                return Err(field(
                    format!("delta.{}", d.region),
                    "index beyond the region",
                ));
            }
        }
        if let Some(k) = &self.kernel {
            k.check()?;
        }
        let (memory_root, code_hash) = Self::compute_roots(self.hash_alg, &self.regions)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &memory_root[..],
            &self.memory_root[..],
        )) {
            return Err(ClaimsError::Inconsistent("memory_root"));
        }
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &code_hash[..],
            &self.code_hash[..],
        )) {
            return Err(ClaimsError::Inconsistent("code_hash"));
        }
        Ok(())
    }

    /// Deterministic CBOR encoding, in [`PROFILE`].
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(ClaimsProfile::V2)
    }

    /// Deterministic CBOR encoding in `profile` (the previous one only to check what was read).
    fn encode_as(&self, profile: ClaimsProfile) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing a `Value` into a `Vec` cannot fail.
        let _ = ciborium::into_writer(&self.to_value(profile), &mut out);
        out
    }

    /// Decode, requiring deterministic encoding, and check consistency.
    pub fn decode(bytes: &[u8]) -> Result<Self, ClaimsError> {
        Self::decode_versioned(bytes).map(|(c, _)| c)
    }

    /// [`Claims::decode`], saying which profile the claims were in ([`PROFILE_V1`] is read for
    /// one release: its reader should warn).
    pub fn decode_versioned(bytes: &[u8]) -> Result<(Self, ClaimsProfile), ClaimsError> {
        if bytes.len() > MAX_CLAIMS_LEN {
            return Err(ClaimsError::TooLarge(bytes.len()));
        }
        let value: Value = ciborium::de::from_reader_with_recursion_limit(bytes, 16)
            .map_err(|e| ClaimsError::Cbor(e.to_string()))?;
        let (value, profile) = top_level_names(&value)?;
        let claims = Self::from_value(&value, profile)?;
        if claims.encode_as(profile) != bytes {
            return Err(ClaimsError::NotDeterministic);
        }
        claims.check()?;
        Ok((claims, profile))
    }

    fn to_value(&self, profile: ClaimsProfile) -> Value {
        let mut m = MapBuilder::default();
        m.text(
            "eat_profile",
            match profile {
                ClaimsProfile::V2 => PROFILE,
                ClaimsProfile::V1 => PROFILE_V1,
            },
        );
        m.text("vm_id", &self.vm_id);
        m.text("host_id", &self.host_id);
        m.uint("seq", self.seq);
        if let Some(p) = &self.prev {
            m.bytes("prev", p);
        }
        m.int("iat", self.iat);
        if let Some(n) = &self.nonce {
            m.bytes("nonce", n);
        }
        if let Some(b) = &self.boot {
            m.bytes("boot", b);
        }
        let mut p = MapBuilder::default();
        p.text("name", &self.policy.name);
        p.uint("version", self.policy.version);
        p.bytes("digest", &self.policy.digest);
        m.put("policy", p.build());
        m.text("hash_alg", self.hash_alg.name());
        m.put(
            "regions",
            Value::Array(self.regions.iter().map(region_value).collect()),
        );
        m.bytes("memory_root", &self.memory_root);
        m.bytes("code_hash", &self.code_hash);
        let mut md = MapBuilder::default();
        md.text("name", &self.module.name);
        md.text("version", &self.module.version);
        md.bytes("build_digest", &self.module.build_digest);
        m.put("module", md.build());
        let mut c = MapBuilder::default();
        match self.capture.kind {
            CaptureKind::Full => c.text("kind", "full"),
            CaptureKind::Incremental { base_seq } => {
                c.text("kind", "incremental");
                c.uint("base_seq", base_seq);
            }
        }
        c.uint("pages_read", self.capture.pages_read);
        c.uint("pause_us", self.capture.pause_us);
        c.uint("duration_us", self.capture.duration_us);
        m.put("capture", c.build());
        if !self.delta.is_empty() {
            let deltas = self
                .delta
                .iter()
                .map(|d| {
                    let mut dm = MapBuilder::default();
                    dm.text("region", &d.region);
                    dm.put(
                        "changes",
                        Value::Array(
                            d.changes
                                .iter()
                                .map(|(i, h)| {
                                    Value::Array(vec![
                                        Value::Integer((*i).into()),
                                        Value::Bytes(h.to_vec()),
                                    ])
                                })
                                .collect(),
                        ),
                    );
                    dm.build()
                })
                .collect();
            m.put("delta", Value::Array(deltas));
        }
        if let Some(s) = &self.sealed {
            m.bytes("sealed", s);
        }
        if let Some(k) = &self.kernel {
            m.put("kernel", k.to_value());
        }
        match profile {
            ClaimsProfile::V2 => m.build_keyed(|name| {
                REGISTERED
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, k)| Value::Integer((*k).into()))
            }),
            ClaimsProfile::V1 => m.build(),
        }
    }

    fn from_value(v: &Value, profile: ClaimsProfile) -> Result<Self, ClaimsError> {
        let m = Map::new(v, "claims")?;
        let found = m.text("eat_profile")?;
        let want = match profile {
            ClaimsProfile::V2 => PROFILE,
            ClaimsProfile::V1 => PROFILE_V1,
        };
        if found != want {
            return Err(ClaimsError::Profile(found));
        }
        let p = Map::new(m.get("policy")?, "policy")?;
        let policy = PolicyRef {
            name: p.text("name")?,
            version: p.uint("version")?,
            digest: p.digest("digest")?,
        };
        p.only(&["name", "version", "digest"])?;
        let hash_alg_name = m.text("hash_alg")?;
        let hash_alg = HashAlg::from_name(&hash_alg_name)
            .ok_or_else(|| field("hash_alg", format!("unknown hash {hash_alg_name:?}")))?;
        let regions = m
            .array("regions")?
            .iter()
            .map(region_from_value)
            .collect::<Result<Vec<_>, _>>()?;
        let md = Map::new(m.get("module")?, "module")?;
        let module = ModuleInfo {
            name: md.text("name")?,
            version: md.text("version")?,
            build_digest: md.digest("build_digest")?,
        };
        md.only(&["name", "version", "build_digest"])?;
        let c = Map::new(m.get("capture")?, "capture")?;
        let kind = match c.text("kind")?.as_str() {
            "full" => {
                c.only(&["kind", "pages_read", "pause_us", "duration_us"])?;
                CaptureKind::Full
            }
            "incremental" => {
                c.only(&["kind", "base_seq", "pages_read", "pause_us", "duration_us"])?;
                CaptureKind::Incremental {
                    base_seq: c.uint("base_seq")?,
                }
            }
            other => return Err(field("capture.kind", format!("unknown kind {other:?}"))),
        };
        let capture = CaptureInfo {
            kind,
            pages_read: c.uint("pages_read")?,
            pause_us: c.uint("pause_us")?,
            duration_us: c.uint("duration_us")?,
        };
        let delta = match m.opt("delta") {
            None => Vec::new(),
            Some(_) => m
                .array("delta")?
                .iter()
                .map(delta_from_value)
                .collect::<Result<Vec<_>, _>>()?,
        };
        m.only(&[
            "eat_profile",
            "vm_id",
            "host_id",
            "seq",
            "prev",
            "iat",
            "nonce",
            "boot",
            "policy",
            "hash_alg",
            "regions",
            "memory_root",
            "code_hash",
            "module",
            "capture",
            "delta",
            "sealed",
            "kernel",
        ])?;
        Ok(Self {
            vm_id: m.text("vm_id")?,
            host_id: m.text("host_id")?,
            seq: m.uint("seq")?,
            prev: m.opt("prev").map(|_| m.digest("prev")).transpose()?,
            iat: m.int("iat")?,
            nonce: m.opt("nonce").map(|_| m.bytes("nonce")).transpose()?,
            boot: m
                .opt("boot")
                .map(|_| {
                    let b = m.bytes("boot")?;
                    <[u8; 16]>::try_from(b.as_slice()).map_err(|_| {
                        field("claims.boot", format!("expected 16 bytes, got {}", b.len()))
                    })
                })
                .transpose()?,
            policy,
            hash_alg,
            regions,
            memory_root: m.digest("memory_root")?,
            code_hash: m.digest("code_hash")?,
            module,
            capture,
            delta,
            sealed: m.opt("sealed").map(|_| m.bytes("sealed")).transpose()?,
            kernel: m.opt("kernel").map(KernelObjects::from_value).transpose()?,
        })
    }
}

fn region_value(r: &Region) -> Value {
    let mut m = MapBuilder::default();
    m.text("name", &r.name);
    m.text("class", r.class.name());
    m.text("severity", r.severity.name());
    m.put(
        "ranges",
        Value::Array(
            r.ranges
                .iter()
                .map(|g| {
                    Value::Array(vec![
                        Value::Integer(g.start.into()),
                        Value::Integer(g.len.into()),
                    ])
                })
                .collect(),
        ),
    );
    m.uint("pages", r.pages);
    m.bytes("root", &r.root);
    m.build()
}

fn region_from_value(v: &Value) -> Result<Region, ClaimsError> {
    let m = Map::new(v, "regions[]")?;
    m.only(&["name", "class", "severity", "ranges", "pages", "root"])?;
    let class = m.text("class")?;
    let severity = m.text("severity")?;
    let ranges = m
        .array("ranges")?
        .iter()
        .map(|r| match r {
            Value::Array(a) if a.len() == 2 => Ok(GpaRange {
                start: as_u64(&a[0]).ok_or_else(|| field("ranges", "start is not a uint"))?,
                len: as_u64(&a[1]).ok_or_else(|| field("ranges", "len is not a uint"))?,
            }),
            _ => Err(field("ranges", "expected [start, len]")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Region {
        name: m.text("name")?,
        class: RegionClass::from_name(&class)
            .ok_or_else(|| field("regions.class", format!("unknown class {class:?}")))?,
        severity: Severity::from_name(&severity)
            .ok_or_else(|| field("regions.severity", format!("unknown severity {severity:?}")))?,
        ranges,
        pages: m.uint("pages")?,
        root: m.digest("root")?,
    })
}

fn delta_from_value(v: &Value) -> Result<RegionDelta, ClaimsError> {
    let m = Map::new(v, "delta[]")?;
    m.only(&["region", "changes"])?;
    let changes = m
        .array("changes")?
        .iter()
        .map(|c| match c {
            Value::Array(a) if a.len() == 2 => {
                let i =
                    as_u64(&a[0]).ok_or_else(|| field("delta.changes", "index is not a uint"))?;
                let h = match &a[1] {
                    Value::Bytes(b) => digest_of(b, "delta.changes")?,
                    _ => return Err(field("delta.changes", "hash is not bytes")),
                };
                Ok((i, h))
            }
            _ => Err(field("delta.changes", "expected [index, hash]")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RegionDelta {
        region: m.text("region")?,
        changes,
    })
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn digest_of(b: &[u8], name: &str) -> Result<Digest, ClaimsError> {
    b.try_into()
        .map_err(|_| field(name, format!("expected 32 bytes, got {}", b.len())))
}

/// The top-level claims map with the registered claims' integer keys read as their names, and
/// which profile it is in: [`PROFILE`] has `eat_profile` under 265, [`PROFILE_V1`] under the text
/// key. In the current profile a registered claim under its text name, or an integer key vmseal
/// does not know, is refused.
fn top_level_names(v: &Value) -> Result<(Value, ClaimsProfile), ClaimsError> {
    let Value::Map(entries) = v else {
        return Err(field("claims", "not a map"));
    };
    let registered = |k: &Value| {
        REGISTERED
            .iter()
            .find(|(_, key)| matches!(k, Value::Integer(i) if i64::try_from(*i).ok() == Some(*key)))
            .map(|(n, _)| *n)
    };
    let v2 = entries
        .iter()
        .any(|(k, _)| registered(k) == Some("eat_profile"));
    if !v2 {
        return Ok((v.clone(), ClaimsProfile::V1));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (k, val) in entries {
        match k {
            Value::Text(t) if REGISTERED.iter().any(|(n, _)| n == t) => {
                return Err(field(
                    format!("claims.{t}"),
                    "a registered claim goes under its integer key",
                ));
            }
            Value::Text(_) => out.push((k.clone(), val.clone())),
            Value::Integer(_) => match registered(k) {
                Some(name) => out.push((Value::Text(name.to_owned()), val.clone())),
                None => return Err(field("claims", "unknown integer claim key")),
            },
            _ => return Err(field("claims", "a key that is neither text nor integer")),
        }
    }
    Ok((Value::Map(out), ClaimsProfile::V2))
}

/// Builds a map whose keys are sorted by their deterministic encoding.
#[derive(Default)]
struct MapBuilder(Vec<(String, Value)>);

impl MapBuilder {
    fn put(&mut self, k: &str, v: Value) {
        self.0.push((k.to_owned(), v));
    }
    fn text(&mut self, k: &str, v: &str) {
        self.put(k, Value::Text(v.to_owned()));
    }
    fn bytes(&mut self, k: &str, v: &[u8]) {
        self.put(k, Value::Bytes(v.to_vec()));
    }
    fn uint(&mut self, k: &str, v: u64) {
        self.put(k, Value::Integer(v.into()));
    }
    fn int(&mut self, k: &str, v: i64) {
        self.put(k, Value::Integer(v.into()));
    }
    fn build(self) -> Value {
        self.build_keyed(|_| None)
    }

    /// The map, with the keys `key` gives (integer keys of registered claims) instead of their
    /// names, sorted bytewise by their deterministic encodings (RFC 8949 §4.2.1): integer keys
    /// before text, shorter text before longer.
    fn build_keyed(self, key: impl Fn(&str) -> Option<Value>) -> Value {
        let encoded = |k: &Value| {
            let mut b = Vec::new();
            // Writing a key into a `Vec` cannot fail.
            let _ = ciborium::into_writer(k, &mut b);
            b
        };
        let mut entries: Vec<(Vec<u8>, Value, Value)> = self
            .0
            .into_iter()
            .map(|(name, v)| {
                let k = key(&name).unwrap_or(Value::Text(name));
                (encoded(&k), k, v)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Map(entries.into_iter().map(|(_, k, v)| (k, v)).collect())
    }
}

/// Read access to a decoded map with typed getters and precise errors.
struct Map<'a> {
    name: &'static str,
    entries: &'a [(Value, Value)],
}

impl<'a> Map<'a> {
    fn new(v: &'a Value, name: &'static str) -> Result<Self, ClaimsError> {
        match v {
            Value::Map(entries) => {
                let mut seen = std::collections::BTreeSet::new();
                for (k, _) in entries {
                    match k {
                        Value::Text(t) if seen.insert(t.as_str()) => {}
                        Value::Text(t) => return Err(field(name, format!("duplicate key {t:?}"))),
                        _ => return Err(field(name, "non-text key")),
                    }
                }
                Ok(Self { name, entries })
            }
            _ => Err(field(name, "not a map")),
        }
    }
    fn opt(&self, k: &str) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(key, _)| matches!(key, Value::Text(t) if t == k))
            .map(|(_, v)| v)
    }
    fn get(&self, k: &str) -> Result<&'a Value, ClaimsError> {
        self.opt(k)
            .ok_or_else(|| field(format!("{}.{k}", self.name), "missing"))
    }
    fn only(&self, allowed: &[&str]) -> Result<(), ClaimsError> {
        for (k, _) in self.entries {
            if let Value::Text(t) = k
                && !allowed.contains(&t.as_str())
            {
                return Err(field(format!("{}.{t}", self.name), "unknown claim"));
            }
        }
        Ok(())
    }
    fn text(&self, k: &str) -> Result<String, ClaimsError> {
        match self.get(k)? {
            Value::Text(t) => Ok(t.clone()),
            _ => Err(field(format!("{}.{k}", self.name), "not text")),
        }
    }
    fn bytes(&self, k: &str) -> Result<Vec<u8>, ClaimsError> {
        match self.get(k)? {
            Value::Bytes(b) => Ok(b.clone()),
            _ => Err(field(format!("{}.{k}", self.name), "not bytes")),
        }
    }
    fn digest(&self, k: &str) -> Result<Digest, ClaimsError> {
        let b = self.bytes(k)?;
        digest_of(&b, &format!("{}.{k}", self.name))
    }
    fn uint(&self, k: &str) -> Result<u64, ClaimsError> {
        as_u64(self.get(k)?)
            .ok_or_else(|| field(format!("{}.{k}", self.name), "not an unsigned integer"))
    }
    fn int(&self, k: &str) -> Result<i64, ClaimsError> {
        match self.get(k)? {
            Value::Integer(i) => {
                i64::try_from(*i).map_err(|_| field(format!("{}.{k}", self.name), "out of range"))
            }
            _ => Err(field(format!("{}.{k}", self.name), "not an integer")),
        }
    }
    fn boolean(&self, k: &str) -> Result<bool, ClaimsError> {
        match self.get(k)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(field(format!("{}.{k}", self.name), "not a boolean")),
        }
    }
    fn array(&self, k: &str) -> Result<&'a [Value], ClaimsError> {
        match self.get(k)? {
            Value::Array(a) => Ok(a),
            _ => Err(field(format!("{}.{k}", self.name), "not an array")),
        }
    }
}

#[doc(hidden)]
pub mod example {
    //! Example claims for tests and benchmarks.
    use super::*;

    /// A consistent claims map with two regions.
    pub fn claims(vm_id: &str, seq: u64) -> Claims {
        let alg = HashAlg::Sha256;
        let regions = vec![
            Region {
                name: "kernel-text".into(),
                class: RegionClass::Code,
                severity: Severity::Critical,
                ranges: vec![GpaRange {
                    start: 0x100000,
                    len: 0x4000,
                }],
                pages: 4,
                root: alg.leaf(b"code"),
            },
            Region {
                name: "task-table".into(),
                class: RegionClass::Structure,
                severity: Severity::High,
                ranges: vec![GpaRange {
                    start: 0x200000,
                    len: 0x1000,
                }],
                pages: 1,
                root: alg.leaf(b"tasks"),
            },
        ];
        let (memory_root, code_hash) = Claims::compute_roots(alg, &regions).unwrap_or_default();
        Claims {
            vm_id: vm_id.into(),
            host_id: "host-1".into(),
            seq,
            prev: None,
            iat: 1_790_000_000,
            nonce: Some(vec![1, 2, 3, 4]),
            boot: Some([7; 16]),
            policy: PolicyRef {
                name: "default".into(),
                version: 1,
                digest: alg.leaf(b"policy"),
            },
            hash_alg: alg,
            regions,
            memory_root,
            code_hash,
            module: ModuleInfo {
                name: "vmseal-host".into(),
                version: "0.1.0".into(),
                build_digest: [7; 32],
            },
            capture: CaptureInfo {
                kind: CaptureKind::Full,
                pages_read: 5,
                pause_us: 10,
                duration_us: 100,
            },
            delta: vec![RegionDelta {
                region: "kernel-text".into(),
                changes: vec![(1, [9; 32])],
            }],
            sealed: None,
            kernel: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact() {
        let c = example::claims("vm-a", 3);
        let bytes = c.encode();
        assert_eq!(Claims::decode(&bytes).unwrap(), c);
    }

    #[test]
    fn keys_are_in_deterministic_order() {
        let bytes = example::claims("vm-a", 3).encode();
        let v: Value = ciborium::from_reader(&bytes[..]).unwrap();
        let Value::Map(m) = v else { panic!() };
        let keys: Vec<String> = m
            .iter()
            .map(|(k, _)| match k {
                Value::Integer(i) => i64::try_from(*i).unwrap().to_string(),
                k => k.as_text().unwrap().to_owned(),
            })
            .collect();
        // The registered claims' integer keys first (6 iat, 10 nonce, 265 profile), then the
        // private text keys, shorter first.
        assert_eq!(&keys[..6], ["6", "10", "265", "seq", "boot", "delta"]);
    }

    #[test]
    fn the_previous_profile_is_read_and_registered_claims_need_their_keys() {
        let c = example::claims("vm-a", 3);
        // The previous profile (text keys only) still decodes, and says so.
        let v1 = c.encode_as(ClaimsProfile::V1);
        assert_ne!(v1, c.encode());
        let (back, profile) = Claims::decode_versioned(&v1).unwrap();
        assert_eq!((back, profile), (c.clone(), ClaimsProfile::V1));
        assert_eq!(
            Claims::decode_versioned(&c.encode()).unwrap().1,
            ClaimsProfile::V2
        );
        // In the current profile, `iat` under its text name is refused, and so is an integer key
        // vmseal does not know.
        let bytes = edited(&c, |m| {
            m.push((Value::Text("iat".into()), Value::Integer(1.into())));
        });
        assert!(matches!(
            Claims::decode(&bytes),
            Err(ClaimsError::Field { .. })
        ));
        let bytes = edited(&c, |m| {
            m.insert(0, (Value::Integer(1.into()), Value::Text("x".into())));
        });
        assert!(matches!(
            Claims::decode(&bytes),
            Err(ClaimsError::Field { .. })
        ));
    }

    /// `c` in the current profile as a CBOR map, edited by `edit`, encoded.
    fn edited(c: &Claims, edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
        let Value::Map(mut m) = c.to_value(ClaimsProfile::V2) else {
            panic!("claims encode as a map")
        };
        edit(&mut m);
        let mut bytes = Vec::new();
        ciborium::into_writer(&Value::Map(m), &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn non_deterministic_encoding_is_refused() {
        let c = example::claims("vm-a", 3);
        // Same content, keys in insertion order rather than sorted.
        let bytes = edited(&c, |m| {
            m.reverse();
        });
        assert!(matches!(
            Claims::decode(&bytes),
            Err(ClaimsError::NotDeterministic)
        ));
    }

    #[test]
    fn inconsistent_roots_are_refused() {
        let mut c = example::claims("vm-a", 3);
        c.memory_root[0] ^= 1;
        assert!(matches!(
            Claims::decode(&c.encode()),
            Err(ClaimsError::Inconsistent("memory_root"))
        ));
        let mut c = example::claims("vm-a", 3);
        c.code_hash[0] ^= 1;
        assert!(matches!(
            Claims::decode(&c.encode()),
            Err(ClaimsError::Inconsistent("code_hash"))
        ));
    }

    #[test]
    fn delta_beyond_region_is_refused() {
        let mut c = example::claims("vm-a", 3);
        c.delta[0].changes = vec![(4, [0; 32])];
        assert!(matches!(
            Claims::decode(&c.encode()),
            Err(ClaimsError::Field { .. })
        ));
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        let bytes = example::claims("vm-a", 3).encode();
        for n in 0..bytes.len() {
            assert!(Claims::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn unknown_claim_is_refused() {
        let c = example::claims("vm-a", 3);
        let bytes = edited(&c, |m| {
            m.push((Value::Text("zzz".into()), Value::Bool(true)));
        });
        assert!(matches!(
            Claims::decode(&bytes),
            Err(ClaimsError::Field { .. })
        ));
    }

    #[test]
    fn duplicate_regions_and_delta_entries_are_refused() {
        let mut c = example::claims("vm-a", 3);
        let again = c.delta[0].clone();
        c.delta.push(again);
        let e = Claims::decode(&c.encode()).unwrap_err().to_string();
        assert!(e.contains("two delta entries"), "{e}");
        let mut c = example::claims("vm-a", 3);
        let again = c.regions[0].clone();
        c.regions.push(again);
        let (m, h) = Claims::compute_roots(c.hash_alg, &c.regions).unwrap();
        (c.memory_root, c.code_hash) = (m, h);
        let e = Claims::decode(&c.encode()).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
    }

    #[test]
    fn kernel_objects_round_trip_and_hostile_ones_are_refused() {
        let mut c = example::claims("vm-a", 3);
        c.kernel = Some(kernel::example::kernel());
        let bytes = c.encode();
        assert_eq!(Claims::decode(&bytes).unwrap(), c);
        for n in (0..bytes.len()).step_by(7) {
            assert!(Claims::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let refused = |edit: &dyn Fn(&mut KernelObjects), why: &str| {
            let mut c = c.clone();
            edit(c.kernel.as_mut().unwrap());
            let e = Claims::decode(&c.encode()).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        };
        // One encoding per set of facts: order and uniqueness are part of it.
        refused(&|k| k.tasks.swap(0, 1), "not strictly ascending");
        refused(
            &|k| k.tasks.push(k.tasks[2].clone()),
            "not strictly ascending",
        );
        refused(
            &|k| k.idt = vec![(3, 1), (3, 2)],
            "`kernel.idt`: not strictly ascending",
        );
        refused(
            &|k| {
                k.tasks[1].listed = false;
                k.tasks[1].by_pid = false;
            },
            "in neither view",
        );
        refused(&|k| k.tasks[1].comm = "x".repeat(5000), "more than 4096");
        refused(
            &|k| k.syscalls = vec![0; kernel::MAX_SYSCALLS + 1],
            "more than 4096",
        );
        // Types and unknown keys inside the section.
        let bytes = edited(&c, |m| {
            for (k, v) in m.iter_mut() {
                if k.as_text() == Some("kernel")
                    && let Value::Map(km) = v
                {
                    km.push((Value::Text("zz".into()), Value::Null));
                }
            }
        });
        let e = Claims::decode(&bytes).unwrap_err().to_string();
        assert!(e.contains("kernel.zz"), "{e}");
    }

    #[test]
    fn boot_is_sixteen_bytes() {
        let c = example::claims("vm-a", 3);
        let bytes = edited(&c, |m| {
            for (k, v) in m.iter_mut() {
                if k.as_text() == Some("boot") {
                    *v = Value::Bytes(vec![1; 15]);
                }
            }
        });
        let e = Claims::decode(&bytes).unwrap_err().to_string();
        assert!(e.contains("expected 16 bytes"), "{e}");
    }
}
