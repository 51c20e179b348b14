//! One way to run the verifier: [`start`] turns a [`ServeConfig`] into a bound, serving service.
//! `vmseal-verifier serve`, the tests and the load generators all run it through here, so what
//! they exercise is what operators run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::web;
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig};

use crate::config::ServeConfig;
use crate::pki::{Ca, PkiError};
use crate::state::{AppState, Settings};
use crate::store::{Store, StoreError};

/// Why the service did not start; each names its cause and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The state directory holds no verifier state.
    #[error("no verifier state in {dir}: run `vmseal-verifier init --state {dir}`")]
    NoState {
        /// The directory.
        dir: String,
        /// Cause.
        #[source]
        source: PkiError,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not usable as it stands.
    #[error("{0}")]
    Config(String),
    /// The database could not be opened, or is not durable.
    #[error("database {url}")]
    Store {
        /// The URL, password redacted.
        url: String,
        /// Cause.
        #[source]
        source: StoreError,
    },
    /// A signing key could not be loaded or made.
    #[error("cannot load or create the {what} signing key")]
    Key {
        /// Which.
        what: &'static str,
        /// Cause.
        #[source]
        source: PkiError,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A verifier bound to its address and serving (on the actix system it was started on).
pub struct Service {
    server: actix_web::dev::Server,
    addrs: Vec<SocketAddr>,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// The addresses it listens on (the port chosen when the configuration said 0).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// `https://localhost:PORT` of its first address (the server certificate names localhost).
    pub fn local_url(&self) -> String {
        format!(
            "https://localhost:{}",
            self.addrs.first().map_or(0, SocketAddr::port)
        )
    }

    /// Its shared state.
    pub fn state(&self) -> &web::Data<AppState> {
        &self.state
    }

    /// A handle that stops it.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serve until stopped (SIGTERM, SIGINT or [`Service::handle`]).
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Start the service `c` describes: TLS from its state, the store (durability checked), the trust
/// enrolling hosts are held to, the signing keys, the background workers, bound to `c.listen`.
pub async fn start(c: &ServeConfig) -> Result<Service, ServiceError> {
    start_with(c, |_| {}).await
}

/// As [`start`], with `adjust` applied to the settings first (tests give trust built in memory).
pub async fn start_with(
    c: &ServeConfig,
    adjust: impl FnOnce(&mut Settings),
) -> Result<Service, ServiceError> {
    let state = c.state.as_path();
    let ca = Ca::load(state).map_err(|source| ServiceError::NoState {
        dir: state.display().to_string(),
        source,
    })?;
    let kx = vmseal_client::KeyExchange::from_name(&c.tls_key_exchange).ok_or_else(|| {
        ServiceError::Config("tls_key_exchange must be pq-preferred or pq-only".into())
    })?;
    let tls = crate::api::tls::tls_config_with(
        &read(&state.join("ca.pem"))?,
        &read(&state.join("server.pem"))?,
        &read(&state.join("server.key"))?,
        kx,
    )
    .map_err(ServiceError::Config)?;
    let url = c
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", state.join("verifier.db").display()));
    let shown = crate::store::redact_url(&url);
    let store_err = |source| ServiceError::Store {
        url: shown.clone(),
        source,
    };
    let store = Store::open(&url).await.map_err(store_err)?;
    let durable = store.durability().await.map_err(store_err)?;
    tracing::info!("storage {shown}: every acknowledged write is on disk ({durable})");
    let mut settings = Settings {
        max_age: c.max_age,
        nonce_ttl: c.nonce_ttl,
        enrollment_trust: enrollment_trust(c)?,
        default_threshold: c.default_threshold,
        hardware: c.hardware.clone(),
        audit_checkpoint_every: Duration::from_secs(c.audit_checkpoint_secs),
        state_dir: Some(c.state.clone()),
        corim_signers: crate::corim::read_signers(&c.corim_signers)
            .map_err(ServiceError::Config)?,
    };
    adjust(&mut settings);
    let ear = crate::ear::EarSigner::load_or_create(state, &ca)
        .map_err(|source| ServiceError::Key {
            what: "EAR",
            source,
        })?
        .with_profile(vmseal_client::EarProfile::from_name(&c.ear_profile).unwrap_or_default());
    let corim_key =
        crate::corim::load_or_create_key(state).map_err(|source| ServiceError::Key {
            what: "CoRIM",
            source,
        })?;
    let data = web::Data::new(AppState::new(store, ca, ear, corim_key, settings));
    crate::alerts::spawn_workers(data.clone().into_inner());
    let app_data = data.clone();
    let mut server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(app_data.clone())
            .configure(crate::api::routes)
    })
    .on_connect(crate::api::tls::on_connect)
    // A client has 10 s to send a request's head (slow-loris connections are dropped); an idle
    // keep-alive connection lives 75 s, longer than an agent's 25 s capture-request long-poll;
    // on SIGTERM, requests in flight get 30 s to finish.
    .client_request_timeout(Duration::from_secs(10))
    .keep_alive(Duration::from_secs(75))
    // A fleet of agents reconnecting at once (after a restart) queues rather than being refused.
    .backlog(4096)
    .shutdown_timeout(30);
    if let Some(w) = c.workers {
        server = server.workers(w);
    }
    let server = server
        .bind_rustls_0_23(&c.listen, tls)
        .map_err(|source| ServiceError::Bind {
            addr: c.listen.clone(),
            source,
        })?;
    let addrs = server.addrs();
    tracing::info!(
        "vmseal-verifier listening on https://{}",
        addrs
            .first()
            .map_or_else(|| c.listen.clone(), ToString::to_string)
    );
    Ok(Service {
        server: server.run(),
        addrs,
        state: data,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ServiceError> {
    std::fs::read(path).map_err(|source| ServiceError::Read {
        path: path.to_owned(),
        source,
    })
}

/// What an enrolling host's anchors must prove, from the configuration.
fn enrollment_trust(c: &ServeConfig) -> Result<TrustConfig, ServiceError> {
    let mut trust = TrustConfig {
        require: AnchorRequirement::from_name(&c.require)
            .ok_or_else(|| ServiceError::Config("require must be tpm, snp, both or none".into()))?,
        ..TrustConfig::default()
    };
    for p in &c.ek_roots {
        let b = read(p)?;
        let certs = vmseal_sealer::x509::parse_bundle(&b)
            .map_err(|e| ServiceError::Config(format!("{}: not certificates: {e}", p.display())))?;
        trust.tpm.ek_roots.extend(certs.into_iter().map(|c| c.der));
    }
    trust.tpm.require_ek_chain = trust.require.tpm;
    if trust.require.tpm && trust.tpm.ek_roots.is_empty() {
        tracing::warn!(
            "require = {} but no ek_roots: no TPM can prove its EK, so no host can enrol. Give the \
             TPM vendors' EK CA certificates (--ek-roots FILE, repeatable), or say --require snp / none",
            c.require
        );
    }
    if let Some(p) = &c.insecure_snp_root {
        tracing::warn!(
            "accepting the INSECURE software SNP stand-in root from {}: tests only",
            p.display()
        );
        trust.snp = trust
            .snp
            .clone()
            .allow_insecure_bundle(&read(p)?)
            .map_err(|e| ServiceError::Config(format!("{}: {e}", p.display())))?;
    }
    Ok(trust)
}
