//! `[hub]` in the agent config, and the QUIC client configuration built from it (TLS 1.3 only,
//! the device certificate as client identity, ALPN `tandem/1`, early data, keep-alive).

use super::UplinkError;
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tandem_shared::wire::ALPN;

/// `[hub]` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Hub QUIC address, `HOST:PORT` (a DNS name, resolved at each connect with every address
    /// tried in turn, or an IP; `[IPV6]:PORT`); empty disables offloading.
    pub address: String,
    /// Name the hub's certificate is checked against; empty (the default): the host of
    /// `address`.
    pub server_name: String,
    /// CA certificate (PEM) the hub's certificate chains to.
    pub ca: PathBuf,
    /// This device's certificate (PEM), from `tandem-hub device add`.
    pub cert: PathBuf,
    /// This device's private key (PEM).
    pub key: PathBuf,
    /// Longest wait for the hub's answer when the caller set no deadline, in milliseconds.
    pub timeout_ms: u64,
    /// Interval of QUIC keep-alive packets on an idle connection, in milliseconds.
    pub keep_alive_ms: u64,
    /// A connection with no packet from the hub for this long is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// The hub's enrolment endpoint, `HOST:PORT` (its `enrol.listen`). With `device_name` and
    /// an existing `claim_token_file`, a daemon that starts without `cert` (or with an expired
    /// one) enrols first: the key is made here (`key`, 0600) and the certificate written to
    /// `cert`. Empty (the default): off (`tandem-agent enrol` does the same by hand).
    pub enrol_address: String,
    /// A file holding a one-time claim token (`tandem-hub claim create`). Default: none.
    pub claim_token_file: PathBuf,
    /// The name this device proposes when it enrols (the claim's prefix goes before it).
    /// Default: none.
    pub device_name: String,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            server_name: String::new(),
            ca: PathBuf::from("pki/ca.pem"),
            cert: PathBuf::from("pki/device.pem"),
            key: PathBuf::from("pki/device.key"),
            timeout_ms: 2000,
            keep_alive_ms: 2000,
            idle_timeout_ms: 8000,
            enrol_address: String::new(),
            claim_token_file: PathBuf::new(),
            device_name: String::new(),
        }
    }
}

fn pem_err(p: &Path) -> impl FnOnce(rustls_pki_types::pem::Error) -> UplinkError + '_ {
    move |e| UplinkError::Setup(format!("{}: {e}", p.display()))
}

/// The quinn client configuration for `cfg`; paths resolve with `resolve`.
pub(crate) fn client_config(
    cfg: &HubConfig,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<quinn::ClientConfig, UplinkError> {
    let (ca, cert, key) = (resolve(&cfg.ca), resolve(&cfg.cert), resolve(&cfg.key));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca).map_err(pem_err(&ca))?)
        .map_err(|e| UplinkError::Setup(e.to_string()))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| UplinkError::Setup(e.to_string()))?
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_file(&cert).map_err(pem_err(&cert))?],
        PrivateKeyDer::from_pem_file(&key).map_err(pem_err(&key))?,
    )
    .map_err(|e| UplinkError::Setup(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = true;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| UplinkError::Setup(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    if cfg.keep_alive_ms == 0 || cfg.idle_timeout_ms <= cfg.keep_alive_ms {
        return Err(UplinkError::Setup(format!(
            "hub.keep_alive_ms ({}) must be above 0 and below hub.idle_timeout_ms ({})",
            cfg.keep_alive_ms, cfg.idle_timeout_ms
        )));
    }
    transport.keep_alive_interval(Some(Duration::from_millis(cfg.keep_alive_ms)));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_millis(cfg.idle_timeout_ms))
            .map_err(|e| UplinkError::Setup(format!("hub.idle_timeout_ms: {e}")))?,
    ));
    client.transport_config(Arc::new(transport));
    Ok(client)
}
