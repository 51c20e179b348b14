//! `vmseal-verifier`: the attestation service.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vmseal_verifier::pki::Ca;

mod alerts_cli;

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

/// How the admin client reaches the verifier; each option may come before or after the
/// subcommand (`admin --json vms` and `admin vms --json` are the same).
#[derive(clap::Args)]
struct AdminConn {
    /// Verifier URL (https://host:port).
    #[arg(
        id = "admin_url",
        long = "verifier",
        global = true,
        default_value = "https://localhost:8443",
        env = "VMSEAL_VERIFIER"
    )]
    url: String,
    /// Verifier state directory: reads ca.pem, admin.pem and admin.key from it.
    #[arg(
        id = "admin_state",
        long = "state",
        global = true,
        env = "VMSEAL_STATE"
    )]
    state: Option<PathBuf>,
    /// The verifier's CA certificate (default: STATE/ca.pem).
    #[arg(
        id = "admin_ca",
        long = "verifier-ca",
        global = true,
        env = "VMSEAL_VERIFIER_CA"
    )]
    ca: Option<PathBuf>,
    /// Admin certificate (default: STATE/admin.pem).
    #[arg(id = "admin_cert", long = "cert", global = true, env = "VMSEAL_CERT")]
    cert: Option<PathBuf>,
    /// Admin key (default: STATE/admin.key).
    #[arg(id = "admin_key", long = "key", global = true, env = "VMSEAL_KEY")]
    key: Option<PathBuf>,
    /// Print JSON.
    #[arg(id = "admin_json", long = "json", global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create a one-use enrollment token for a host: a short-lived client certificate with which
    /// its agent enrols (`vmseal-host enroll`), proving its TPM by credential activation.
    #[command(
        after_help = "Hand both files to the host over a channel you trust; the token works once.\n\
Example:\n  vmseal-verifier admin --state /var/lib/vmseal-verifier enrollment-token \\\n    \
--host-id host-1 --out-cert token.pem --out-key token.key\n  \
vmseal-host enroll --state /var/lib/vmseal-host --verifier https://verifier:8443 \\\n    \
--verifier-ca ca.pem --token-cert token.pem --token-key token.key"
    )]
    EnrollmentToken {
        /// Where to write the token certificate (PEM).
        #[arg(long)]
        out_cert: PathBuf,
        /// Where to write the token key (PEM).
        #[arg(long)]
        out_key: PathBuf,
        /// Lifetime in minutes (at most a week).
        #[arg(long, default_value_t = 60)]
        valid_minutes: u32,
        /// Only this host (its id in `vmseal-host init --host-id`) may use it.
        #[arg(long)]
        host_id: Option<String>,
        /// The anchors its intermediate must carry, instead of the service's `--require`:
        /// tpm (a host agent), snp (a guest shim in an SEV-SNP guest), both, or none.
        #[arg(long, value_parser = ["tpm", "snp", "both", "none"])]
        require: Option<String>,
        /// Let new hardware take over --host-id (a replaced machine). Without it a host id stays
        /// with the TPM / SNP platform that first enrolled it, and another one is refused
        /// (409 host_identity_changed, alerted).
        #[arg(long, requires = "host_id")]
        replace: bool,
        /// A hardware policy for this host instead of the service's `[hardware]`: a TOML file
        /// with the same keys (allow_debug, vmpls, measurements, min_tcb, pcrs, …).
        #[arg(long)]
        hardware: Option<PathBuf>,
        /// Let a rebuilt host (same --host-id, a new state and so a new intermediate key)
        /// continue its VMs' evidence chains from where the verifier's stand; each is audited.
        /// Without it such an enrollment is refused (chains_exist). --replace implies it.
        #[arg(long, requires = "host_id")]
        restart_chains: bool,
    },
    /// Renew this admin's (or viewer's) own certificate: a new key made here, a new certificate
    /// (397 days) for it; the old certificate is revoked at once. Writes over --cert/--key
    /// (default STATE/admin.pem and admin.key) unless --out-cert/--out-key say elsewhere.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state /var/lib/vmseal-verifier renew-cert"
    )]
    RenewCert {
        /// Where the new certificate goes [default: the one presented].
        #[arg(long)]
        out_cert: Option<PathBuf>,
        /// Where the new key goes [default: the one presented].
        #[arg(long)]
        out_key: Option<PathBuf>,
    },
    /// Check the verifier and the fleet from here: ready (database answering), this admin's and
    /// the CA's certificates' days left, the audit chain intact and checkpointed, hosts whose
    /// certificate is near its end or whose hardware no longer passes, VMs never appraised, open
    /// alerts. Exit 0 when every check passes, 1 otherwise (each failure with its fix).
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state /var/lib/vmseal-verifier status"
    )]
    Status,
    /// The enrolled hosts (list), or disable one: its agent certificate is revoked at once.
    #[command(subcommand)]
    Hosts(HostsCmd),
    /// Register a VM on an enrolled host.
    RegisterVm {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// Host id.
        #[arg(long)]
        host_id: String,
        /// Alert threshold 0-100.
        #[arg(long)]
        threshold: Option<u8>,
        /// The capture policy file the VM must be captured under (its digest is assigned).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Promote an appraised snapshot's page hashes (a host baseline file) to the golden baseline.
    PromoteBaseline {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// Sequence number of the appraised snapshot.
        #[arg(long)]
        seq: u64,
        /// The host's baseline file for that snapshot (baseline.cbor of `vmseal-host`).
        #[arg(long)]
        baseline: PathBuf,
    },
    /// Golden baselines: list a VM's versions, export one as a signed CoRIM, import a CoRIM a
    /// trusted provider signed, or show the key this verifier signs its exports with.
    Baselines {
        #[command(subcommand)]
        cmd: BaselinesCmd,
    },
    /// The VMs: list them (the default), show where a VM's chain stands, restart a chain, or
    /// remove a VM.
    Vms {
        #[command(subcommand)]
        cmd: Option<VmsCmd>,
    },
    /// Set a VM's alert threshold (an appraisal scoring below it raises an alert).
    SetThreshold {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// Threshold 0-100.
        #[arg(long)]
        threshold: u8,
    },
    /// Assign the capture policy a VM's evidence must be made under. The verifier checks it with
    /// the host's own parser, keeps its text, serves it to the VM's agent, and appraises by its
    /// regions, classes and severities — never by what evidence says of itself.
    AssignPolicy {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// The policy file (TOML, docs/policy.md).
        #[arg(long)]
        policy: PathBuf,
    },
    /// Say which capture modules may capture a VM; evidence made by any other is refused
    /// `module_not_allowed`.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR allow-modules --vm-id web-1 \\\n    \
--module \"vmseal-host 0.1.0\" --module \"vmseal-host 0.2.0 $(sha256sum /usr/bin/vmseal-host | cut -c1-64)\"\n\
The evidence names its module (name, version, SHA-256 of the binary): `vmseal-certs inspect` shows it."
    )]
    AllowModules {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// An allowed module, `NAME VERSION [BUILD-SHA256]` (repeat for several).
        #[arg(long)]
        module: Vec<String>,
        /// Allow any module (clears the list).
        #[arg(long, conflicts_with = "module")]
        any: bool,
    },
    /// Ask the VM's host for a capture now (its agent picks the request up by long-poll), and
    /// optionally wait for the appraisal.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR request-capture --vm-id web-1 --wait 60\n\
Exit status with --wait: 0 when the appraisal is in (its score is printed), 1 on timeout."
    )]
    RequestCapture {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// Wait up to this many seconds for the appraisal (0: return at once).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Show a VM's latest accepted appraisals, newest first: sequence number, trust score, tier
    /// and the regions that changed from the baseline (--json for the whole results).
    Appraisals {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// How many (1-500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The audit log: verify its hash chain here, sign a checkpoint of its head, or export it
    /// for an offline check against checkpoints kept elsewhere (`vmseal-certs verify-audit`).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// List, show, acknowledge, silence and watch alerts.
    #[command(subcommand)]
    Alerts(alerts_cli::AlertsCmd),
    /// Where alerts are delivered: add, list and remove webhooks.
    #[command(subcommand)]
    Webhooks(alerts_cli::WebhooksCmd),
    /// Say how often a VM's evidence is expected: a `silent` alert is raised when none is
    /// accepted for twice that.
    SetSchedule {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// Expected interval: 60s, 5m, 1h …
        #[arg(long, value_parser = humantime::parse_duration, required_unless_present = "none")]
        every: Option<std::time::Duration>,
        /// Remove the schedule (no silence alerts).
        #[arg(long, conflicts_with = "every")]
        none: bool,
    },
}

/// `admin audit …`.
#[derive(Subcommand)]
enum AuditCmd {
    /// Re-hash the audit log's whole chain at the verifier and say whether it is intact (exit 1
    /// if not).
    Verify,
    /// Sign a checkpoint of the audit chain's head now (or get the newest, when the chain has
    /// not moved); keep it outside the verifier. Alert deliveries carry the newest too.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR audit checkpoint --out checkpoints/now.jwt"
    )]
    Checkpoint {
        /// Write the signed checkpoint (a JWS) here as well.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Export the whole audit log (JSON), to check offline with
    /// `vmseal-certs verify-audit --export FILE --checkpoint …`.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR audit export --out audit.json\n  \
vmseal-certs verify-audit --verifier-ca DIR/ca.pem --export audit.json --checkpoint checkpoints/"
    )]
    Export {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `admin vms …`.
#[derive(Subcommand)]
enum VmsCmd {
    /// Every VM with its latest trust score, tier and baseline version (the default).
    List,
    /// Where a VM's evidence chain stands: the sequence number and `prev` digest its next evidence
    /// must carry (what the host's agent builds on).
    Chain {
        /// VM id.
        #[arg(long)]
        vm_id: String,
    },
    /// Restart a VM's evidence chain (audited): the next evidence must carry sequence number
    /// --at, naming any predecessor. Agents follow the verifier's chain by themselves; this is
    /// for a chain abandoned on purpose. Appraisals, alerts and baselines stay.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR vms reset-chain --vm-id web-1 --at 0"
    )]
    ResetChain {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// The sequence number the next evidence carries.
        #[arg(long, default_value_t = 0)]
        at: u64,
    },
    /// Remove a VM and everything the verifier holds of it (appraisals, baselines, alerts), audited
    /// with what was removed; its id can then be registered again.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR vms remove --vm-id web-1 --yes"
    )]
    Remove {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// Confirm: the VM's appraisals, baselines and alerts are deleted (the audit log keeps
        /// the removal).
        #[arg(long)]
        yes: bool,
    },
}

/// `admin baselines …`.
#[derive(Subcommand)]
enum BaselinesCmd {
    /// A VM's baseline versions: where each came from (a snapshot, or a CoRIM and its signer).
    List {
        /// VM id.
        #[arg(long)]
        vm_id: String,
    },
    /// Write a baseline version as a signed CoRIM (draft-ietf-rats-corim-11, profile
    /// tag:vmseal.dev,2026:corim/v1): per-region Merkle roots and page digests, with the capture
    /// policy. A version promoted here is signed by this verifier's Ed25519 key (the same version
    /// always gives the same bytes); one imported from a CoRIM is that document, as it came.
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR baselines export --vm-id web-1 --corim --out web-1.corim"
    )]
    Export {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// The version [default: the newest].
        #[arg(long)]
        version: Option<u64>,
        /// As a signed CoRIM (the only export format; the active baseline's JSON is
        /// `GET /v1/vms/{vm}/baseline`).
        #[arg(long, required = true)]
        corim: bool,
        /// Write here [default: VM-baseline-vN.corim in the current directory].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import a signed CoRIM as the VM's new baseline version. It must be signed by this
    /// verifier's own key or a key in the service's `corim_signers`, and fit the VM's assigned
    /// policy (its digest, its regions, its hash).
    #[command(
        after_help = "Example:\n  vmseal-verifier admin --state DIR baselines import --vm-id web-2 web-1.corim"
    )]
    Import {
        /// VM id.
        #[arg(long)]
        vm_id: String,
        /// The signed CoRIM file.
        file: PathBuf,
    },
    /// The public key this verifier signs its CoRIM exports with (PEM): give it to another
    /// verifier's `corim_signers` so that it imports this one's baselines.
    Signer {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `admin hosts …`.
#[derive(Subcommand)]
enum HostsCmd {
    /// Every enrolled host: hardware root, INSECURE anchor, when enrolled or disabled.
    List,
    /// Revoke a host's agent certificate (every replica refuses it within seconds); it comes back
    /// only by enrolling again with a token from an admin.
    Disable {
        /// Host id.
        #[arg(long)]
        host_id: String,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a shell completion script (bash, zsh, fish or elvish), e.g. into
    /// /etc/bash_completion.d/vmseal-verifier.
    #[command(
        after_help = "Example:\n  vmseal-verifier completions bash > /etc/bash_completion.d/vmseal-verifier"
    )]
    Completions {
        /// The shell.
        #[arg(value_parser = vmseal_client::cli::SHELLS)]
        shell: String,
    },
    /// Print the man page (roff), e.g. into /usr/share/man/man1/vmseal-verifier.1.
    #[command(
        after_help = "Example:\n  vmseal-verifier man > /usr/share/man/man1/vmseal-verifier.1"
    )]
    Man,
    /// A reference webhook receiver: verifies each alert delivery's signature with the
    /// verifier's CA alone, drops duplicates, prints the alert.
    #[command(
        after_help = "Example:\n  vmseal-verifier webhook-receiver --listen 127.0.0.1:9099 --verifier-ca STATE/ca.pem --name ops\n  \
vmseal-verifier admin --state STATE webhooks add --name ops --url http://127.0.0.1:9099/"
    )]
    WebhookReceiver(alerts_cli::ReceiverArgs),
    /// The admin's client: enrol hosts, register VMs, promote baselines, alerts.
    Admin {
        #[command(flatten)]
        conn: AdminConn,
        #[command(subcommand)]
        cmd: AdminCmd,
    },
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue a client certificate from the CA in DIR (offline: needs ca.key): another admin, or a
    /// read-only viewer for the web page (https://VERIFIER/ui) and the read API.
    #[command(
        after_help = "Example:\n  vmseal-verifier issue-cert --state /var/lib/vmseal-verifier --role viewer --name carol \\\n    \
--out-cert carol.pem --out-key carol.key\n\
For a browser, bundle them: openssl pkcs12 -export -in carol.pem -inkey carol.key -out carol.p12"
    )]
    IssueCert {
        /// State directory made by `init`.
        #[arg(long)]
        state: PathBuf,
        /// admin or viewer.
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// Who it is for (the certificate's CN; shown in the audit log).
        #[arg(long)]
        name: String,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out_cert: PathBuf,
        /// Where to write the key (PEM).
        #[arg(long)]
        out_key: PathBuf,
        /// Lifetime in days.
        #[arg(long, default_value_t = 365)]
        valid_days: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the API over HTTPS with mandatory client certificates.
    #[command(
        after_help = "Settings come from, lowest to highest: defaults, --config FILE (TOML), VMSEAL_* \
environment variables (VMSEAL_STATE, VMSEAL_LISTEN, VMSEAL_DATABASE, VMSEAL_REQUIRE, VMSEAL_EK_ROOTS, \
VMSEAL_MAX_AGE, VMSEAL_NONCE_TTL, VMSEAL_DEFAULT_THRESHOLD, VMSEAL_AUDIT_CHECKPOINT_SECS, VMSEAL_WORKERS, \
VMSEAL_TLS_KEY_EXCHANGE), and these options. With \
no file at all, --state is enough: SQLite in the state directory, 127.0.0.1:8443. See docs/operations.md.\n\n\
Examples:\n  vmseal-verifier serve --state /var/lib/vmseal-verifier --ek-roots tpm-vendor-ca.pem\n  \
vmseal-verifier serve --config /etc/vmseal/verifier.toml"
    )]
    Serve {
        /// State directory made by `init`.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Configuration file (TOML); see docs/operations.md.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8443].
        #[arg(long)]
        listen: Option<String>,
        /// Database URL [default: SQLite in the state directory]; postgres://… for replicas.
        #[arg(long)]
        database: Option<String>,
        /// Anchors an enrolling intermediate must carry: tpm, snp, both or none [default: tpm].
        #[arg(long)]
        require: Option<String>,
        /// PEM bundle of trusted TPM EK CAs (repeatable).
        #[arg(long = "ek-roots")]
        ek_roots: Vec<PathBuf>,
        /// A public key (PEM PUBLIC KEY or CERTIFICATE) whose signed CoRIMs may be imported as
        /// golden baselines, besides this verifier's own (repeatable): a kernel build's
        /// reference-value key, another verifier's `admin baselines signer`.
        #[arg(long = "corim-signer")]
        corim_signers: Vec<PathBuf>,
        /// Accept the INSECURE software SNP stand-in's test root from this PEM (tests only).
        #[arg(long)]
        insecure_snp_root: Option<PathBuf>,
        /// Evidence without a nonce may be at most this old, seconds [default: 300].
        #[arg(long)]
        max_age: Option<i64>,
        /// HTTP worker threads [default: one per core].
        #[arg(long)]
        workers: Option<usize>,
        /// Sign a checkpoint of the audit chain's head this often, seconds (when it moved); each
        /// alert delivery carries the newest [default: 3600].
        #[arg(long)]
        audit_checkpoint_secs: Option<u64>,
        /// The EAR profile of attestation results: ear-04 (draft-ietf-rats-ear-04, what
        /// Veraison's ear crate 0.6 reads) or veraison-2023 (the older dotted claim names, for
        /// relying parties on older libraries) [default: ear-04].
        #[arg(long, value_parser = ["ear-04", "veraison-2023"])]
        ear_profile: Option<String>,
        /// TLS key exchange: pq-preferred (X25519MLKEM768 first, classical groups for clients
        /// without it) or pq-only (refuse clients that cannot do X25519MLKEM768) [default:
        /// pq-preferred].
        #[arg(long, value_parser = ["pq-preferred", "pq-only"])]
        tls_key_exchange: Option<String>,
    },
}

/// `serve` renews its server certificate (same names, a new key) when it has less than 60 days
/// left: clients would refuse it after. A server running longer is warned about by its
/// certificate watcher; a restart renews.
fn renew_server_certificate(state: &std::path::Path) -> Result<()> {
    let path = state.join("server.pem");
    let Ok(pem) = std::fs::read(&path) else {
        return Ok(());
    };
    let Some(der) = pem::parse_many(&pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .map(|c| c.into_contents())
    else {
        anyhow::bail!("{} holds no certificate", path.display());
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let left =
        cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    if left > 60 * 86_400 {
        return Ok(());
    }
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                        4 => {
                            Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string())
                        }
                        16 => {
                            Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string())
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .filter(|n| !matches!(n.as_str(), "localhost" | "127.0.0.1" | "::1"))
                .collect()
        })
        .unwrap_or_default();
    let ca = Ca::load(state).with_context(|| format!("renewing {}", path.display()))?;
    let issued = ca.issue_server(&names)?;
    vmseal_sealer::state::write_atomic(&state.join("server.key"), issued.key_pem.as_bytes())?;
    vmseal_sealer::state::write_atomic(&path, issued.cert_pem.as_bytes())?;
    tracing::info!(
        "server certificate renewed ({} day(s) were left; names kept: localhost{})",
        left / 86_400,
        names.iter().map(|n| format!(", {n}")).collect::<String>()
    );
    Ok(())
}

/// `admin status`: each check of the verifier and the fleet.
fn admin_status(
    client: &vmseal_client::Client,
    read: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Vec<vmseal_client::doctor::Check> {
    use vmseal_client::doctor::Check;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let days = |pem: &[u8]| {
        vmseal_sealer::x509::parse_bundle(pem)
            .ok()
            .and_then(|c| c.into_iter().next())
            .map(|c| (c.not_after - now) / 86_400)
    };
    let mut out = Vec::new();
    match client.get("/readyz") {
        Ok(_) => out.push(Check::pass(
            "verifier",
            "ready: it answers and its database does",
        )),
        Err(e) => {
            out.push(Check::fail(
                "verifier",
                e.to_string(),
                "see the message's hint; docs/operations.md, When something goes wrong",
            ));
            return out;
        }
    }
    for (name, file, fix) in [
        (
            "admin certificate",
            "admin.pem",
            "ask for a new one: `vmseal-verifier issue-cert --role admin`",
        ),
        (
            "CA certificate",
            "ca.pem",
            "a new verifier state (`init`) and its ca.pem handed to every client",
        ),
    ] {
        let d = read(file).and_then(|p| days(&p));
        out.push(match d {
            Some(d) if d >= 60 => Check::pass(name, format!("{d} day(s) left")),
            Some(d) => Check::fail(name, format!("{d} day(s) left"), fix),
            None => Check::fail(
                name,
                format!("cannot read {file} from --state"),
                "give --state DIR",
            ),
        });
    }
    let verified = client
        .get("/v1/audit/verify")
        .map_err(anyhow::Error::from)
        .and_then(|v| typed::<vmseal_client::AuditVerified>(&v, "audit verification"));
    match verified {
        Ok(v) if v.ok => out.push(Check::pass(
            "audit log",
            format!("intact, {} entries", v.entries.unwrap_or_default()),
        )),
        Ok(v) => out.push(Check::fail(
            "audit log",
            format!("NOT intact: {}", v.error.as_deref().unwrap_or("?")),
            "compare an export with your checkpoints: `vmseal-certs verify-audit`",
        )),
        Err(e) => out.push(Check::fail("audit log", e.to_string(), "retry")),
    }
    if let Ok(c) = client
        .get("/v1/audit/checkpoints?limit=1")
        .map_err(anyhow::Error::from)
        .and_then(|c| typed::<vmseal_client::CheckpointList>(&c, "checkpoint list"))
    {
        match c.checkpoints.first() {
            Some(c) => out.push(Check::pass(
                "audit checkpoint",
                format!(
                    "newest signed {} min ago (entry #{})",
                    (now - c.iat) / 60,
                    c.audit_id
                ),
            )),
            None => out.push(Check::fail(
                "audit checkpoint",
                "none signed yet",
                "`admin audit checkpoint --out FILE`, and keep it outside the verifier",
            )),
        }
    }
    if let Ok(list) = client
        .get("/v1/hosts")
        .map_err(anyhow::Error::from)
        .and_then(|h| serde_json::from_value::<vmseal_client::HostList>(h).map_err(Into::into))
    {
        let mut trouble = Vec::new();
        for x in list.hosts.iter().filter(|x| x.disabled_at.is_none()) {
            let id = &x.host_id;
            if let Some(t) = x.agent_not_after
                && (t - now) / 86_400 < 30
            {
                trouble.push(format!(
                    "{id}: agent certificate {} day(s) left",
                    (t - now) / 86_400
                ));
            }
            if let Some(why) = x.hardware_status.as_deref().filter(|s| *s != "ok") {
                trouble.push(format!("{id}: hardware: {why}"));
            }
        }
        out.push(if trouble.is_empty() {
            Check::pass(
                "hosts",
                format!("{} enrolled, none needing attention", list.hosts.len()),
            )
        } else {
            Check::fail(
                "hosts",
                trouble.join("; "),
                "renew with `vmseal-host renew` on the host; see `admin hosts list`",
            )
        });
    }
    if let Ok(list) = client
        .get("/v1/vms")
        .map_err(anyhow::Error::from)
        .and_then(|v| typed::<vmseal_client::VmList>(&v, "VM list"))
    {
        let vms = list.vms;
        let never: Vec<&str> = vms
            .iter()
            .filter(|v| v.last_seq.is_none())
            .map(|v| v.vm_id.as_str())
            .collect();
        out.push(if never.is_empty() {
            Check::pass("vms", format!("{} registered, each appraised", vms.len()))
        } else {
            Check::fail(
                "vms",
                format!("never appraised: {}", never.join(", ")),
                "is the VM's host agent running with a [verifier] section? `vmseal-host status` on the host",
            )
        });
    }
    if let Some(a) = client
        .get("/v1/alerts?state=active&limit=500")
        .ok()
        .and_then(|a| serde_json::from_value::<vmseal_client::AlertList>(a).ok())
    {
        let n = a.alerts.len();
        out.push(if n == 0 {
            Check::pass("alerts", "none open")
        } else {
            Check::fail(
                "alerts",
                format!("{n} open or acknowledged"),
                "`admin alerts list --state-filter active`",
            )
        });
    }
    out
}

/// A policy file's text, checked here with the host's own parser first: a mistake is named with
/// its line before anything is sent.
fn read_policy(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    vmseal_policy::Policy::parse(&text)
        .with_context(|| format!("policy {} (nothing was sent)", path.display()))?;
    Ok(text)
}

async fn serve(c: vmseal_verifier::config::ServeConfig) -> Result<()> {
    renew_server_certificate(&c.state)?;
    vmseal_verifier::service::start(&c).await?.run().await?;
    Ok(())
}

/// The baseline file `vmseal-host` writes (`capture --baseline-out`, `vm run`'s baseline.cbor).
#[derive(serde::Deserialize)]
struct BaselineFile {
    regions: Vec<BaselineFileRegion>,
    #[serde(default, with = "serde_bytes")]
    kernel: Option<Vec<u8>>,
}

#[derive(serde::Deserialize)]
struct BaselineFileRegion {
    name: String,
    #[serde(with = "serde_bytes")]
    leaves: Vec<u8>,
}

/// The verifier's answer read as this version's contract type `T`; `what` names it in the error.
fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value, what: &str) -> Result<T> {
    T::deserialize(v).with_context(|| {
        format!(
            "the verifier's {what} answer does not read as this version's (is it the same vmseal \
             version?)"
        )
    })
}

fn admin(conn: AdminConn, cmd: AdminCmd) -> Result<()> {
    let pick = |explicit: &Option<PathBuf>, file: &str| -> Result<Vec<u8>> {
        let p = match (explicit, &conn.state) {
            (Some(p), _) => p.clone(),
            (None, Some(d)) => d.join(file),
            (None, None) => anyhow::bail!(
                "give --state DIR or --{}",
                file.split('.').next().unwrap_or(file)
            ),
        };
        std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let client = vmseal_client::Client::new(
        &conn.url,
        &pick(&conn.ca, "ca.pem")?,
        &pick(&conn.cert, "admin.pem")?,
        &pick(&conn.key, "admin.key")?,
    )?;
    let out = match cmd {
        AdminCmd::EnrollmentToken {
            out_cert,
            out_key,
            valid_minutes,
            host_id,
            require,
            replace,
            hardware,
            restart_chains,
        } => {
            let hardware = hardware
                .map(|p| -> anyhow::Result<vmseal_client::HardwarePolicy> {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    toml::from_str(&text)
                        .with_context(|| format!("hardware policy {}", p.display()))
                })
                .transpose()?;
            let t = client.create_enrollment_token(&vmseal_client::NewEnrollmentToken {
                valid_minutes: Some(valid_minutes),
                host_id: host_id.clone(),
                require,
                replace,
                hardware,
                restart_chains,
            })?;
            vmseal_sealer::state::write_atomic(&out_key, t.key_pem.as_bytes())?;
            vmseal_sealer::state::write_atomic(&out_cert, t.cert_pem.as_bytes())?;
            if !conn.json {
                let until = time::OffsetDateTime::from_unix_timestamp(t.expires_at)
                    .ok()
                    .and_then(|d| {
                        d.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| t.expires_at.to_string());
                println!(
                    "enrollment token {} {}, usable once until {until}:\n  {}\n  {}\n\
                     Give both files to the host, which runs:\n  vmseal-host enroll --state STATE \
                     --verifier {} --verifier-ca ca.pem --token-cert {} --token-key {}",
                    t.token_id,
                    host_id
                        .as_deref()
                        .map(|h| format!("for host {h}"))
                        .unwrap_or_else(|| "for any host".into()),
                    out_cert.display(),
                    out_key.display(),
                    conn.url,
                    out_cert.display(),
                    out_key.display(),
                );
                return Ok(());
            }
            serde_json::json!({ "token_id": t.token_id, "expires_at": t.expires_at, "host_id": host_id,
                "cert": out_cert, "key": out_key })
        }
        AdminCmd::RegisterVm {
            vm_id,
            host_id,
            threshold,
            policy,
        } => {
            let policy = policy.map(|p| read_policy(&p)).transpose()?;
            let out = client.post_json(
                "/v1/vms",
                &vmseal_client::NewVm {
                    vm_id,
                    host_id,
                    threshold,
                    policy,
                },
            )?;
            if !conn.json {
                let r: vmseal_client::VmRegistered = typed(&out, "registration")?;
                println!(
                    "VM {} registered on host {} (alert threshold {})",
                    r.vm_id, r.host_id, r.threshold
                );
                return Ok(());
            }
            out
        }
        AdminCmd::PromoteBaseline {
            vm_id,
            seq,
            baseline,
        } => {
            let b = std::fs::read(&baseline)
                .with_context(|| format!("cannot read {}", baseline.display()))?;
            let file: BaselineFile = ciborium::de::from_reader_with_recursion_limit(&b[..], 8)
                .map_err(|e| {
                    anyhow::anyhow!("{} is not a vmseal baseline file: {e}", baseline.display())
                })?;
            let regions = file
                .regions
                .into_iter()
                .map(|r| vmseal_client::BaselineLeaves {
                    name: r.name,
                    leaves: hex::encode(r.leaves),
                })
                .collect();
            let kernel = file.kernel.is_some();
            let out = client.post_json(
                &format!("/v1/vms/{vm_id}/baselines"),
                &vmseal_client::PromoteBaseline {
                    seq,
                    regions,
                    kernel_objects: file.kernel.map(hex::encode),
                },
            )?;
            if !conn.json {
                let r: vmseal_client::BaselinePromoted = typed(&out, "promotion")?;
                println!(
                    "VM {}: golden baseline version {} promoted from snapshot #{}{}",
                    r.vm_id,
                    r.version,
                    r.source_seq,
                    if kernel {
                        " (with its kernel objects)"
                    } else {
                        ""
                    }
                );
                return Ok(());
            }
            out
        }
        AdminCmd::Baselines { cmd } => return baselines(&client, &conn, cmd),
        AdminCmd::Vms {
            cmd: None | Some(VmsCmd::List),
        } => {
            let out = client.get("/v1/vms")?;
            if !conn.json {
                print_vms(&serde_json::from_value(out).context(
                    "the verifier's VM list does not read as this version's (is it the same vmseal version?)",
                )?);
                return Ok(());
            }
            out
        }
        AdminCmd::Vms {
            cmd: Some(VmsCmd::Chain { vm_id }),
        } => {
            let h = client.chain_head(&vm_id)?;
            if !conn.json {
                println!(
                    "VM {vm_id}: the next evidence is #{}{}",
                    h.next_seq,
                    match &h.prev {
                        Some(p) =>
                            format!(", naming #{} (SHA-256 {p})", h.next_seq.saturating_sub(1)),
                        None => " (the start of its chain: it names no predecessor)".into(),
                    }
                );
                return Ok(());
            }
            serde_json::to_value(h)?
        }
        AdminCmd::Vms {
            cmd: Some(VmsCmd::ResetChain { vm_id, at }),
        } => {
            let out = client.post_json(
                &format!("/v1/vms/{vm_id}/reset-chain"),
                &vmseal_client::ResetChain { at },
            )?;
            if !conn.json {
                let r: vmseal_client::ChainReset = typed(&out, "chain reset")?;
                println!(
                    "VM {}: its next evidence must be #{} (the last accepted was {})",
                    r.vm_id,
                    r.next_seq,
                    r.previous_seq
                        .map_or_else(|| "none".to_owned(), |s| format!("#{s}"))
                );
                return Ok(());
            }
            out
        }
        AdminCmd::Vms {
            cmd: Some(VmsCmd::Remove { vm_id, yes }),
        } => {
            if !yes {
                anyhow::bail!(
                    "removing VM {vm_id} deletes its appraisals, baselines and alerts at the \
                     verifier (the audit log keeps the removal): say --yes to go ahead"
                );
            }
            let out = client.delete(&format!("/v1/vms/{vm_id}"))?;
            if !conn.json {
                let r: vmseal_client::VmRemoved = typed(&out, "removal")?;
                println!(
                    "VM {} removed (host {}; last evidence {}; {} appraisals, {} baseline versions, {} alerts deleted); \
                     register it again with `admin register-vm`",
                    r.vm_id,
                    r.host_id,
                    r.last_seq
                        .map_or_else(|| "none".to_owned(), |s| format!("#{s}")),
                    r.appraisals,
                    r.baselines,
                    r.alerts
                );
                return Ok(());
            }
            out
        }
        AdminCmd::SetThreshold { vm_id, threshold } => {
            let out = client.post_json(
                &format!("/v1/vms/{vm_id}/threshold"),
                &vmseal_client::SetThreshold { threshold },
            )?;
            if !conn.json {
                let r: vmseal_client::ThresholdSet = typed(&out, "threshold")?;
                println!("VM {}: alert threshold {}", r.vm_id, r.threshold);
                return Ok(());
            }
            out
        }
        AdminCmd::AssignPolicy { vm_id, policy } => {
            let out = client.post_json(
                &format!("/v1/vms/{vm_id}/policy"),
                &vmseal_client::AssignPolicy {
                    policy: read_policy(&policy)?,
                },
            )?;
            if !conn.json {
                let r: vmseal_client::PolicyAssigned = typed(&out, "policy assignment")?;
                println!(
                    "VM {}: policy {} assigned; regions: {}",
                    r.vm_id,
                    r.policy_digest,
                    r.regions.join(", ")
                );
                return Ok(());
            }
            out
        }
        AdminCmd::Hosts(HostsCmd::List) => {
            let out = client.get("/v1/hosts")?;
            if !conn.json {
                let list: vmseal_client::HostList = serde_json::from_value(out).context(
                    "the verifier's host list does not read as this version's (is it the same vmseal version?)",
                )?;
                if list.hosts.is_empty() {
                    println!("no hosts enrolled");
                }
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let when =
                    |t: Option<i64>| t.map_or_else(|| "never".into(), vmseal_client::rfc3339);
                for h in &list.hosts {
                    let cert = match h.agent_not_after {
                        Some(t) if t < now => "agent certificate EXPIRED".to_owned(),
                        Some(t) => format!("agent certificate: {} days left", (t - now) / 86_400),
                        None => "agent certificate: expiry not recorded".to_owned(),
                    };
                    println!(
                        "{:<20} {} VM(s), last evidence {}, {cert}",
                        h.host_id,
                        h.vms,
                        when(h.last_evidence),
                    );
                    println!(
                        "{:<20} {}{}{}{}",
                        "",
                        h.hardware_root
                            .as_deref()
                            .unwrap_or("(hardware root not recorded)"),
                        if h.insecure_anchor {
                            " [INSECURE SNP stand-in]"
                        } else {
                            ""
                        },
                        if h.disabled_at.is_some() {
                            " [disabled]"
                        } else {
                            ""
                        },
                        match h.hardware_status.as_deref() {
                            Some("ok") | None => String::new(),
                            Some(why) => format!("\n    HARDWARE: {why}"),
                        },
                    );
                }
                return Ok(());
            }
            out
        }
        AdminCmd::Hosts(HostsCmd::Disable { host_id }) => {
            let out = client.post_json(&format!("/v1/hosts/{host_id}/disable"), &())?;
            if !conn.json {
                let r: vmseal_client::HostDisabled = typed(&out, "disable")?;
                println!(
                    "host {} disabled: {}; it comes back only by enrolling with a new token",
                    r.host_id,
                    r.revoked_serial.map_or_else(
                        || "no agent certificate was recorded".to_owned(),
                        |s| format!("agent certificate {s} revoked")
                    )
                );
                return Ok(());
            }
            out
        }
        AdminCmd::AllowModules { vm_id, module, any } => {
            if module.is_empty() && !any {
                anyhow::bail!(
                    "name the allowed modules with --module \"NAME VERSION [BUILD-SHA256]\", or say --any"
                );
            }
            let out = client.post_json(
                &format!("/v1/vms/{vm_id}/modules"),
                &vmseal_client::AllowModules { allowed: module },
            )?;
            if !conn.json {
                let r: vmseal_client::ModulesAllowed = typed(&out, "module rules")?;
                if r.allowed.is_empty() {
                    println!("VM {}: any capture module may capture it", r.vm_id);
                } else {
                    println!(
                        "VM {}: only these modules may capture it: {}",
                        r.vm_id,
                        r.allowed.join("; ")
                    );
                }
                return Ok(());
            }
            out
        }
        AdminCmd::RequestCapture { vm_id, wait } => {
            let made = client.post_json(&format!("/v1/vms/{vm_id}/capture-requests"), &())?;
            let id = serde_json::from_value::<vmseal_client::CaptureRequestMade>(made.clone())
                .context("the verifier's capture request does not read as this version's")?
                .request_id;
            if wait == 0 {
                made
            } else {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
                loop {
                    let raw = client.get(&format!("/v1/capture-requests/{id}"))?;
                    let s: vmseal_client::CaptureStatus = serde_json::from_value(raw.clone())
                        .context("the verifier's capture status does not read as this version's")?;
                    match (s.state, &s.appraisal) {
                        (vmseal_client::CaptureState::Done, Some(a)) => {
                            if !conn.json {
                                println!(
                                    "capture request {id}: VM {vm_id} appraised at #{}: trust score {} ({})",
                                    a.seq,
                                    a.score,
                                    a.tier.name()
                                );
                                return Ok(());
                            }
                            break raw;
                        }
                        (vmseal_client::CaptureState::Expired, _) => anyhow::bail!(
                            "capture request {id} expired before VM {vm_id}'s agent answered it: \
                             is `vmseal-host run` running with a [verifier] section on its host?"
                        ),
                        _ if std::time::Instant::now() >= deadline => anyhow::bail!(
                            "no appraisal for capture request {id} within {wait} s (state: {}); \
                             the agent may still answer it — check with `admin appraisals --vm-id {vm_id}`",
                            s.state.name()
                        ),
                        _ => std::thread::sleep(std::time::Duration::from_millis(250)),
                    }
                }
            }
        }
        AdminCmd::RenewCert { out_cert, out_key } => {
            let path = |explicit: &Option<PathBuf>, file: &str| {
                explicit
                    .clone()
                    .or_else(|| conn.state.as_ref().map(|d| d.join(file)))
            };
            let (Some(cert_to), Some(key_to)) = (
                out_cert.or_else(|| path(&conn.cert, "admin.pem")),
                out_key.or_else(|| path(&conn.key, "admin.key")),
            ) else {
                anyhow::bail!("say where the new certificate and key go: --out-cert and --out-key");
            };
            let (cert, key, not_after) = client.renew_own()?;
            // Key first: a certificate on disk always has its key.
            vmseal_sealer::state::write_atomic(&key_to, key.as_bytes())?;
            vmseal_sealer::state::write_atomic(&cert_to, cert.as_bytes())?;
            if !conn.json {
                println!(
                    "certificate renewed ({} days): {} and {}; the old one is revoked",
                    (not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400,
                    cert_to.display(),
                    key_to.display()
                );
                return Ok(());
            }
            serde_json::json!({ "cert": cert_to, "key": key_to, "not_after": not_after })
        }
        AdminCmd::Status => {
            let checks = admin_status(&client, &|f| pick(&None, f).ok());
            let failed = checks.iter().filter(|c| !c.ok).count();
            if conn.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": failed == 0, "checks": checks })
                );
            } else {
                print!("{}", vmseal_client::doctor::render(&checks));
            }
            if failed > 0 {
                anyhow::bail!("{failed} check(s) failed");
            }
            return Ok(());
        }
        AdminCmd::Audit(AuditCmd::Checkpoint { out }) => {
            let c = client.post_json("/v1/audit/checkpoints", &())?;
            let cp: vmseal_client::SignedCheckpoint = typed(&c, "audit checkpoint")?;
            let token = &cp.token;
            if let Some(p) = &out {
                vmseal_sealer::state::write_atomic(p, format!("{token}\n").as_bytes())?;
            }
            if !conn.json {
                println!(
                    "audit checkpoint: entry #{} has hash {}{}",
                    cp.audit_id,
                    cp.audit_hash,
                    out.map(|p| format!(" (signed, in {})", p.display()))
                        .unwrap_or_else(|| format!("\n{token}"))
                );
                return Ok(());
            }
            c
        }
        AdminCmd::Audit(AuditCmd::Export { out }) => {
            let e = client.get("/v1/audit/export")?;
            vmseal_sealer::state::write_atomic(&out, serde_json::to_string_pretty(&e)?.as_bytes())?;
            let n = typed::<vmseal_client::AuditExport>(&e, "audit export")?
                .entries
                .len();
            if !conn.json {
                println!("{n} audit entries written to {}", out.display());
                return Ok(());
            }
            serde_json::json!({ "entries": n, "out": out })
        }
        AdminCmd::Audit(AuditCmd::Verify) => {
            let out = client.get("/v1/audit/verify")?;
            let v: vmseal_client::AuditVerified = typed(&out, "audit verification")?;
            if !v.ok {
                anyhow::bail!(
                    "the audit log is NOT intact: {}",
                    v.error.as_deref().unwrap_or("?")
                );
            }
            if !conn.json {
                println!(
                    "audit log intact: {} entries",
                    v.entries.unwrap_or_default()
                );
                return Ok(());
            }
            out
        }
        AdminCmd::Alerts(cmd) => match alerts_cli::alerts(&client, cmd, conn.json)? {
            Some(v) => v,
            None => return Ok(()),
        },
        AdminCmd::Webhooks(cmd) => match alerts_cli::webhooks(&client, cmd, conn.json)? {
            Some(v) => v,
            None => return Ok(()),
        },
        AdminCmd::SetSchedule {
            vm_id,
            every,
            none: _,
        } => {
            let out = client.post_json(
                &format!("/v1/vms/{vm_id}/schedule"),
                &vmseal_client::SetSchedule {
                    expect_every_s: every.map(|d| d.as_secs().max(1) as i64),
                },
            )?;
            let set: vmseal_client::ScheduleSet = typed(&out, "schedule")?;
            if !conn.json {
                match set.expect_every_s {
                    Some(s) => println!(
                        "VM {}: evidence expected at least every {s} s; a silent alert after {} s without",
                        set.vm_id,
                        2 * s
                    ),
                    None => println!("VM {}: no schedule (no silence alerts)", set.vm_id),
                }
                return Ok(());
            }
            out
        }
        AdminCmd::Appraisals { vm_id, limit } => {
            let out = client.get(&format!("/v1/vms/{vm_id}/appraisals?limit={limit}"))?;
            if !conn.json {
                print_appraisals(&serde_json::from_value(out).context(
                    "the verifier's appraisals do not read as this version's (is it the same vmseal version?)",
                )?);
                return Ok(());
            }
            out
        }
    };
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{out}");
    }
    Ok(())
}

/// `admin baselines …`.
fn baselines(client: &vmseal_client::Client, conn: &AdminConn, cmd: BaselinesCmd) -> Result<()> {
    let list = |vm_id: &str| -> Result<vmseal_client::BaselineList> {
        typed(
            &client.get(&format!("/v1/vms/{vm_id}/baselines"))?,
            "baseline list",
        )
    };
    match cmd {
        BaselinesCmd::List { vm_id } => {
            let out = list(&vm_id)?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let rows = out.baselines;
            if rows.is_empty() {
                println!(
                    "VM {vm_id} has no baseline yet: promote a snapshot (`admin promote-baseline`) or import a CoRIM (`admin baselines import`)"
                );
                return Ok(());
            }
            println!(
                "{:>7}  {:<22}  {:<16}  {:>7}  source",
                "version", "when", "by", "regions"
            );
            for b in rows {
                let when = vmseal_client::rfc3339(b.promoted_at);
                let source = match (b.source_seq, b.corim_signer.as_deref()) {
                    (Some(seq), _) => format!("snapshot #{seq}"),
                    (None, Some(signer)) => format!("CoRIM signed by {signer}"),
                    (None, None) => "?".into(),
                };
                println!(
                    "{:>7}  {:<22}  {:<16}  {:>7}  {source}",
                    b.version, when, b.promoted_by, b.regions
                );
            }
        }
        BaselinesCmd::Export {
            vm_id,
            version,
            corim: _,
            out,
        } => {
            let version = match version {
                Some(v) => v,
                None => list(&vm_id)?
                    .baselines
                    .last()
                    .map(|b| b.version)
                    .with_context(|| {
                        format!("VM {vm_id} has no baseline yet: promote one first (`admin promote-baseline`)")
                    })?,
            };
            let signed = client.get_bytes(&format!("/v1/vms/{vm_id}/baselines/{version}/corim"))?;
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("{vm_id}-baseline-v{version}.corim")));
            vmseal_sealer::state::write_atomic(&out, &signed)
                .with_context(|| format!("cannot write {}", out.display()))?;
            if conn.json {
                println!(
                    "{}",
                    serde_json::json!({ "vm_id": vm_id, "version": version, "out": out, "bytes": signed.len() })
                );
            } else {
                println!(
                    "baseline version {version} of VM {vm_id}: signed CoRIM ({} bytes) written to {}\n\
                     Import it into another VM or verifier with:\n  vmseal-verifier admin baselines import --vm-id VM {}",
                    signed.len(),
                    out.display(),
                    out.display()
                );
            }
        }
        BaselinesCmd::Import { vm_id, file } => {
            let signed =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if signed.len() > vmseal_client::corim::MAX_CORIM_BYTES {
                anyhow::bail!(
                    "{} is {} bytes; a signed CoRIM is at most {} bytes",
                    file.display(),
                    signed.len(),
                    vmseal_client::corim::MAX_CORIM_BYTES
                );
            }
            let r = client.post_typed(
                &format!("/v1/vms/{vm_id}/baselines/corim"),
                signed,
                vmseal_client::corim::CORIM_MEDIA_TYPE,
            )?;
            let i: vmseal_client::BaselineImported = typed(&r, "CoRIM import")?;
            if conn.json {
                println!("{r}");
            } else {
                println!(
                    "VM {vm_id}: baseline version {} imported from CoRIM {} ({} regions), signed by {}",
                    i.version, i.corim_id, i.regions, i.signer
                );
            }
        }
        BaselinesCmd::Signer { out } => {
            let pem = client.get_bytes("/v1/corim/signer")?;
            match out {
                Some(p) => {
                    vmseal_sealer::state::write_atomic(&p, &pem)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    println!(
                        "this verifier's CoRIM signing key written to {}",
                        p.display()
                    );
                }
                None => print!("{}", String::from_utf8_lossy(&pem)),
            }
        }
    }
    Ok(())
}

/// One line per VM: id, host, score, tier, last seq, threshold, baseline version.
fn print_vms(list: &vmseal_client::VmList) {
    if list.vms.is_empty() {
        println!("no VMs registered yet (`vmseal-verifier admin register-vm`)");
        return;
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!(
        "{:<20} {:<16} {:>5}  {:<16} {:>8} {:>9} {:>8}",
        "vm", "host", "score", "tier", "last seq", "threshold", "baseline"
    );
    for v in &list.vms {
        println!(
            "{:<20} {:<16} {:>5}  {:<16} {:>8} {:>9} {:>8}",
            v.vm_id,
            v.host_id,
            opt(v.score.map(|s| s.to_string())),
            opt(v.tier.map(|t| t.name().to_owned())),
            opt(v.last_seq.map(|s| s.to_string())),
            v.threshold,
            opt(v.baseline_version.map(|b| b.to_string())),
        );
    }
}

/// One line per appraisal: `#seq  score  tier  changed regions`.
fn print_appraisals(list: &vmseal_client::AppraisalList) {
    if list.appraisals.is_empty() {
        println!("no accepted appraisals yet");
        return;
    }
    println!("{:>8}  {:>5}  {:<16}  changed", "seq", "score", "tier");
    for a in &list.appraisals {
        let changed: Vec<String> = a.changes.iter().map(|c| c.describe()).collect();
        println!(
            "{:>8}  {:>5}  {:<16}  {}",
            format!("#{}", a.seq),
            a.score,
            a.tier.name(),
            if changed.is_empty() {
                "-".to_owned()
            } else {
                changed.join(", ")
            }
        );
        for f in a.kernel.iter().flat_map(|k| &k.findings) {
            println!("{:>8}  kernel: {}", "", f.describe());
        }
    }
}

fn main() -> std::process::ExitCode {
    vmseal_client::cli::init_logging("info");
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Completions { shell } => {
            vmseal_client::cli::print_completions::<Cli>(&shell).map_err(anyhow::Error::msg)
        }
        Cmd::Man => vmseal_client::cli::print_man::<Cli>().map_err(anyhow::Error::msg),
        Cmd::Init { state, names, json } => Ca::init(&state, &names)
            .map(|_| {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "state": state, "ca": state.join("ca.pem"),
                            "server": state.join("server.pem"), "admin": state.join("admin.pem") })
                    );
                } else {
                    println!(
                        "initialised {}: ca.pem, server.pem, admin.pem (+ keys)",
                        state.display()
                    );
                }
            })
            .map_err(anyhow::Error::from),
        Cmd::Admin { conn, cmd } => admin(conn, cmd),
        Cmd::WebhookReceiver(a) => alerts_cli::receiver(a),
        Cmd::IssueCert {
            state,
            role,
            name,
            out_cert,
            out_key,
            valid_days,
            json,
        } => (|| {
            let ca = Ca::load(&state)
                .with_context(|| format!("cannot load the CA in {}", state.display()))?;
            let role = match role.as_str() {
                "admin" => vmseal_verifier::pki::Role::Admin(name.clone()),
                _ => vmseal_verifier::pki::Role::Viewer(name.clone()),
            };
            let issued = ca.issue_client(&role, time::Duration::days(i64::from(valid_days)))?;
            vmseal_sealer::state::write_atomic(&out_key, issued.key_pem.as_bytes())?;
            vmseal_sealer::state::write_atomic(&out_cert, issued.cert_pem.as_bytes())?;
            let kind = match role {
                vmseal_verifier::pki::Role::Admin(_) => "admin",
                _ => "viewer",
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "role": kind, "name": name, "cert": out_cert, "key": out_key, "valid_days": valid_days })
                );
            } else {
                println!(
                    "issued {kind} {name:?}: {} and {}",
                    out_cert.display(),
                    out_key.display()
                );
            }
            Ok(())
        })(),
        Cmd::Serve {
            state,
            config,
            listen,
            database,
            require,
            ek_roots,
            corim_signers,
            insecure_snp_root,
            max_age,
            workers,
            audit_checkpoint_secs,
            ear_profile,
            tls_key_exchange,
        } => {
            let path = |p: PathBuf| p.display().to_string();
            let mut o: Vec<(&str, String)> = Vec::new();
            o.extend(state.map(|v| ("state", path(v))));
            o.extend(listen.map(|v| ("listen", v)));
            o.extend(database.map(|v| ("database", v)));
            o.extend(require.map(|v| ("require", v)));
            if !ek_roots.is_empty() {
                let list: Vec<String> = ek_roots.into_iter().map(path).collect();
                o.push(("ek_roots", list.join(",")));
            }
            if !corim_signers.is_empty() {
                let list: Vec<String> = corim_signers.into_iter().map(path).collect();
                o.push(("corim_signers", list.join(",")));
            }
            o.extend(insecure_snp_root.map(|v| ("insecure_snp_root", path(v))));
            o.extend(max_age.map(|v| ("max_age", v.to_string())));
            o.extend(workers.map(|v| ("workers", v.to_string())));
            o.extend(audit_checkpoint_secs.map(|v| ("audit_checkpoint_secs", v.to_string())));
            o.extend(ear_profile.map(|v| ("ear_profile", v)));
            o.extend(tls_key_exchange.map(|v| ("tls_key_exchange", v)));
            vmseal_verifier::config::ServeConfig::load(config.as_deref(), None, &o)
                .map_err(anyhow::Error::from)
                .and_then(|c| actix_web::rt::System::new().block_on(serve(c)))
        }
    };
    vmseal_client::cli::exit_code(r, 1)
}

#[cfg(test)]
mod renewal_tests {
    use super::*;

    #[test]
    fn serve_renews_a_server_certificate_near_its_end_keeping_its_names() {
        let d = tempfile::tempdir().unwrap();
        let ca = Ca::init(d.path(), &["verifier.example".into()]).unwrap();
        // Far from its end: left alone.
        let before = std::fs::read(d.path().join("server.pem")).unwrap();
        renew_server_certificate(d.path()).unwrap();
        assert_eq!(std::fs::read(d.path().join("server.pem")).unwrap(), before);
        // 10 days left: renewed, with its names.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec![
            "localhost".to_owned(),
            "verifier.example".to_owned(),
        ])
        .unwrap();
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
        std::fs::write(d.path().join("server.pem"), ca.sign(p, &key).unwrap()).unwrap();
        renew_server_certificate(d.path()).unwrap();
        let pem = std::fs::read(d.path().join("server.pem")).unwrap();
        let c = vmseal_sealer::x509::parse_bundle(&pem).unwrap().remove(0);
        assert!(c.not_after - time::OffsetDateTime::now_utc().unix_timestamp() > 800 * 86_400);
        let der = pem::parse_many(&pem).unwrap().remove(0).into_contents();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = format!("{:?}", x.subject_alternative_name().unwrap().unwrap().value);
        assert!(san.contains("verifier.example"), "{san}");
    }
}

/// Every example of `vmseal-verifier`, in its `--help` texts and in README.md and docs/*.md,
/// parses with its CLI definition as printed (and the definition itself is consistent).
#[cfg(test)]
#[test]
fn every_example_in_help_and_docs_parses() {
    vmseal_testkit::examples::assert_cli_examples_parse::<Cli>("vmseal-verifier", 15);
}
