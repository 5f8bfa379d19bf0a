//! The hub's rustls server configurations: its certificate, client certificates required and
//! verified against the PKI's CA and revocation list; ALPN `tandem/1` for QUIC, `http/1.1` for
//! the HTTPS API; and the device identity read back from a verified client certificate.

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_shared::wire::ALPN;

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing or unreadable.
    #[error("{path}: {message} (create the PKI with `tandem-hub init --dir DIR`)")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn pem_err(path: &Path) -> impl FnOnce(rustls_pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The ring crypto provider, the one TLS stack of the hub.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The QUIC ingress's server configuration from a PKI folder: [`mtls_config`], ALPN
/// `tandem/1`, 0-RTT data accepted.
pub fn server_config(pki: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = mtls_config(pki)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = u32::MAX;
    Ok(cfg)
}

/// The HTTPS API's server configuration: [`mtls_config`], ALPN `http/1.1`.
pub fn https_config(pki: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = mtls_config(pki)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// TLS 1.3 with the hub certificate from a PKI folder (`hub.pem`, `hub.key`), requiring a client
/// certificate signed by its CA (`ca.pem`) and not revoked in `crl.pem`.
pub fn mtls_config(pki: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let ca_path = pki.join("ca.pem");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca_path).map_err(pem_err(&ca_path))?)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let crl_path = pki.join("crl.pem");
    let crl = CertificateRevocationListDer::from_pem_file(&crl_path).map_err(pem_err(&crl_path))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls([crl])
        // A lapsed CRL refuses every client, as in mosquitto: the running hub re-signs it at
        // half its validity (`revocation`), so it never lapses while the hub runs.
        .enforce_revocation_expiration()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let (chain, key) = hub_identity(pki)?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

/// The hub's certificate chain and key from a PKI folder (`hub.pem`, `hub.key`).
fn hub_identity(
    pki: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_path = pki.join("hub.pem");
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(pem_err(&cert_path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(&cert_path))?;
    let key_path = pki.join("hub.key");
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(pem_err(&key_path))?;
    Ok((chain, key))
}

/// The enrolment endpoint's configuration: TLS 1.3 with the hub certificate, no client
/// certificate (a new device has none: its claim token is the credential), ALPN
/// `tandem-enrol/1`, no 0-RTT (an enrolment is not replayable).
pub fn enrol_config(pki: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let (chain, key) = hub_identity(pki)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    cfg.alpn_protocols = vec![tandem_shared::wire::ENROL_ALPN.to_vec()];
    Ok(cfg)
}

/// The device name a verified client certificate carries (its first DNS subject name, which
/// `tandem-hub device add` sets to the device name). Never taken from a payload. An operator
/// or subscriber certificate names no device ([`crate::pki::role`]): QUIC and MQTT carry device
/// traffic only.
pub fn device_identity(chain: &[CertificateDer<'_>]) -> Option<String> {
    match crate::pki::role::cert_role(chain)? {
        crate::pki::role::CertRole::Device(name) => Some(name),
        crate::pki::role::CertRole::Operator(_) | crate::pki::role::CertRole::Subscriber(_) => None,
    }
}
