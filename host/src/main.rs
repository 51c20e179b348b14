//! `vmseal-host`: the host side of vmseal.
//!
//! For now: `init` sets up the host's seal (TPM attestation key, ML-DSA-87 intermediate with its
//! hardware anchors, the intermediate seed sealed by the TPM), and `seal` hashes a raw memory image
//! into per-page Merkle trees and writes signed snapshot evidence. The capture engine (KVM, QEMU,
//! dirty logging, policies) will replace the image reader.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use time::{Duration, OffsetDateTime};
use vmseal_sealer::claims::{
    CaptureInfo, CaptureKind, Claims, GpaRange, ModuleInfo, PolicyRef, Region, RegionClass,
    Severity,
};
use vmseal_sealer::merkle::{HashAlg, MerkleTree, PAGE_SIZE};
use vmseal_sealer::snp::Product;
use vmseal_sealer::state::{HostState, InitOptions, SnpChoice, check_vm_id, init, write_atomic};

#[derive(Parser)]
#[command(
    name = "vmseal-host",
    version,
    about = "Capture VM memory and seal it into signed, hardware-anchored evidence",
    long_about = "vmseal-host runs beside the hypervisor. It keeps a per-host seal: an attestation key \
in the TPM, an ML-DSA-87 intermediate key whose certificate carries a TPM quote (and an SEV-SNP \
report when the host is an SNP guest), and that key's seed sealed by the TPM to the host's PCRs. \
Each snapshot is hashed page by page into Merkle trees and signed by a fresh ML-DSA-65 leaf key.",
    after_help = "Examples:\n  \
  vmseal-host init --state /var/lib/vmseal --tpm device:/dev/tpmrm0\n  \
  vmseal-host init --state ./st --tpm swtpm:host=127.0.0.1,port=2321 --snp insecure-soft\n  \
  vmseal-host seal --state ./st --vm-id web-1 --image guest.raw --out web-1.cose\n  \
  vmseal-certs verify --roots ek-ca.pem web-1.cose"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the host's seal: AK, intermediate key and certificate, TPM-sealed key blob.
    #[command(
        after_help = "The state directory must not already hold a state. The TPM must have an RSA \
EK certificate at NV index 0x1c00002 (swtpm: swtpm_setup --create-ek-cert)."
    )]
    Init {
        /// State directory to create.
        #[arg(long)]
        state: PathBuf,
        /// TPM TCTI: device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321, mssim:…
        #[arg(long, env = "VMSEAL_TPM")]
        tpm: String,
        /// SEV-SNP anchor for the intermediate key (only inside an SNP guest, or the INSECURE
        /// software stand-in for tests).
        #[arg(long, value_enum, default_value_t = SnpArg::None)]
        snp: SnpArg,
        /// Host identifier written into the intermediate certificate [default: hostname].
        #[arg(long)]
        host_id: Option<String>,
        /// sha256 PCRs to quote and to seal the key to, e.g. 0-7 or 0,2,4,7.
        #[arg(long, default_value = "0-7")]
        pcrs: String,
        /// Nonce (hex) from the verifier to bind; random when omitted.
        #[arg(long)]
        nonce: Option<String>,
        /// Product layout of INSECURE stand-in reports.
        #[arg(long, default_value = "milan", value_parser = parse_product)]
        insecure_product: Product,
        /// Report version of INSECURE stand-in reports (2, 3 or 5).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=5))]
        insecure_report_version: u32,
        /// Lifetime of the intermediate certificate, in days.
        #[arg(long, default_value_t = 365)]
        validity_days: i64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hash a raw memory image into Merkle trees and write signed snapshot evidence.
    #[command(
        after_help = "Regions default to the whole image as one data region. Give --region \
NAME:CLASS:SEVERITY:OFFSET:LEN (repeatable) to name regions; CLASS is code|rodata|data|structure, \
SEVERITY low|medium|high|critical, OFFSET and LEN in bytes (0x… allowed), page-aligned.\n\n\
Example:\n  vmseal-host seal --state ./st --vm-id vm1 --image mem.raw --out vm1.cose \\\n    \
--region kernel-text:code:critical:0x100000:0x200000 --region heap:data:medium:0x400000:0x100000"
    )]
    Seal {
        /// State directory made by `init`.
        #[arg(long)]
        state: PathBuf,
        /// VM identifier ([A-Za-z0-9._-], up to 128 characters).
        #[arg(long)]
        vm_id: String,
        /// Raw memory image (a whole number of 4 KiB pages).
        #[arg(long)]
        image: PathBuf,
        /// Where to write the evidence (COSE_Sign1).
        #[arg(long)]
        out: PathBuf,
        /// TPM TCTI, if not the one recorded at init.
        #[arg(long, env = "VMSEAL_TPM")]
        tpm: Option<String>,
        /// A region, NAME:CLASS:SEVERITY:OFFSET:LEN (repeatable).
        #[arg(long = "region")]
        regions: Vec<String>,
        /// Page hash.
        #[arg(long, value_enum, default_value_t = HashArg::Sha256)]
        hash: HashArg,
        /// Verifier nonce (hex) this snapshot answers.
        #[arg(long)]
        nonce: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SnpArg {
    /// No SNP anchor.
    None,
    /// Linux configfs-tsm (/sys/kernel/config/tsm/report).
    Configfs,
    /// /dev/sev-guest.
    SevGuest,
    /// INSECURE software stand-in (tests only).
    InsecureSoft,
}

#[derive(Clone, Copy, ValueEnum)]
enum HashArg {
    /// SHA-256.
    Sha256,
    /// BLAKE3.
    Blake3,
}

fn parse_product(s: &str) -> Result<Product, String> {
    Product::from_name(s).ok_or_else(|| format!("unknown product {s:?}: use milan, genoa or turin"))
}

/// Parse "0-7" or "0,2,4".
fn parse_pcrs(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u8>()?, b.parse::<u8>()?),
            None => {
                let v = part.parse::<u8>()?;
                (v, v)
            }
        };
        if a > b || b > 23 {
            bail!("PCR range {part:?} is not within 0-23");
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        bail!("no PCRs selected");
    }
    Ok(out)
}

fn parse_num(s: &str) -> Result<u64> {
    let s = s.trim();
    Ok(
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16)?,
            None => s.parse()?,
        },
    )
}

struct RegionSpec {
    name: String,
    class: RegionClass,
    severity: Severity,
    offset: u64,
    len: u64,
}

fn parse_region(s: &str) -> Result<RegionSpec> {
    let p: Vec<&str> = s.split(':').collect();
    let [name, class, severity, offset, len] = p[..] else {
        bail!("region {s:?}: expected NAME:CLASS:SEVERITY:OFFSET:LEN");
    };
    let spec = RegionSpec {
        name: name.to_owned(),
        class: RegionClass::from_name(class).with_context(|| {
            format!("region {s:?}: class must be code, rodata, data or structure")
        })?,
        severity: Severity::from_name(severity).with_context(|| {
            format!("region {s:?}: severity must be low, medium, high or critical")
        })?,
        offset: parse_num(offset).with_context(|| format!("region {s:?}: bad offset"))?,
        len: parse_num(len).with_context(|| format!("region {s:?}: bad length"))?,
    };
    if !spec.offset.is_multiple_of(PAGE_SIZE as u64)
        || !spec.len.is_multiple_of(PAGE_SIZE as u64)
        || spec.len == 0
    {
        bail!("region {s:?}: offset and length must be non-zero multiples of 4096");
    }
    Ok(spec)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn self_digest() -> [u8; 32] {
    std::env::current_exe()
        .and_then(std::fs::read)
        .map(|b| HashAlg::Sha256.hash(&[&b]))
        .unwrap_or_default()
}

struct InitArgs {
    state: PathBuf,
    tpm: String,
    snp: SnpArg,
    host_id: Option<String>,
    pcrs: String,
    nonce: Option<String>,
    insecure_product: Product,
    insecure_report_version: u32,
    validity_days: i64,
    json: bool,
}

fn cmd_init(a: InitArgs) -> Result<()> {
    let InitArgs {
        state,
        tpm,
        snp,
        host_id,
        pcrs,
        nonce,
        insecure_product,
        insecure_report_version,
        validity_days,
        json,
    } = a;
    let state = state.as_path();
    let pcrs = pcrs.as_str();
    let snp = match snp {
        SnpArg::None => SnpChoice::None,
        SnpArg::Configfs => SnpChoice::Configfs,
        SnpArg::SevGuest => SnpChoice::SevGuest,
        SnpArg::InsecureSoft => SnpChoice::InsecureSoft,
    };
    if snp == SnpChoice::InsecureSoft {
        eprintln!(
            "WARNING: --snp insecure-soft uses the INSECURE software SEV-SNP stand-in. Its reports \
prove nothing; verifiers refuse them unless configured with its test root. Tests only."
        );
    }
    let opts = InitOptions {
        host_id: host_id.unwrap_or_else(hostname),
        tcti: tpm,
        pcrs: parse_pcrs(pcrs)?,
        snp,
        insecure_product,
        insecure_report_version,
        nonce: nonce
            .map(|n| hex::decode(n.trim()))
            .transpose()
            .context("--nonce must be hex")?,
        validity: Duration::days(validity_days),
    };
    let started = Instant::now();
    let r = init(state, &opts).with_context(|| format!("cannot initialise {}", state.display()))?;
    let cert = vmseal_sealer::x509::ParsedCert::from_der(&r.intermediate_der)?;
    if json {
        let v = serde_json::json!({
            "state": state,
            "host_id": opts.host_id,
            "intermediate": {
                "subject": cert.subject,
                "spki_sha256": hex::encode(HashAlg::Sha256.hash(&[&cert.spki_der])),
                "cert_sha256": hex::encode(HashAlg::Sha256.hash(&[&r.intermediate_der])),
                "not_after": cert.not_after,
            },
            "ak_name": hex::encode(&r.ak_name),
            "pcrs": opts.pcrs,
            "snp": format!("{:?}", r.snp),
            "insecure": r.snp == SnpChoice::InsecureSoft,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "initialised {} for host {:?} in {:.1?}",
            state.display(),
            opts.host_id,
            started.elapsed()
        );
        println!("  intermediate  {} (ML-DSA-87)", cert.subject);
        println!(
            "  SPKI SHA-256  {}",
            hex::encode(HashAlg::Sha256.hash(&[&cert.spki_der]))
        );
        println!("  AK name       {}", hex::encode(&r.ak_name));
        println!(
            "  anchors       TPM quote over sha256 PCRs {:?}{}",
            opts.pcrs,
            match r.snp {
                SnpChoice::None => String::new(),
                SnpChoice::InsecureSoft => " + SEV-SNP report from the INSECURE stand-in".into(),
                other => format!(" + SEV-SNP report ({other:?})"),
            }
        );
        println!(
            "  sealed key    {}/intermediate-key.sealed (TPM, PCR policy)",
            state.display()
        );
    }
    Ok(())
}

struct SealArgs {
    state: PathBuf,
    vm_id: String,
    image: PathBuf,
    out: PathBuf,
    tpm: Option<String>,
    regions: Vec<String>,
    hash: HashArg,
    nonce: Option<String>,
    json: bool,
}

fn cmd_seal(a: SealArgs) -> Result<()> {
    let started = Instant::now();
    check_vm_id(&a.vm_id)?;
    let alg = match a.hash {
        HashArg::Sha256 => HashAlg::Sha256,
        HashArg::Blake3 => HashAlg::Blake3,
    };
    let meta = std::fs::metadata(&a.image)
        .with_context(|| format!("cannot read image {}", a.image.display()))?;
    let size = meta.len();
    if size == 0 || size % PAGE_SIZE as u64 != 0 {
        bail!(
            "image {} is {size} bytes, not a whole number of 4 KiB pages; pad it or capture whole pages",
            a.image.display()
        );
    }
    let mut specs: Vec<RegionSpec> = a
        .regions
        .iter()
        .map(|s| parse_region(s))
        .collect::<Result<_>>()?;
    if specs.is_empty() {
        specs.push(RegionSpec {
            name: "image".into(),
            class: RegionClass::Data,
            severity: Severity::High,
            offset: 0,
            len: size,
        });
    }
    for s in &specs {
        if s.offset.checked_add(s.len).is_none_or(|end| end > size) {
            bail!("region {:?} ends beyond the {size}-byte image", s.name);
        }
    }
    let state = HostState::load(&a.state, a.tpm.as_deref())
        .with_context(|| format!("cannot load host state {}", a.state.display()))?;

    // Hash every page once, streaming the image; regions then take their leaves.
    let pb = ProgressBar::new(size);
    pb.set_style(
        ProgressStyle::with_template(
            "hashing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut f = std::fs::File::open(&a.image)
        .with_context(|| format!("cannot open {}", a.image.display()))?;
    let mut leaves = Vec::with_capacity((size / PAGE_SIZE as u64) as usize);
    let mut buf = vec![0u8; 256 * PAGE_SIZE];
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        leaves.extend(buf[..n].chunks_exact(PAGE_SIZE).map(|p| alg.leaf(p)));
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    if leaves.len() as u64 * PAGE_SIZE as u64 != size {
        bail!("image {} changed size while it was read", a.image.display());
    }

    let mut regions = Vec::new();
    let mut policy_text = String::new();
    for s in &specs {
        let first = (s.offset / PAGE_SIZE as u64) as usize;
        let count = (s.len / PAGE_SIZE as u64) as usize;
        let tree = MerkleTree::from_leaves(alg, leaves[first..first + count].to_vec())?;
        policy_text.push_str(&format!(
            "{}:{}:{}:{:#x}:{:#x}\n",
            s.name,
            s.class.name(),
            s.severity.name(),
            s.offset,
            s.len
        ));
        regions.push(Region {
            name: s.name.clone(),
            class: s.class,
            severity: s.severity,
            ranges: vec![GpaRange {
                start: s.offset,
                len: s.len,
            }],
            pages: count as u64,
            root: tree.root(),
        });
    }
    let (memory_root, code_hash) = Claims::compute_roots(alg, &regions)?;
    let chain = state.vm_chain(&a.vm_id)?;
    let prev = chain
        .prev
        .as_deref()
        .map(|h| -> Result<[u8; 32]> {
            hex::decode(h)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("stored prev digest is not 32 bytes"))
        })
        .transpose()?;
    let now = OffsetDateTime::now_utc();
    let claims = Claims {
        vm_id: a.vm_id.clone(),
        host_id: state.config.host_id.clone(),
        seq: chain.next_seq,
        prev,
        iat: now.unix_timestamp(),
        nonce: a
            .nonce
            .map(|n| hex::decode(n.trim()))
            .transpose()
            .context("--nonce must be hex")?,
        policy: PolicyRef {
            name: "image-regions".into(),
            version: 1,
            digest: HashAlg::Sha256.hash(&[policy_text.as_bytes()]),
        },
        hash_alg: alg,
        regions,
        memory_root,
        code_hash,
        module: ModuleInfo {
            name: "vmseal-host".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            build_digest: self_digest(),
        },
        capture: CaptureInfo {
            kind: CaptureKind::Full,
            pages_read: leaves.len() as u64,
            pause_us: 0,
            duration_us: started.elapsed().as_micros() as u64,
        },
        delta: Vec::new(),
        sealed: None,
    };
    let seal_started = Instant::now();
    let evidence = state.sealer.seal(&claims, now)?;
    let seal_us = seal_started.elapsed().as_micros();
    write_atomic(&a.out, &evidence).with_context(|| format!("cannot write {}", a.out.display()))?;
    let digest = vmseal_sealer::evidence::evidence_digest(&evidence);
    state.advance(&a.vm_id, claims.seq, &digest)?;

    if a.json {
        let v = serde_json::json!({
            "out": a.out,
            "vm_id": claims.vm_id,
            "seq": claims.seq,
            "memory_root": hex::encode(claims.memory_root),
            "code_hash": hex::encode(claims.code_hash),
            "evidence_sha256": hex::encode(digest),
            "bytes": evidence.len(),
            "pages": leaves.len(),
            "regions": claims.regions.iter().map(|r| serde_json::json!({"name": r.name, "class": r.class.name(), "pages": r.pages, "root": hex::encode(r.root)})).collect::<Vec<_>>(),
            "seal_us": seal_us as u64,
            "total_ms": started.elapsed().as_millis() as u64,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "sealed {} #{} -> {} ({} bytes, {} pages, {:.1?})",
            claims.vm_id,
            claims.seq,
            a.out.display(),
            evidence.len(),
            leaves.len(),
            started.elapsed()
        );
        println!("  memory root  {}", hex::encode(claims.memory_root));
        for r in &claims.regions {
            println!(
                "  region {:<16} {:<9} {:>8} pages  {}",
                r.name,
                r.class.name(),
                r.pages,
                hex::encode(r.root)
            );
        }
    }
    Ok(())
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMSEAL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Init {
            state,
            tpm,
            snp,
            host_id,
            pcrs,
            nonce,
            insecure_product,
            insecure_report_version,
            validity_days,
            json,
        } => cmd_init(InitArgs {
            state,
            tpm,
            snp,
            host_id,
            pcrs,
            nonce,
            insecure_product,
            insecure_report_version,
            validity_days,
            json,
        }),
        Command::Seal {
            state,
            vm_id,
            image,
            out,
            tpm,
            regions,
            hash,
            nonce,
            json,
        } => cmd_seal(SealArgs {
            state,
            vm_id,
            image,
            out,
            tpm,
            regions,
            hash,
            nonce,
            json,
        }),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
