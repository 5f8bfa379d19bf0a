//! TLS client configurations from PEM files (a CA to trust, a client identity to present).

use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A root store holding the one certificate in the PEM file `ca`.
pub fn roots(ca: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("ca"))
        .expect("root");
    roots
}

/// A client configuration (ring, the default protocol versions) trusting `ca`, presenting the
/// identity `(cert.pem, key.pem)` when given.
pub fn client_config(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> ClientConfig {
    client_config_with(ca, identity, rustls::DEFAULT_VERSIONS)
}

/// [`client_config`] limited to `versions` (QUIC needs TLS 1.3 alone).
pub fn client_config_with(
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
    versions: &[&'static SupportedProtocolVersion],
) -> ClientConfig {
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots(ca));
    match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).expect("cert")],
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client auth"),
        None => b.with_no_client_auth(),
    }
}

/// A QUIC client configuration: [`client_config_with`] on TLS 1.3 with the one ALPN `alpn`.
pub fn quic_client_config(
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
    alpn: &[u8],
) -> quinn::ClientConfig {
    let mut tls = client_config_with(ca, identity, &[&rustls::version::TLS13]);
    tls.alpn_protocols = vec![alpn.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls"),
    ))
}
