//! `vmseal-verifier`: the attestation service.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vmseal_sealer::verify::{AnchorRequirement, TrustConfig};
use vmseal_verifier::pki::Ca;
use vmseal_verifier::server::{AppState, Settings};
use vmseal_verifier::store::Store;

#[derive(Parser)]
#[command(
    name = "vmseal-verifier",
    version,
    about = "The vmseal attestation service: enrollment, golden baselines, appraisal and trust scores over mutual TLS",
    after_help = "Examples:\n  vmseal-verifier init --state /var/lib/vmseal-verifier\n  \
vmseal-verifier serve --state /var/lib/vmseal-verifier --listen 127.0.0.1:8443 --ek-roots tpm-vendor-ca.pem"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the verifier's CA, server certificate and first admin certificate in DIR.
    #[command(
        after_help = "Writes DIR/ca.pem, DIR/ca.key, DIR/server.pem, DIR/server.key, DIR/admin.pem and \
DIR/admin.key. Give the admin certificate and key to the operator, ca.pem to agents and admins."
    )]
    Init {
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        /// Extra DNS names or IP addresses for the server certificate (localhost is always in).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Serve the API over HTTPS with mandatory client certificates.
    Serve {
        /// State directory made by `init`.
        #[arg(long)]
        state: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Database URL (default: SQLite in the state directory); postgres://… for replicas.
        #[arg(long, env = "VMSEAL_DATABASE")]
        database: Option<String>,
        /// Anchors an enrolling intermediate must carry: tpm, snp, both or none.
        #[arg(long, default_value = "tpm")]
        require: String,
        /// PEM bundle of trusted TPM EK CAs (repeatable).
        #[arg(long = "ek-roots")]
        ek_roots: Vec<PathBuf>,
        /// Accept the INSECURE software SNP stand-in's test root from this PEM (tests only).
        #[arg(long)]
        insecure_snp_root: Option<PathBuf>,
        /// Evidence without a nonce may be at most this old (seconds).
        #[arg(long, default_value_t = 300)]
        max_age: i64,
    },
}

fn read_pems(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for p in paths {
        let b = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        for c in vmseal_sealer::x509::parse_bundle(&b)
            .with_context(|| format!("{}: not certificates", p.display()))?
        {
            out.push(c.der);
        }
    }
    Ok(out)
}

async fn serve(
    state: &Path,
    listen: &str,
    database: Option<String>,
    require: &str,
    ek_roots: &[PathBuf],
    insecure_snp_root: Option<&Path>,
    max_age: i64,
) -> Result<()> {
    let ca = Ca::load(state).with_context(|| {
        format!(
            "no verifier state in {}: run `vmseal-verifier init --state {}`",
            state.display(),
            state.display()
        )
    })?;
    let read = |f: &str| {
        std::fs::read(state.join(f))
            .with_context(|| format!("cannot read {}", state.join(f).display()))
    };
    let tls = vmseal_verifier::server::tls_config(
        &read("ca.pem")?,
        &read("server.pem")?,
        &read("server.key")?,
    )
    .map_err(anyhow::Error::msg)?;
    let url =
        database.unwrap_or_else(|| format!("sqlite://{}", state.join("verifier.db").display()));
    let store = Store::open(&url)
        .await
        .with_context(|| format!("cannot open database {url}"))?;
    let mut trust = TrustConfig {
        require: AnchorRequirement::from_name(require)
            .context("--require must be tpm, snp, both or none")?,
        ..TrustConfig::default()
    };
    trust.tpm.ek_roots = read_pems(ek_roots)?;
    trust.tpm.require_ek_chain = trust.require.tpm;
    if let Some(p) = insecure_snp_root {
        tracing::warn!(
            "accepting the INSECURE software SNP stand-in root from {}: tests only",
            p.display()
        );
        let bundle = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        trust.snp = trust
            .snp
            .clone()
            .allow_insecure_bundle(&bundle)
            .with_context(|| format!("{}", p.display()))?;
    }
    let settings = Settings {
        max_age,
        nonce_ttl: 120,
        enrollment_trust: trust,
        default_threshold: 70,
    };
    let data = actix_web::web::Data::new(AppState {
        store,
        ca,
        settings,
    });
    tracing::info!("vmseal-verifier listening on https://{listen}");
    actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .configure(vmseal_verifier::server::routes)
    })
    .on_connect(vmseal_verifier::server::on_connect)
    .bind_rustls_0_23(listen, tls)
    .with_context(|| format!("cannot listen on {listen}"))?
    .run()
    .await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMSEAL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Init { state, names } => Ca::init(&state, &names)
            .map(|_| {
                println!(
                    "initialised {}: ca.pem, server.pem, admin.pem (+ keys)",
                    state.display()
                );
            })
            .map_err(anyhow::Error::from),
        Cmd::Serve {
            state,
            listen,
            database,
            require,
            ek_roots,
            insecure_snp_root,
            max_age,
        } => actix_web::rt::System::new().block_on(serve(
            &state,
            &listen,
            database,
            &require,
            &ek_roots,
            insecure_snp_root.as_deref(),
            max_age,
        )),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
