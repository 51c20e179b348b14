//! Object identifiers used by vmseal.
//!
//! vmseal's own arc is `2.25.5730547740633964584`. The `2.25` arc (ITU-T X.667) takes the integer
//! value of a UUID; Rust's X.509 encoders limit arcs to 64 bits (rcgen) or 32 bits (const-oid), so
//! a full 122-bit random UUID cannot be encoded with them. vmseal uses a random 63-bit value
//! instead (a UUID whose high half is zero), which keeps the arc collision-resistant without a
//! registry. See `docs/evidence-format.md`.

/// The vmseal arc, as components.
pub const VMSEAL_ARC: [u64; 3] = [2, 25, 5_730_547_740_633_964_584];

/// Dotted form of [`VMSEAL_ARC`].
pub const VMSEAL_ARC_STR: &str = "2.25.5730547740633964584";

macro_rules! vmseal_oid {
    ($(#[$doc:meta])* $name:ident, $name_str:ident, $a:literal, $b:literal) => {
        $(#[$doc])*
        pub const $name: [u64; 5] = [VMSEAL_ARC[0], VMSEAL_ARC[1], VMSEAL_ARC[2], $a, $b];
        $(#[$doc])*
        pub const $name_str: &str = concat!("2.25.5730547740633964584.", $a, ".", $b);
    };
}

vmseal_oid!(
    /// Extension on the intermediate certificate: the TPM anchor (quote, AK, EK certificate).
    EXT_TPM_ANCHOR, EXT_TPM_ANCHOR_STR, 1, 1
);
vmseal_oid!(
    /// Extension on the intermediate certificate: the SEV-SNP anchor (report and VCEK chain).
    EXT_SNP_ANCHOR, EXT_SNP_ANCHOR_STR, 1, 2
);
vmseal_oid!(
    /// Extension on a leaf certificate: which VM and which snapshot sequence it may sign.
    EXT_SNAPSHOT_IDENTITY, EXT_SNAPSHOT_IDENTITY_STR, 1, 3
);
vmseal_oid!(
    /// Extension on the intermediate certificate: the host's identity.
    EXT_HOST_IDENTITY, EXT_HOST_IDENTITY_STR, 1, 4
);
vmseal_oid!(
    /// Extended key usage of a leaf certificate: signing vmseal snapshot evidence.
    EKU_EVIDENCE_SIGNING, EKU_EVIDENCE_SIGNING_STR, 2, 1
);
vmseal_oid!(
    /// Extended key usage of the verifier's EAR certificate: signing attestation results.
    EKU_EAR_SIGNING, EKU_EAR_SIGNING_STR, 2, 2
);

/// ML-DSA-44 (FIPS 204, RFC 9881).
pub const ML_DSA_44: &str = "2.16.840.1.101.3.4.3.17";
/// ML-DSA-65 (FIPS 204, RFC 9881).
pub const ML_DSA_65: &str = "2.16.840.1.101.3.4.3.18";
/// ML-DSA-87 (FIPS 204, RFC 9881).
pub const ML_DSA_87: &str = "2.16.840.1.101.3.4.3.19";

/// DER encoding (content octets) of an OID given as components, for comparison with parsed
/// certificates.
pub fn der_content(components: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    if components.len() < 2 {
        return out;
    }
    push_base128(&mut out, components[0] * 40 + components[1]);
    for &c in &components[2..] {
        push_base128(&mut out, c);
    }
    out
}

fn push_base128(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    let n = tmp.len();
    for (j, b) in tmp[i..].iter().enumerate() {
        out.push(if i + j + 1 < n { b | 0x80 } else { *b });
    }
}

/// A human name for a signature or key algorithm OID, for display.
pub fn algorithm_name(oid: &str) -> &'static str {
    match oid {
        ML_DSA_44 => "ML-DSA-44",
        ML_DSA_65 => "ML-DSA-65",
        ML_DSA_87 => "ML-DSA-87",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.113549.1.1.11" => "RSA-PKCS1-SHA256",
        "1.2.840.113549.1.1.12" => "RSA-PKCS1-SHA384",
        "1.2.840.113549.1.1.13" => "RSA-PKCS1-SHA512",
        "1.2.840.113549.1.1.5" => "RSA-PKCS1-SHA1",
        "1.2.840.10045.2.1" => "EC",
        "1.2.840.10045.4.3.2" => "ECDSA-SHA256",
        "1.2.840.10045.4.3.3" => "ECDSA-SHA384",
        "1.2.840.10045.4.3.4" => "ECDSA-SHA512",
        "1.3.101.112" => "Ed25519",
        "1.3.132.0.34" => "P-384",
        "1.2.840.10045.3.1.7" => "P-256",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_content_matches_known_encoding() {
        // 2.16.840.1.101.3.4.3.18 = 60 86 48 01 65 03 04 03 12
        assert_eq!(
            der_content(&[2, 16, 840, 1, 101, 3, 4, 3, 18]),
            [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12]
        );
        let arc = der_content(&VMSEAL_ARC);
        assert_eq!(arc[0], 2 * 40 + 25);
        assert!(arc.len() > 9);
    }

    #[test]
    fn string_forms_agree_with_components() {
        let s: Vec<String> = EXT_TPM_ANCHOR.iter().map(u64::to_string).collect();
        assert_eq!(s.join("."), EXT_TPM_ANCHOR_STR);
        let s: Vec<String> = EKU_EVIDENCE_SIGNING.iter().map(u64::to_string).collect();
        assert_eq!(s.join("."), EKU_EVIDENCE_SIGNING_STR);
    }
}
