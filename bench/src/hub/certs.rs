//! A throw-away hub PKI in a temporary folder (the hub's own `tandem_hub::pki`), and the TLS
//! configurations both ends use: the hub's production server config (mutual TLS against the CA
//! and CRL, TLS 1.3, ALPN `tandem/1`) and a device's client config, built as the agent's
//! uplink builds it.

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_hub::pki::Pki;
use tandem_shared::wire::ALPN;

/// The PKI folder; removed on drop.
#[derive(Debug)]
pub struct BenchPki {
    pki: Pki,
    dir: PathBuf,
    devices: Vec<String>,
}

impl Drop for BenchPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl BenchPki {
    /// A CA, the hub certificate and `devices` device certificates (`dev-000`, ...).
    pub fn new(tag: &str, devices: usize) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tandem-bench-hub-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::init(&dir).with_context(|| format!("PKI in {}", dir.display()))?;
        let names: Vec<String> = (0..devices).map(|i| format!("dev-{i:03}")).collect();
        for n in &names {
            pki.add_device(n, 30)?;
        }
        Ok(Self {
            pki,
            dir,
            devices: names,
        })
    }

    /// The folder (`ca.pem`, `hub.pem`, `crl.pem`, `devices/`).
    pub fn dir(&self) -> &Path {
        self.pki.dir()
    }

    /// Device names.
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    /// Paths of a device's certificate and key.
    pub fn device_files(&self, device: &str) -> (PathBuf, PathBuf) {
        self.pki.device_files(device)
    }

    /// The hub's server configuration, as its QUIC ingress uses it.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        Ok(tandem_hub::ingress::tls::server_config(self.dir())?)
    }

    /// A device's client configuration (TLS 1.3, client certificate, ALPN `tandem/1`).
    pub fn client_config(&self, device: &str) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(self.dir().join("ca.pem"))?)?;
        let (cert, key) = self.pki.device_files(device);
        let mut cfg =
            rustls::ClientConfig::builder_with_provider(tandem_hub::ingress::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(&cert)?],
                    PrivateKeyDer::from_pem_file(&key)?,
                )?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// A QUIC client configuration for a device with this transport.
    pub fn quic_client(
        &self,
        device: &str,
        transport: Arc<quinn::TransportConfig>,
    ) -> anyhow::Result<quinn::ClientConfig> {
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(self.client_config(device)?)?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(transport);
        Ok(cfg)
    }
}
