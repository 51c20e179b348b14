//! The TLS side: rustls with mandatory client certificates from the verifier's CA, and the
//! connection hook that stashes the peer certificate.

use std::sync::Arc;

use crate::api::auth::PeerCert;
use crate::state::{TLS_CLASSICAL_CONNECTIONS, TLS_CONNECTIONS, TLS_PQ_CONNECTIONS};

/// The rustls configuration: TLS 1.3, X25519MLKEM768 preferred (classical groups after it), client
/// certificates from the verifier CA required.
pub fn tls_config(
    ca_pem: &[u8],
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
) -> Result<rustls::ServerConfig, String> {
    tls_config_with(
        ca_pem,
        server_cert_pem,
        server_key_pem,
        vmseal_client::KeyExchange::default(),
    )
}

/// [`tls_config`] with the key exchanges of `kx` (`pq-only` refuses classical-only clients).
pub fn tls_config_with(
    ca_pem: &[u8],
    server_cert_pem: &[u8],
    server_key_pem: &[u8],
    kx: vmseal_client::KeyExchange,
) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(vmseal_client::crypto_provider(kx));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(server_cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(server_key_pem).map_err(|e| e.to_string())?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// Stash the peer certificate of each TLS connection for the handlers.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    TLS_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(tls) = conn
        .downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>>()
    {
        let (_, session) = tls.get_ref();
        match session.negotiated_key_exchange_group().map(|g| g.name()) {
            Some(rustls::NamedGroup::X25519MLKEM768) => &TLS_PQ_CONNECTIONS,
            _ => &TLS_CLASSICAL_CONNECTIONS,
        }
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) {
            use x509_parser::prelude::{FromDer, X509Certificate};
            let serial = X509Certificate::from_der(leaf)
                .map(|(_, c)| hex::encode(c.raw_serial()))
                .unwrap_or_default();
            ext.insert(PeerCert(leaf.to_vec(), serial));
        }
    }
}
