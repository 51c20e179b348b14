//! The service's configuration, from (lowest to highest precedence) built-in defaults, a TOML file
//! (`serve --config FILE`), `VMSEAL_*` environment variables, and the command line.
//!
//! ```toml
//! state = "/var/lib/vmseal-verifier"   # made by `vmseal-verifier init`
//! listen = "0.0.0.0:8443"
//! database = "postgres://vmseal@db/vmseal"   # default: SQLite in the state directory
//! require = "both"                     # anchors an enrolling host must carry: tpm|snp|both|none
//! ek_roots = ["tpm-vendor-ca.pem"]     # relative paths are relative to this file
//! corim_signers = ["kernel-rvp.pem"]   # public keys (or certificates) whose signed CoRIMs may be
//!                                      # imported as golden baselines, besides this verifier's own
//! max_age = 300                        # seconds: evidence without a nonce may be this old
//! nonce_ttl = 120                      # seconds a nonce stays valid
//! default_threshold = 70               # alert threshold of VMs registered without one
//! audit_checkpoint_secs = 3600         # sign a checkpoint of the audit chain this often
//! ear_profile = "ear-04"               # results as draft-ietf-rats-ear-04 (default), or
//!                                      # "veraison-2023" for relying parties on older libraries
//! workers = 2                          # HTTP worker threads (default: one per core)
//! tls_key_exchange = "pq-only"         # pq-preferred (default): X25519MLKEM768 first, classical
//!                                      # groups for peers without it; pq-only: refuse those peers
//!
//! [hardware]                           # what enrolling hosts' anchors must say (a token may
//! allow_debug = false                  #   carry its own): SEV-SNP guest policy (DEBUG refused
//! allow_migration_agent = false        #   by default), VMPLs, launch measurements, minimum TCB,
//! vmpls = [0]                          #   report versions; TPM reference PCRs
//! measurements = ["<96 hex digits>"]
//! min_tcb = { snp = 22, microcode = 213 }
//! pcrs = { "7" = "<64 hex digits>" }
//! ```
//!
//! Environment: `VMSEAL_STATE`, `VMSEAL_LISTEN`, `VMSEAL_DATABASE`, `VMSEAL_REQUIRE`,
//! `VMSEAL_EK_ROOTS` and `VMSEAL_CORIM_SIGNERS` (comma-separated), `VMSEAL_INSECURE_SNP_ROOT`, `VMSEAL_MAX_AGE`,
//! `VMSEAL_NONCE_TTL`, `VMSEAL_DEFAULT_THRESHOLD`, `VMSEAL_AUDIT_CHECKPOINT_SECS`, `VMSEAL_EAR_PROFILE`, `VMSEAL_WORKERS`,
//! `VMSEAL_TLS_KEY_EXCHANGE`. Other `VMSEAL_*` variables
//! (`VMSEAL_LOG`, the clients' `VMSEAL_VERIFIER`, …) are not the service's and are ignored; a
//! misspelt key in the file is an error naming it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("configuration {path}: {message}")]
    File {
        /// Path.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// The merged configuration is not valid (a bad environment value, a missing state).
    #[error("configuration: {0}")]
    Invalid(String),
}

/// The settings of `vmseal-verifier serve`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ServeConfig {
    /// State directory made by `init`.
    pub state: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// Database URL; SQLite in the state directory when absent.
    #[serde(default)]
    pub database: Option<String>,
    /// Anchors an enrolling intermediate must carry: tpm, snp, both or none.
    pub require: String,
    /// PEM bundles of trusted TPM EK CAs.
    #[serde(default)]
    pub ek_roots: Vec<PathBuf>,
    /// Public keys (PEM `PUBLIC KEY` or `CERTIFICATE`) whose signed CoRIMs may be imported as
    /// golden baselines, besides this verifier's own key.
    #[serde(default)]
    pub corim_signers: Vec<PathBuf>,
    /// Accept the INSECURE SNP stand-in's test root from this PEM (tests only).
    #[serde(default)]
    pub insecure_snp_root: Option<PathBuf>,
    /// Evidence without a nonce may be at most this old, seconds.
    pub max_age: i64,
    /// Nonce lifetime, seconds.
    pub nonce_ttl: i64,
    /// Alert threshold of VMs registered without one.
    pub default_threshold: u8,
    /// Seconds between signed checkpoints of the audit chain (when it moved).
    pub audit_checkpoint_secs: u64,
    /// The EAR profile results are signed in: `ear-04` or `veraison-2023`.
    pub ear_profile: String,
    /// HTTP worker threads; one per core when absent.
    #[serde(default)]
    pub workers: Option<usize>,
    /// TLS key exchange: `pq-preferred` or `pq-only`.
    pub tls_key_exchange: String,
    /// What enrolling hosts' hardware must be (`[hardware]`; a token may carry its own).
    #[serde(default)]
    pub hardware: vmseal_client::HardwarePolicy,
}

/// The file's keys: the same as [`ServeConfig`], all optional, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read only to reject unknown keys and wrong types with their line
struct FileKeys {
    state: Option<PathBuf>,
    listen: Option<String>,
    database: Option<String>,
    require: Option<String>,
    ek_roots: Option<Vec<PathBuf>>,
    corim_signers: Option<Vec<PathBuf>>,
    insecure_snp_root: Option<PathBuf>,
    max_age: Option<i64>,
    nonce_ttl: Option<i64>,
    default_threshold: Option<u8>,
    audit_checkpoint_secs: Option<u64>,
    ear_profile: Option<String>,
    workers: Option<usize>,
    tls_key_exchange: Option<String>,
    hardware: Option<vmseal_client::HardwarePolicy>,
}

const PATH_KEYS: [&str; 2] = ["state", "insecure_snp_root"];
/// The keys that are lists of paths (comma-separated in the environment and on the command line).
const LIST_KEYS: [&str; 2] = ["ek_roots", "corim_signers"];

/// Read `path`, check its keys, and make its relative paths relative to its directory.
fn file_source(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file_err = |message: String| ConfigError::File {
        path: path.to_owned(),
        message,
    };
    toml::from_str::<FileKeys>(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        file_err(match line {
            Some(l) => format!("line {l}: {}", e.message().trim()),
            None => e.message().trim().to_owned(),
        })
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rebase = |v: &mut toml::Value| {
        if let toml::Value::String(s) = v
            && Path::new(s.as_str()).is_relative()
        {
            *s = base.join(&*s).display().to_string();
        }
    };
    for k in PATH_KEYS {
        if let Some(v) = table.get_mut(k) {
            rebase(v);
        }
    }
    for list in LIST_KEYS {
        if let Some(toml::Value::Array(a)) = table.get_mut(list) {
            a.iter_mut().for_each(rebase);
        }
    }
    toml::to_string(&table).map_err(|e| file_err(e.to_string()))
}

impl ServeConfig {
    /// The defaults, serving the state in `state`: what [`ServeConfig::load`] gives when nothing
    /// else is set (it takes its defaults from here).
    pub fn new(state: PathBuf) -> Self {
        Self {
            state,
            listen: "127.0.0.1:8443".into(),
            database: None,
            require: "tpm".into(),
            ek_roots: Vec::new(),
            corim_signers: Vec::new(),
            insecure_snp_root: None,
            max_age: 300,
            nonce_ttl: 120,
            default_threshold: 70,
            audit_checkpoint_secs: 3600,
            ear_profile: "ear-04".into(),
            workers: None,
            tls_key_exchange: "pq-preferred".into(),
            hardware: vmseal_client::HardwarePolicy::default(),
        }
    }

    /// Merge defaults, `file`, the `VMSEAL_*` variables of `env` (the process environment when
    /// `None`) and the command-line `overrides` (key → value; lists comma-separated).
    pub fn load(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let invalid = |e: config::ConfigError| ConfigError::Invalid(e.to_string());
        // The defaults are `new`'s: one place says them.
        let d = Self::new(PathBuf::new());
        let mut b = config::Config::builder()
            .set_default("listen", d.listen)
            .and_then(|b| b.set_default("require", d.require))
            .and_then(|b| b.set_default("max_age", d.max_age))
            .and_then(|b| b.set_default("nonce_ttl", d.nonce_ttl))
            .and_then(|b| b.set_default("default_threshold", d.default_threshold))
            .and_then(|b| b.set_default("audit_checkpoint_secs", d.audit_checkpoint_secs))
            .and_then(|b| b.set_default("ear_profile", d.ear_profile))
            .and_then(|b| b.set_default("tls_key_exchange", d.tls_key_exchange))
            .map_err(invalid)?;
        if let Some(f) = file {
            b = b.add_source(config::File::from_str(
                &file_source(f)?,
                config::FileFormat::Toml,
            ));
        }
        b = b.add_source(
            config::Environment::with_prefix("VMSEAL")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("ek_roots")
                .with_list_parse_key("corim_signers")
                .source(env),
        );
        for (k, v) in overrides {
            b = if LIST_KEYS.contains(k) {
                b.set_override(*k, v.split(',').map(str::to_owned).collect::<Vec<_>>())
            } else {
                b.set_override(*k, v.as_str())
            }
            .map_err(invalid)?;
        }
        let merged = b.build().map_err(invalid)?;
        if merged.get_string("state").is_err() {
            return Err(ConfigError::Invalid(
                "no state directory: give --state DIR, `state = \"DIR\"` in the file, or VMSEAL_STATE"
                    .into(),
            ));
        }
        let c: Self = merged.try_deserialize().map_err(invalid)?;
        if c.default_threshold > 100 {
            return Err(ConfigError::Invalid(
                "default_threshold must be 0-100".into(),
            ));
        }
        if vmseal_client::EarProfile::from_name(&c.ear_profile).is_none() {
            return Err(ConfigError::Invalid(format!(
                "ear_profile must be ear-04 or veraison-2023, not {:?}",
                c.ear_profile
            )));
        }
        if c.audit_checkpoint_secs == 0 {
            return Err(ConfigError::Invalid(
                "audit_checkpoint_secs must be at least 1".into(),
            ));
        }
        if c.max_age <= 0 || c.nonce_ttl <= 0 {
            return Err(ConfigError::Invalid(
                "max_age and nonce_ttl must be positive seconds".into(),
            ));
        }
        if vmseal_client::KeyExchange::from_name(&c.tls_key_exchange).is_none() {
            return Err(ConfigError::Invalid(format!(
                "tls_key_exchange must be pq-preferred or pq-only, not {:?}",
                c.tls_key_exchange
            )));
        }
        c.hardware
            .check()
            .map_err(|e| ConfigError::Invalid(format!("[hardware]: {e}")))?;
        if c.workers == Some(0) {
            return Err(ConfigError::Invalid("workers must be at least 1".into()));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_same_whichever_way_they_are_made() {
        let c = ServeConfig::load(None, env(&[("VMSEAL_STATE", "/s")]), &[]).unwrap();
        assert_eq!(c, ServeConfig::new("/s".into()));
    }

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn the_packaged_example_configuration_loads() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/verifier.toml");
        let c = ServeConfig::load(Some(&f), env(&[]), &[]).unwrap();
        assert_eq!((c.require.as_str(), c.audit_checkpoint_secs), ("tpm", 3600));
        assert!(!c.hardware.allow_debug);
    }

    #[test]
    fn defaults_file_env_and_command_line_in_that_order() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("verifier.toml");
        std::fs::write(
            &f,
            "state = \"st\"\nlisten = \"0.0.0.0:9000\"\nek_roots = [\"ek.pem\", \"/abs/ek2.pem\"]\nmax_age = 60\n",
        )
        .unwrap();
        let c = ServeConfig::load(Some(&f), env(&[]), &[]).unwrap();
        assert_eq!(c.state, d.path().join("st"), "relative to the file");
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(
            c.ek_roots,
            vec![d.path().join("ek.pem"), PathBuf::from("/abs/ek2.pem")]
        );
        assert_eq!((c.max_age, c.nonce_ttl, c.default_threshold), (60, 120, 70));
        assert_eq!(c.require, "tpm");

        // The environment beats the file; other VMSEAL_* variables are ignored.
        let c = ServeConfig::load(
            Some(&f),
            env(&[
                ("VMSEAL_MAX_AGE", "30"),
                ("VMSEAL_EK_ROOTS", "a.pem,b.pem"),
                ("VMSEAL_LOG", "debug"),
                ("VMSEAL_VERIFIER", "https://x"),
                ("VMSEAL_DATABASE", "postgres://db/v"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(c.max_age, 30);
        assert_eq!(
            c.ek_roots,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        assert_eq!(c.database.as_deref(), Some("postgres://db/v"));

        // The command line beats both.
        let c = ServeConfig::load(
            Some(&f),
            env(&[("VMSEAL_MAX_AGE", "30")]),
            &[("max_age", "5".into()), ("listen", "127.0.0.1:1".into())],
        )
        .unwrap();
        assert_eq!((c.max_age, c.listen.as_str()), (5, "127.0.0.1:1"));

        // No file at all: --state alone is enough.
        let c = ServeConfig::load(None, env(&[]), &[("state", "/s".into())]).unwrap();
        assert_eq!(c.state, PathBuf::from("/s"));
        assert_eq!(c.listen, "127.0.0.1:8443");
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("v.toml");
        std::fs::write(&f, "state = \"s\"\n\nlisen = \"x\"\n").unwrap();
        let e = ServeConfig::load(Some(&f), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("lisen"), "{e}");
        std::fs::write(&f, "state = \"s\"\nmax_age = \"soon\"\n").unwrap();
        let e = ServeConfig::load(Some(&f), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&f, "state = [\n").unwrap();
        assert!(matches!(
            ServeConfig::load(Some(&f), env(&[]), &[]),
            Err(ConfigError::File { .. })
        ));
        let e = ServeConfig::load(None, env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--state"), "{e}");
        let e = ServeConfig::load(
            None,
            env(&[("VMSEAL_MAX_AGE", "x")]),
            &[("state", "s".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_age"), "{e}");
        assert!(
            ServeConfig::load(
                None,
                env(&[]),
                &[("state", "s".into()), ("workers", "0".into())]
            )
            .is_err()
        );
        assert!(matches!(
            ServeConfig::load(Some(&d.path().join("missing.toml")), env(&[]), &[]),
            Err(ConfigError::Read { .. })
        ));
    }
}
