//! Recognising inputs and describing them as [`Node`]s, with every check the input allows.

use anyhow::{Result, bail};
use base64::Engine;
use time::OffsetDateTime;
use vmseal_sealer::anchor::{HostIdentity, SnapshotIdentity, SnpAnchor, SnpProvider, TpmAnchor};
use vmseal_sealer::claims::{CaptureKind, Claims};
use vmseal_sealer::evidence::DecodedEvidence;
use vmseal_sealer::oid;
use vmseal_sealer::snp::provider::split_cert_table;
use vmseal_sealer::snp::report::{REPORT_LEN, SnpReport};
use vmseal_sealer::snp::verify::{
    AmdRoots, OID_CSP_ID, OID_HWID, OID_PRODUCT_NAME, der_small_int, hwid_bytes, verify_report,
};
use vmseal_sealer::tpm::verify::{object_name, verify_tpm_anchor};
use vmseal_sealer::verify::{TrustConfig, verify_evidence};
use vmseal_sealer::x509::{ParsedCert, parse_bundle, signed_by};

use crate::model::{Node, Status};

/// The `kernel` claim: what the guest kernel's structures held, and where its own two views of
/// them disagree (a process known by pid but not on the task list, a module in the kset but not
/// on the module list: hidden) — facts anyone can read; what they are worth against a golden
/// state, the verifier says.
fn kernel_node(k: &vmseal_sealer::claims::KernelObjects) -> Node {
    let mut kn = Node::new("kernel objects", k.build_id.clone());
    kn.field("profile", hex::encode(k.profile));
    kn.field("slide", format!("{:#x}", k.slide));
    kn.field("text", format!("{:#x}..{:#x}", k.text.0, k.text.1));
    kn.field(
        "objects",
        format!(
            "{} processes, {} modules, {} gates, {} system calls",
            k.tasks.len(),
            k.modules.len(),
            k.idt.len(),
            k.syscalls.len()
        ),
    );
    for t in k.tasks.iter().filter(|t| t.by_pid && !t.listed) {
        kn.field(
            "HIDDEN process",
            format!(
                "pid {} {} (known by pid, not on the task list)",
                t.pid, t.comm
            ),
        );
    }
    for m in k.modules.iter().filter(|m| m.in_kset && !m.listed) {
        kn.field(
            "HIDDEN module",
            format!("{} (in the module kset, not on the module list)", m.name),
        );
    }
    for e in &k.errors {
        kn.field("walk did not finish", format!("{}: {}", e.walk, e.error));
    }
    kn
}

/// What the user gave besides the files.
pub(crate) struct Context {
    pub(crate) trust: TrustConfig,
    /// Extra certificates (roots or intermediates) from --roots.
    pub(crate) roots: Vec<ParsedCert>,
    /// Keys trusted to sign CoRIM golden baselines (--corim-signer).
    pub(crate) corim_signers: Vec<vmseal_client::corim::TrustedKey>,
    pub(crate) allow_insecure: bool,
    pub(crate) at: OffsetDateTime,
}

/// What a file holds.
pub(crate) enum Input {
    Evidence(Vec<u8>),
    Corim(Vec<u8>),
    Certs(Vec<ParsedCert>),
    Report(Vec<u8>),
    CertTable(Vec<u8>),
    TsmJson { report: Vec<u8>, aux: Vec<u8> },
}

/// Recognise a file's contents.
pub(crate) fn detect(bytes: &[u8]) -> Result<Input> {
    if vmseal_client::corim::is_signed_corim(bytes) {
        return Ok(Input::Corim(bytes.to_vec()));
    }
    if bytes.first() == Some(&0xD2) {
        return Ok(Input::Evidence(bytes.to_vec()));
    }
    let text = std::str::from_utf8(bytes).ok();
    if let Some(t) = text {
        if t.contains("-----BEGIN CERTIFICATE-----") {
            return Ok(Input::Certs(parse_bundle(bytes)?));
        }
        let trimmed = t.trim_start();
        if trimmed.starts_with('{') {
            let j: serde_json::Value = serde_json::from_str(t)?;
            if let (Some(o), Some(a)) = (j["outblob"].as_str(), j["auxblob"].as_str()) {
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let dec = |s: &str| {
                    b64.decode(s.trim_end_matches('=').replace('+', "-").replace('/', "_"))
                };
                return Ok(Input::TsmJson {
                    report: dec(o)?,
                    aux: dec(a)?,
                });
            }
            bail!("JSON input is not configfs-tsm output (no outblob/auxblob)");
        }
        let hex_text: String = t.split_whitespace().collect();
        if hex_text.len() == 2 * REPORT_LEN
            && let Ok(b) = hex::decode(&hex_text)
        {
            return Ok(Input::Report(b));
        }
    }
    if bytes.len() == REPORT_LEN {
        return Ok(Input::Report(bytes.to_vec()));
    }
    if bytes.first() == Some(&0x30)
        && let Ok(c) = ParsedCert::from_der(bytes)
    {
        return Ok(Input::Certs(vec![c]));
    }
    if split_cert_table(bytes).is_ok_and(|t| !t.vek.is_empty()) {
        return Ok(Input::CertTable(bytes.to_vec()));
    }
    bail!(
        "unrecognised input: expected vmseal evidence (COSE_Sign1), PEM or DER certificates, an SNP \
report (1184 bytes binary or hex), an AMD certificate table (auxblob) or configfs-tsm JSON"
    )
}

fn ts(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn key_desc(c: &ParsedCert) -> String {
    let alg = oid::algorithm_name(&c.key_alg_oid);
    match (alg, c.key_curve_oid.as_deref()) {
        ("EC", Some(curve)) => format!("EC {}", oid::algorithm_name(curve)),
        ("RSA", _) => {
            // Modulus bits from the RSAPublicKey DER length, approximately.
            let bits = c.public_key.len().saturating_sub(12) * 8;
            format!("RSA ~{}", (bits + 511) / 1024 * 1024)
        }
        ("unknown", _) => format!("unknown ({})", c.key_alg_oid),
        (a, _) => a.to_owned(),
    }
}

fn tcb_name(o: &str) -> Option<&'static str> {
    Some(match o {
        "1.3.6.1.4.1.3704.1.3.1" => "blSPL",
        "1.3.6.1.4.1.3704.1.3.2" => "teeSPL",
        "1.3.6.1.4.1.3704.1.3.3" => "snpSPL",
        "1.3.6.1.4.1.3704.1.3.8" => "ucodeSPL",
        "1.3.6.1.4.1.3704.1.3.9" => "fmcSPL",
        _ => return None,
    })
}

fn ia5_or_utf8(v: &[u8]) -> String {
    match v {
        [0x16 | 0x0c | 0x13, n, rest @ ..] if *n as usize == rest.len() => {
            String::from_utf8_lossy(rest).into_owned()
        }
        _ => String::from_utf8_lossy(v).into_owned(),
    }
}

/// TPM device attributes from an EK certificate's subjectAltName directoryName (TCG EK profile).
fn tpm_attributes(der: &[u8]) -> Vec<(String, String)> {
    use x509_parser::prelude::*;
    let mut out = Vec::new();
    let Ok((_, c)) = X509Certificate::from_der(der) else {
        return out;
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return out;
    };
    for gn in &san.value.general_names {
        if let GeneralName::DirectoryName(name) = gn {
            for attr in name.iter_attributes() {
                let label = match attr.attr_type().to_id_string().as_str() {
                    "2.23.133.2.1" => "TPM manufacturer",
                    "2.23.133.2.2" => "TPM model",
                    "2.23.133.2.3" => "TPM firmware version",
                    _ => continue,
                };
                out.push((label.to_owned(), attr.as_str().unwrap_or("?").to_owned()));
            }
        }
    }
    out
}

/// Describe one certificate; `pool` holds candidate issuers (input, --roots, AMD roots).
pub(crate) fn cert_node(c: &ParsedCert, pool: &[ParsedCert], ctx: &Context) -> Node {
    let mut n = Node::new("certificate", c.subject.clone());
    n.field("issuer", c.issuer.clone());
    n.field("serial", c.serial_hex.clone());
    let now = ctx.at.unix_timestamp();
    let expired = if c.not_after < now {
        " [EXPIRED]"
    } else if c.not_before > now {
        " [NOT YET VALID]"
    } else {
        ""
    };
    n.field(
        "validity",
        format!("{} to {}{expired}", ts(c.not_before), ts(c.not_after)),
    );
    n.field("key", key_desc(c));
    n.field(
        "signature algorithm",
        oid::algorithm_name(&c.sig_alg_oid).to_owned(),
    );
    if c.is_ca {
        n.field("CA", true);
    }
    if c.subject_raw == c.issuer_raw {
        if signed_by(c, c) {
            n.check("self-signature", Status::Valid("verifies".into()));
        } else {
            n.check("self-signature", Status::Invalid("does not verify".into()));
        }
    } else {
        let candidates: Vec<&ParsedCert> = pool
            .iter()
            .filter(|p| p.subject_raw == c.issuer_raw)
            .collect();
        if candidates.is_empty() {
            n.check(
                "signature",
                Status::Unchecked(format!(
                    "issuer {:?} not given (add it with --roots)",
                    c.issuer
                )),
            );
        } else if candidates.iter().any(|p| signed_by(c, p)) {
            n.check(
                "signature",
                Status::Valid(format!("signed by {:?}", c.issuer)),
            );
        } else {
            n.check(
                "signature",
                Status::Invalid(format!("does not verify with the key of {:?}", c.issuer)),
            );
        }
    }
    if c.subject.contains("INSECURE") || c.issuer.contains("INSECURE") {
        n.check(
            "hierarchy",
            Status::Insecure(
                "INSECURE vmseal test hierarchy (software SNP stand-in): proves nothing".into(),
            ),
        );
    }
    for e in &c.extensions {
        if let Some(name) = tcb_name(&e.oid) {
            n.field(
                &format!("AMD {name}"),
                der_small_int(&e.value).map_or("?".into(), |v| v.to_string()),
            );
        } else if e.oid == OID_HWID {
            n.field("AMD hwID", hex::encode(hwid_bytes(&e.value)));
        } else if e.oid == OID_PRODUCT_NAME {
            n.field("AMD productName", ia5_or_utf8(&e.value));
        } else if e.oid == OID_CSP_ID {
            n.field("AMD cspID", ia5_or_utf8(&e.value));
        }
    }
    for (k, v) in tpm_attributes(&c.der) {
        n.field(&k, v);
    }
    vmseal_extensions(c, ctx, &mut n);
    n
}

fn vmseal_extensions(c: &ParsedCert, ctx: &Context, n: &mut Node) {
    match c.vmseal_extension::<HostIdentity>(oid::EXT_HOST_IDENTITY_STR) {
        Ok(Some(h)) => {
            n.field("vmseal host", h.host_id);
        }
        Ok(None) => {}
        Err(e) => {
            n.check("vmseal host identity", Status::Invalid(e.to_string()));
        }
    }
    match c.vmseal_extension::<SnapshotIdentity>(oid::EXT_SNAPSHOT_IDENTITY_STR) {
        Ok(Some(s)) => {
            n.field("vmseal snapshot", format!("{} #{}", s.vm_id, s.seq));
        }
        Ok(None) => {}
        Err(e) => {
            n.check("vmseal snapshot identity", Status::Invalid(e.to_string()));
        }
    }
    match c.vmseal_extension::<TpmAnchor>(oid::EXT_TPM_ANCHOR_STR) {
        Ok(Some(a)) => n.children.push(tpm_anchor_node(&a, c, ctx)),
        Ok(None) => {}
        Err(e) => {
            n.check("vmseal TPM anchor", Status::Invalid(e.to_string()));
        }
    }
    match c.vmseal_extension::<SnpAnchor>(oid::EXT_SNP_ANCHOR_STR) {
        Ok(Some(a)) => n.children.push(snp_anchor_node(&a, c, ctx)),
        Ok(None) => {}
        Err(e) => {
            n.check("vmseal SNP anchor", Status::Invalid(e.to_string()));
        }
    }
}

fn tpm_anchor_node(a: &TpmAnchor, c: &ParsedCert, ctx: &Context) -> Node {
    let mut n = Node::new("tpm-quote", "TPM anchor (quote binding this key)");
    n.field("AK name", hex::encode(object_name(&a.ak_public)));
    n.field("nonce", hex::encode(&a.nonce));
    let pcrs: Vec<String> = a
        .pcrs
        .iter()
        .map(|p| format!("{}:{}", p.bank, p.index))
        .collect();
    n.field("PCRs", pcrs.join(","));
    match verify_tpm_anchor(a, &c.spki_der, &ctx.trust.tpm) {
        Ok(v) => {
            n.check(
                "quote",
                Status::Valid("AK signature, extraData = SHA-256(SPKI ‖ nonce), PCR digest".into()),
            );
            n.field("TPM firmware", format!("{:#x}", v.firmware_version));
            if v.ek_chain_verified {
                n.check(
                    "EK certificate",
                    Status::Valid("chains to a trusted TPM manufacturer CA".into()),
                );
            } else {
                n.check(
                    "EK certificate",
                    Status::Unchecked("no trusted EK CA given (--roots)".into()),
                );
            }
        }
        Err(e) => {
            n.check("quote", Status::Invalid(e.to_string()));
        }
    }
    if let Ok(ek) = ParsedCert::from_der(&a.ek_cert) {
        let pool = ctx.roots.clone();
        n.children.push(cert_node(&ek, &pool, ctx));
    }
    n
}

/// Roots for SNP checks: configured ones, plus the anchor's own test hierarchy with --allow-insecure.
pub(crate) fn snp_trust_for(
    a_ark: &[u8],
    a_ask: &[u8],
    product_hint: Option<vmseal_sealer::snp::Product>,
    ctx: &Context,
) -> vmseal_sealer::snp::verify::SnpTrust {
    let mut t = ctx.trust.snp.clone();
    if ctx.allow_insecure
        && !a_ark.is_empty()
        && !a_ask.is_empty()
        && let Ok(ark) = ParsedCert::from_der(a_ark)
        && ark.subject.contains("INSECURE")
    {
        t = t.allow_insecure(AmdRoots {
            product: product_hint.unwrap_or(vmseal_sealer::snp::Product::Milan),
            ark: a_ark.to_vec(),
            ask: a_ask.to_vec(),
            asvk: None,
            insecure: true,
        });
    }
    t
}

fn snp_anchor_node(a: &SnpAnchor, c: &ParsedCert, ctx: &Context) -> Node {
    let mut n = Node::new(
        "snp-anchor",
        format!("SEV-SNP anchor via {}", a.provider.name()),
    );
    if a.provider == SnpProvider::InsecureSoft {
        n.check(
            "provider",
            Status::Insecure("INSECURE software stand-in: not a real SEV-SNP report".into()),
        );
    }
    let product = SnpReport::parse(&a.report)
        .ok()
        .and_then(|r| r.product_from_cpuid());
    let trust = snp_trust_for(&a.ark, &a.ask, product, ctx);
    let sctx = Context {
        trust: TrustConfig {
            snp: trust,
            ..ctx.trust.clone()
        },
        roots: ctx.roots.clone(),
        corim_signers: Vec::new(),
        allow_insecure: ctx.allow_insecure,
        at: ctx.at,
    };
    match vmseal_sealer::snp::verify::verify_snp_anchor(
        a,
        &c.spki_der,
        &sctx.trust.snp,
        ctx.at.unix_timestamp(),
    ) {
        Ok(v) if v.insecure => {
            n.check(
                "report",
                Status::Insecure("verifies, but only under the INSECURE test root".into()),
            );
        }
        Ok(_) => {
            n.check(
                "report",
                Status::Valid(
                    "AMD chain, signature, TCB, REPORT_DATA = SHA-512(SPKI ‖ nonce)".into(),
                ),
            );
        }
        Err(e) => {
            n.check("report", Status::Invalid(e.to_string()));
        }
    }
    // The anchor's check above already verified the report; show its fields only.
    n.children.push(report_node(&a.report, None, &sctx));
    n
}

/// Describe an SNP report; verify it when the VCEK/VLEK is given.
pub(crate) fn report_node(raw: &[u8], vek: Option<&[u8]>, ctx: &Context) -> Node {
    let mut n = Node::new("snp-report", "SEV-SNP attestation report");
    let r = match SnpReport::parse(raw) {
        Ok(r) => r,
        Err(e) => {
            n.check("parse", Status::Invalid(e.to_string()));
            return n;
        }
    };
    n.field("version", r.version);
    n.field("signing key", format!("{:?}", r.signing_key()));
    n.field(
        "product (CPUID)",
        r.product_from_cpuid()
            .map_or("not in v2 reports".into(), |p| p.name().to_owned()),
    );
    n.field("VMPL", r.vmpl);
    n.field("policy", guest_policy(r.policy));
    n.field("measurement", hex::encode(r.measurement));
    n.field("report_data", hex::encode(r.report_data));
    n.field("host_data", hex::encode(r.host_data));
    n.field("reported_tcb", format!("{:#018x}", r.reported_tcb.0));
    n.field(
        "chip_id",
        if r.chip_id_masked() {
            "masked".into()
        } else {
            hex::encode(r.chip_id)
        },
    );
    let (b, mi, ma) = r.current_version;
    n.field("firmware", format!("{ma}.{mi}.{b}"));
    match vek {
        None => {}
        Some(v) => {
            let trust = &ctx.trust.snp;
            match verify_report(raw, v, None, trust, ctx.at.unix_timestamp()) {
                Ok(vr) => {
                    let tcb = vr.reported_tcb;
                    n.field(
                        "TCB",
                        format!(
                            "bl={} tee={} snp={} ucode={} fmc={}",
                            tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc
                        ),
                    );
                    n.field("product (chain)", vr.product.name());
                    let status = if vr.insecure {
                        Status::Insecure("INSECURE test root".into())
                    } else {
                        Status::Valid(format!(
                            "{} → ASK → ARK, ECDSA P-384, TCB{}",
                            vr.chain[0],
                            if vr.chip_id_checked { ", hwID" } else { "" }
                        ))
                    };
                    n.check("report signature and chain", status);
                }
                Err(e) => {
                    n.check("report signature and chain", Status::Invalid(e.to_string()));
                }
            }
        }
    }
    n
}

/// Order certificates leaf first, issuers after, and describe the chain.
pub(crate) fn chain_nodes(certs: &[ParsedCert], ctx: &Context) -> Vec<Node> {
    let mut pool: Vec<ParsedCert> = certs.to_vec();
    pool.extend(ctx.roots.iter().cloned());
    for r in &ctx.trust.snp.roots {
        for d in [Some(&r.ark), Some(&r.ask), r.asvk.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Ok(c) = ParsedCert::from_der(d) {
                pool.push(c);
            }
        }
    }
    certs.iter().map(|c| cert_node(c, &pool, ctx)).collect()
}

/// Describe vmseal evidence and verify it.
pub(crate) fn evidence_node(bytes: &[u8], ctx: &Context) -> Node {
    let mut n = Node::new(
        "evidence",
        "vmseal snapshot evidence (COSE_Sign1, ML-DSA-65)",
    );
    let d = match DecodedEvidence::decode(bytes) {
        Ok(d) => d,
        Err(e) => {
            n.check("structure", Status::Invalid(e.to_string()));
            return n;
        }
    };
    n.field("sha256", hex::encode(d.digest));
    match Claims::decode_versioned(&d.payload) {
        Ok((c, profile)) => {
            n.title = format!("vmseal evidence {} #{}", c.vm_id, c.seq);
            n.field(
                "profile",
                match profile {
                    vmseal_sealer::claims::ClaimsProfile::V2 => {
                        vmseal_sealer::claims::PROFILE.to_owned()
                    }
                    vmseal_sealer::claims::ClaimsProfile::V1 => format!(
                        "{} (the previous profile: read for this release only)",
                        vmseal_sealer::claims::PROFILE_V1
                    ),
                },
            );
            n.field("vm", c.vm_id.clone());
            n.field("host", c.host_id.clone());
            n.field("seq", c.seq);
            n.field(
                "prev",
                c.prev.map_or("none (first snapshot)".into(), hex::encode),
            );
            n.field("issued", ts(c.iat));
            n.field("nonce", c.nonce.as_ref().map_or("none".into(), hex::encode));
            n.field(
                "policy",
                format!(
                    "{} v{} ({})",
                    c.policy.name,
                    c.policy.version,
                    hex::encode(c.policy.digest)
                ),
            );
            n.field("hash", c.hash_alg.name());
            n.field("memory_root", hex::encode(c.memory_root));
            n.field("code_hash", hex::encode(c.code_hash));
            n.field(
                "module",
                format!(
                    "{} {} ({})",
                    c.module.name,
                    c.module.version,
                    hex::encode(&c.module.build_digest[..8])
                ),
            );
            let kind = match c.capture.kind {
                CaptureKind::Full => "full".to_owned(),
                CaptureKind::Incremental { base_seq } => format!("incremental from #{base_seq}"),
            };
            n.field(
                "capture",
                format!(
                    "{kind}, {} pages, pause {} µs, {} µs",
                    c.capture.pages_read, c.capture.pause_us, c.capture.duration_us
                ),
            );
            for r in &c.regions {
                let mut rn = Node::new("region", r.name.clone());
                rn.field("class", r.class.name());
                rn.field("severity", r.severity.name());
                rn.field("pages", r.pages);
                rn.field("root", hex::encode(r.root));
                let ranges: Vec<String> = r
                    .ranges
                    .iter()
                    .map(|g| format!("{:#x}+{:#x}", g.start, g.len))
                    .collect();
                rn.field("ranges", ranges.join(" "));
                if let Some(delta) = c.delta.iter().find(|d| d.region == r.name) {
                    rn.field("changed pages", delta.changes.len());
                }
                n.children.push(rn);
            }
            if let Some(k) = &c.kernel {
                n.children.push(kernel_node(k));
            }
        }
        Err(e) => {
            n.check("claims", Status::Invalid(e.to_string()));
        }
    }
    // The chain, leaf first.
    let mut certs = Vec::new();
    for der in [&d.leaf_der, &d.intermediate_der] {
        match ParsedCert::from_der(der) {
            Ok(c) => certs.push(c),
            Err(e) => {
                n.check("certificate", Status::Invalid(e.to_string()));
            }
        }
    }
    // With --allow-insecure, trust the INSECURE test root the anchor carries.
    let mut trust = ctx.trust.clone();
    if let Some(inter) = certs.get(1)
        && let Ok(Some(a)) = inter.vmseal_extension::<SnpAnchor>(oid::EXT_SNP_ANCHOR_STR)
    {
        let product = SnpReport::parse(&a.report)
            .ok()
            .and_then(|r| r.product_from_cpuid());
        trust.snp = snp_trust_for(&a.ark, &a.ask, product, ctx);
    }
    match verify_evidence(bytes, &trust, ctx.at) {
        Ok(v) if v.insecure() => {
            n.check(
                "evidence",
                Status::Insecure(
                    "verifies, but its SNP anchor is the INSECURE software stand-in".into(),
                ),
            );
        }
        Ok(v) => {
            let anchors = match (&v.tpm, &v.snp) {
                (Some(_), Some(_)) => "TPM quote and SEV-SNP report",
                (Some(_), None) => "TPM quote",
                (None, Some(_)) => "SEV-SNP report",
                (None, None) if v.pinned => "pinned intermediate",
                (None, None) => "no hardware anchor (none required)",
            };
            n.check(
                "evidence",
                Status::Valid(format!(
                    "leaf → intermediate → {anchors}; claims consistent"
                )),
            );
        }
        Err(e) => {
            n.check("evidence", Status::Invalid(e.to_string()));
        }
    }
    n.children.extend(chain_nodes(&certs, ctx));
    n
}

/// A golden baseline as a signed CoRIM: what it states, and whether a trusted key signed it.
fn corim_node(bytes: &[u8], ctx: &Context) -> Node {
    use vmseal_client::corim;
    let mut n = Node::new("corim", "golden baseline (signed CoRIM)");
    let now = ctx.at.unix_timestamp();
    let u = match corim::read_unauthenticated(bytes, now) {
        Ok(u) => u,
        Err(e) => {
            n.check("corim", Status::Invalid(e.to_string()));
            return n;
        }
    };
    n.field("alg", u.alg.clone());
    n.field("kid", u.kid.as_deref().map(hex::encode).unwrap_or_default());
    if let Some(i) = &u.issuer {
        n.field("issuer", i.clone());
    }
    match &u.values {
        Ok(v) => {
            n.field("corim_id", v.corim_id.clone())
                .field("profile", corim::CORIM_PROFILE)
                .field("tag", format!("{} v{}", v.tag_id, v.tag_version))
                .field("policy_digest", hex::encode(v.policy_digest))
                .field("policy_text", v.policy_text.is_some());
            for r in &v.regions {
                let mut c = Node::new("region", format!("region {}", r.name));
                c.field("class", r.class.name())
                    .field("severity", r.severity.name())
                    .field("hash", r.hash.name())
                    .field("pages", r.leaves.len())
                    .field(
                        "root",
                        r.root().map(hex::encode).unwrap_or_else(|e| e.to_string()),
                    );
                n.children.push(c);
            }
            if let Some(k) = &v.kernel {
                let mut g = kernel_node(k);
                g.title = format!("golden state of {}", g.title);
                n.children.push(g);
            }
        }
        Err(e) => {
            n.check("baseline", Status::Invalid(e.clone()));
        }
    }
    let status = if ctx.corim_signers.is_empty() {
        Status::Unchecked(
            "no trusted signer given: add --corim-signer PEM (a verifier's `admin baselines signer`)".into(),
        )
    } else {
        match corim::open(bytes, &ctx.corim_signers, now) {
            Ok(o) => Status::Valid(format!("signed by {}", o.signer)),
            Err(e) => Status::Invalid(e.to_string()),
        }
    };
    n.check("signature", status);
    n
}

fn table_certs(t: &vmseal_sealer::snp::provider::TableCerts) -> Vec<ParsedCert> {
    [&t.vek, &t.ask, &t.ark]
        .into_iter()
        .filter(|d| !d.is_empty())
        .filter_map(|d| ParsedCert::from_der(d).ok())
        .collect()
}

/// Describe any input.
pub(crate) fn node_for(input: &Input, ctx: &Context) -> Vec<Node> {
    match input {
        Input::Evidence(b) => vec![evidence_node(b, ctx)],
        Input::Corim(b) => vec![corim_node(b, ctx)],
        Input::Certs(c) => chain_nodes(c, ctx),
        Input::Report(r) => vec![report_node(r, None, ctx)],
        Input::CertTable(t) => {
            let mut n = Node::new("cert-table", "AMD certificate table (auxblob)");
            match split_cert_table(t) {
                Ok(t) => n.children = chain_nodes(&table_certs(&t), ctx),
                Err(e) => {
                    n.check("table", Status::Invalid(e.to_string()));
                }
            }
            vec![n]
        }
        Input::TsmJson { report, aux } => {
            let mut n = Node::new("configfs-tsm", "configfs-tsm report (outblob + auxblob)");
            match split_cert_table(aux) {
                Ok(t) => {
                    n.children.push(report_node(report, Some(&t.vek), ctx));
                    n.children.extend(chain_nodes(&table_certs(&t), ctx));
                }
                Err(e) => {
                    n.check("auxblob", Status::Invalid(e.to_string()));
                    n.children.push(report_node(report, None, ctx));
                }
            }
            vec![n]
        }
    }
}

/// An SEV-SNP guest policy with the bits a hardware appraisal policy checks spelled out; DEBUG
/// is shouted, since it lets the hypervisor read and write the guest.
fn guest_policy(p: u64) -> String {
    let bit = |b: u32| p & (1u64 << b) != 0;
    format!(
        "{p:#x} ({}, SMT {}, migration agent {})",
        if bit(19) {
            "DEBUG ALLOWED: the hypervisor can read and write this guest"
        } else {
            "debug not allowed"
        },
        if bit(17) { "allowed" } else { "not allowed" },
        if bit(18) { "allowed" } else { "not allowed" },
    )
}
