//! The verifier's own PKI for mutual TLS: a CA, the server certificate, and client certificates
//! whose role (admin, agent of one host, or one-use enrollment token) is in the subject.
//!
//! TLS authentication uses ECDSA P-256 (what every TLS stack verifies); the key exchange is the
//! hybrid post-quantum X25519MLKEM768 that rustls with aws-lc-rs negotiates by default. Evidence
//! itself is ML-DSA all the way.
//!
//! ```text
//! DIR/ca.pem, DIR/ca.key           the verifier's root CA (ca.key is needed only by `init`:
//!                                  keep it offline)
//! DIR/issuing.pem, DIR/issuing.key the issuing CA the root certified: the service issues agent,
//!                                  token, viewer and EAR certificates with it (states made
//!                                  before it existed keep issuing with ca.key)
//! DIR/server.pem, DIR/server.key   the server certificate (localhost, 127.0.0.1, ::1 + names)
//! DIR/admin.pem, DIR/admin.key     the first admin's client certificate
//! DIR/ear.pem, DIR/ear.key         the attestation-result (EAR) signer, made at the first `serve`
//! DIR/verifier.db                  SQLite (unless --database names another database)
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or parsing.
    #[error("certificate: {0}")]
    Cert(String),
    /// The directory already has a CA.
    #[error("{0} already holds a verifier state; use another directory")]
    Exists(PathBuf),
}

fn cert_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Cert(e.to_string())
}

/// A client's role, from its certificate subject: `OU=admin`, `OU=viewer`, `OU=agent` with
/// `CN=<host id>`, or `OU=enroll` with `CN=<token id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Registers VMs, assigns policies, promotes baselines.
    Admin(String),
    /// Acts for one host and its VMs only.
    Agent(String),
    /// A one-use bootstrap credential: may only enrol one host (the token id).
    Enroll(String),
    /// Reads what admins read (VMs, appraisals, alerts, the web page); changes nothing.
    Viewer(String),
}

impl Role {
    fn dn(&self) -> DistinguishedName {
        match self {
            Role::Admin(name) => dn("admin", name),
            Role::Agent(host) => dn("agent", host),
            Role::Enroll(token) => dn("enroll", token),
            Role::Viewer(name) => dn("viewer", name),
        }
    }
}

/// The role a client certificate (DER) carries, if any.
pub fn role_of(der: &[u8]) -> Option<Role> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(der).ok()?;
    let ou = c
        .subject()
        .iter_organizational_unit()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    let cn = c
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    match ou.as_str() {
        "admin" => Some(Role::Admin(cn)),
        "agent" => Some(Role::Agent(cn)),
        "enroll" => Some(Role::Enroll(cn)),
        "viewer" => Some(Role::Viewer(cn)),
        _ => None,
    }
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    vmseal_sealer::state::write_atomic(path, text.as_bytes()).map_err(|e| PkiError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn dn(ou: &str, cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "vmseal verifier");
    d.push(DnType::OrganizationalUnitName, ou);
    d.push(DnType::CommonName, cn);
    d
}

/// The verifier CA, loaded: the key that issues (the issuing CA, or the root for states made
/// before it existed) and the chain to append to what it issues.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The root CA certificate, PEM (what clients trust).
    pub cert_pem: String,
    /// The issuing CA's certificate, PEM, appended to every certificate it issues so clients
    /// present the whole chain; empty when the root issues.
    pub chain_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate.
    pub cert_pem: String,
    /// Private key (PKCS#8).
    pub key_pem: String,
}

impl Ca {
    /// Create the verifier state in `dir`: CA, server certificate for `names`, first admin.
    pub fn init(dir: &Path, names: &[String]) -> Result<Self, PkiError> {
        if dir.join("ca.pem").exists() {
            return Err(PkiError::Exists(dir.to_owned()));
        }
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn("ca", "vmseal verifier CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + Duration::days(3650);
        let cert = p.self_signed(&key).map_err(cert_err)?;
        write(&dir.join("ca.key"), &key.serialize_pem())?;
        write(&dir.join("ca.pem"), &cert.pem())?;
        // The issuing CA: what `serve` signs with, so the root's key can stay offline.
        let root = Issuer::from_ca_cert_pem(&cert.pem(), key).map_err(cert_err)?;
        let ikey = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let mut ip = CertificateParams::default();
        ip.distinguished_name = dn("ca", "vmseal verifier issuing CA");
        ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ip.not_before = now - Duration::minutes(5);
        ip.not_after = now + Duration::days(1825);
        let icert = ip.signed_by(&ikey, &root).map_err(cert_err)?;
        write(&dir.join("issuing.key"), &ikey.serialize_pem())?;
        write(&dir.join("issuing.pem"), &icert.pem())?;
        let ca = Self::load(dir)?;
        let server = ca.issue_server(names)?;
        write(&dir.join("server.key"), &server.key_pem)?;
        write(&dir.join("server.pem"), &server.cert_pem)?;
        let admin = ca.issue_client(&Role::Admin("admin".into()), AGENT_CERT_LIFETIME)?;
        write(&dir.join("admin.key"), &admin.key_pem)?;
        write(&dir.join("admin.pem"), &admin.cert_pem)?;
        Ok(ca)
    }

    /// Load the CA from `dir`: the issuing CA when the state has one (the root's key is not
    /// read), else the root.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_pem = read(&dir.join("ca.pem"))?;
        if dir.join("issuing.key").exists() {
            let chain_pem = read(&dir.join("issuing.pem"))?;
            let key = KeyPair::from_pem(&read(&dir.join("issuing.key"))?).map_err(cert_err)?;
            let issuer = Issuer::from_ca_cert_pem(&chain_pem, key).map_err(cert_err)?;
            return Ok(Self {
                issuer,
                cert_pem,
                chain_pem,
            });
        }
        let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(cert_err)?;
        Ok(Self {
            issuer,
            cert_pem,
            chain_pem: String::new(),
        })
    }

    fn leaf(&self, mut p: CertificateParams, lifetime: Duration) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + lifetime;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok(Issued {
            cert_pem: cert.pem() + &self.chain_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Sign `params` for `key` as this CA; the certificate and the issuing chain, PEM.
    pub fn sign(&self, params: CertificateParams, key: &KeyPair) -> Result<String, PkiError> {
        Ok(params.signed_by(key, &self.issuer).map_err(cert_err)?.pem() + &self.chain_pem)
    }

    /// Issue the server certificate.
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, PkiError> {
        let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        all.extend(names.iter().cloned());
        let mut p = CertificateParams::default();
        p.distinguished_name = dn("server", "vmseal verifier");
        p.subject_alt_names = all
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(cert_err),
            })
            .collect::<Result<_, _>>()?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf(p, Duration::days(825))
    }

    /// Issue a client certificate (and its key) for `role`, valid for `lifetime`.
    pub fn issue_client(&self, role: &Role, lifetime: Duration) -> Result<Issued, PkiError> {
        self.leaf(client_params(role), lifetime)
    }

    /// Certify the public key of a certificate request (PEM or DER `PKCS#10`, signature checked)
    /// as a client certificate for `role`. Only the key is taken from the request: subject,
    /// extensions and validity are the CA's. Returns the certificate, PEM.
    pub fn certify_request(
        &self,
        csr_der: &[u8],
        role: &Role,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let csr = check_request(csr_der)?;
        let mut p = client_params(role);
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + lifetime;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let req = rcgen::CertificateSigningRequestParams {
            params: p,
            public_key: csr.public_key,
        };
        Ok(req.signed_by(&self.issuer).map_err(cert_err)?.pem() + &self.chain_pem)
    }
}

/// Parse a certificate request (DER `PKCS#10`), check its signature and that its key is one a
/// client certificate may carry; nothing is signed.
pub fn check_request(csr_der: &[u8]) -> Result<rcgen::CertificateSigningRequestParams, PkiError> {
    let csr = rcgen::CertificateSigningRequestParams::from_der(&csr_der.into())
        .map_err(|e| PkiError::Cert(format!("certificate request: {e}")))?;
    if !ACCEPTED_CLIENT_KEYS.contains(&csr.public_key.algorithm()) {
        return Err(PkiError::Cert(
            "certificate request: the key must be ECDSA P-256 or P-384, or Ed25519".into(),
        ));
    }
    Ok(csr)
}

/// Keys a client certificate may carry (what rustls verifies in TLS 1.3 client auth).
const ACCEPTED_CLIENT_KEYS: [&rcgen::SignatureAlgorithm; 3] = [
    &PKCS_ECDSA_P256_SHA256,
    &rcgen::PKCS_ECDSA_P384_SHA384,
    &rcgen::PKCS_ED25519,
];

fn client_params(role: &Role) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = role.dn();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

/// Lifetime of an agent certificate (13 months, like a public TLS certificate).
pub const AGENT_CERT_LIFETIME: Duration = Duration::days(397);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_the_files_and_roles_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let ca = Ca::init(d.path(), &["verifier.example".into()]).unwrap();
        for f in [
            "ca.pem",
            "ca.key",
            "server.pem",
            "server.key",
            "admin.pem",
            "admin.key",
        ] {
            assert!(d.path().join(f).exists(), "{f}");
        }
        assert!(matches!(Ca::init(d.path(), &[]), Err(PkiError::Exists(_))));
        let admin = pem::parse(std::fs::read(d.path().join("admin.pem")).unwrap()).unwrap();
        assert_eq!(role_of(admin.contents()), Some(Role::Admin("admin".into())));
        let agent = ca
            .issue_client(&Role::Agent("host-7".into()), AGENT_CERT_LIFETIME)
            .unwrap();
        let der = pem::parse(agent.cert_pem).unwrap();
        assert_eq!(role_of(der.contents()), Some(Role::Agent("host-7".into())));
        let (csr, _key) = vmseal_client::new_key_and_request().unwrap();
        let csr = pem::parse(csr).unwrap();
        let cert = ca
            .certify_request(
                csr.contents(),
                &Role::Enroll("tok".into()),
                Duration::hours(1),
            )
            .unwrap();
        let der = pem::parse(cert).unwrap();
        assert_eq!(role_of(der.contents()), Some(Role::Enroll("tok".into())));
        let server = pem::parse(std::fs::read(d.path().join("server.pem")).unwrap()).unwrap();
        assert_eq!(
            role_of(server.contents()),
            None,
            "the server certificate is no client role"
        );
    }
}
