//! Enrolment with a claim token: QUIC to the hub's enrolment endpoint (ALPN
//! `tandem-enrol/1`), the hub verified against the CA the device holds, no client certificate
//! (the token is the credential). One `Enrol` frame out, `Issued` or `Error` back.

use super::EnrolError;
use super::keys::{check_issued, install, new_request};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tandem_shared::wire::{
    ENROL_ALPN, FrameDecoder, MAX_ENROL_FRAME_BYTES, Message, encode_to_vec,
};

/// What enrolment needs.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The enrolment endpoint, `HOST:PORT` (a DNS name or an IP).
    pub hub: String,
    /// Name the hub's certificate is checked against (default: the host of `hub`).
    pub server_name: Option<String>,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The claim token.
    pub token: String,
    /// The proposed device name (the claim's prefix goes before it).
    pub name: String,
    /// Where the key goes (created 0600).
    pub key: PathBuf,
    /// Where the certificate goes.
    pub cert: PathBuf,
    /// Longest wait for the whole exchange.
    pub timeout: Duration,
}

fn client_config(ca: &Path) -> Result<quinn::ClientConfig, EnrolError> {
    let der = CertificateDer::from_pem_file(ca)
        .map_err(|e| EnrolError::Tls(format!("{}: {e}", ca.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(der)
        .map_err(|e| EnrolError::Tls(format!("{}: {e}", ca.display())))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| EnrolError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![ENROL_ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| EnrolError::Tls(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// Enrols: generates the key here, sends the request with the token, checks and installs the
/// certificate the hub issued. Returns the device name the hub gave.
pub async fn enrol(e: &Enrolment) -> Result<String, EnrolError> {
    let unreachable = |message: String| EnrolError::Unreachable {
        addr: e.hub.clone(),
        message,
    };
    let client = client_config(&e.ca)?;
    let (key, csr) = new_request(&e.name)?;
    let request = encode_to_vec(
        &Message::Enrol {
            token: e.token.trim().to_string(),
            name: e.name.clone(),
            csr,
        },
        MAX_ENROL_FRAME_BYTES,
    )
    .map_err(|err| EnrolError::Protocol(err.to_string()))?;
    let server_name = e.server_name.clone().unwrap_or_else(|| {
        e.hub
            .rsplit_once(':')
            .map_or(e.hub.as_str(), |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']')
            .to_string()
    });
    let exchange = async {
        let mut last = String::from("the name resolves to no address");
        for addr in tokio::net::lookup_host(&e.hub)
            .await
            .map_err(|err| unreachable(err.to_string()))?
        {
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let endpoint = quinn::Endpoint::client(bind.parse().expect("a literal socket address"))
                .map_err(|err| unreachable(err.to_string()))?;
            let conn = match endpoint.connect_with(client.clone(), addr, &server_name) {
                Ok(c) => match c.await {
                    Ok(c) => c,
                    Err(err) => {
                        last = err.to_string();
                        continue;
                    }
                },
                Err(err) => {
                    last = err.to_string();
                    continue;
                }
            };
            let answer = async {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|x| x.to_string())?;
                send.write_all(&request).await.map_err(|x| x.to_string())?;
                send.finish().map_err(|x| x.to_string())?;
                recv.read_to_end(MAX_ENROL_FRAME_BYTES + 64)
                    .await
                    .map_err(|x| x.to_string())
            }
            .await;
            conn.close(quinn::VarInt::from_u32(0), b"done");
            endpoint.wait_idle().await;
            return answer.map_err(unreachable);
        }
        Err(unreachable(last))
    };
    let bytes = tokio::time::timeout(e.timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} ms", e.timeout.as_millis())))??;
    let mut d = FrameDecoder::new(MAX_ENROL_FRAME_BYTES);
    d.feed(&bytes);
    match d.next_message() {
        Ok(Some(Message::Issued { name, cert })) => {
            let pem = check_issued(&cert, &key, &name)?;
            install(&e.key, &e.cert, &key, &pem)?;
            Ok(name)
        }
        Ok(Some(Message::Error { code, message, .. })) => {
            Err(EnrolError::Refused { code, message })
        }
        Ok(other) => Err(EnrolError::Protocol(format!(
            "{:?}",
            other.map(|m| m.kind())
        ))),
        Err(err) => Err(EnrolError::Protocol(err.to_string())),
    }
}

/// Whether the daemon enrols at start: `hub.enrol_address` set, the claim token file present,
/// and no certificate, or an expired one (it cannot renew: a new claim is the way back).
pub fn needs_enrolment(cfg: &crate::config::Config) -> bool {
    if cfg.hub.enrol_address.is_empty() {
        return false;
    }
    let cert = cfg.resolve(&cfg.hub.cert);
    let lapsed = !cert.exists()
        || super::keys::validity(&cert).is_ok_and(|v| v.not_after <= std::time::SystemTime::now());
    let token = cfg.resolve(&cfg.hub.claim_token_file);
    if lapsed && !token.is_file() {
        tracing::warn!(token = %token.display(), "no valid certificate and no claim token file: not enrolling");
    }
    lapsed && token.is_file()
}

/// Enrols at daemon start (`hub.enrol_address`, `hub.claim_token_file`, `hub.device_name`):
/// the key and certificate go to `hub.key` and `hub.cert`.
pub async fn enrol_at_start(cfg: &crate::config::Config) -> Result<String, EnrolError> {
    let token_file = cfg.resolve(&cfg.hub.claim_token_file);
    let token = std::fs::read_to_string(&token_file).map_err(|source| EnrolError::Io {
        path: token_file.clone(),
        source,
    })?;
    let e = Enrolment {
        hub: cfg.hub.enrol_address.clone(),
        server_name: (!cfg.hub.server_name.is_empty()).then(|| cfg.hub.server_name.clone()),
        ca: cfg.resolve(&cfg.hub.ca),
        token,
        name: cfg.hub.device_name.clone(),
        key: cfg.resolve(&cfg.hub.key),
        cert: cfg.resolve(&cfg.hub.cert),
        timeout: Duration::from_secs(30),
    };
    tracing::info!(hub = %e.hub, name = %e.name, "no valid certificate: enrolling with the claim token");
    let name = enrol(&e).await?;
    tracing::info!(device = %name, cert = %e.cert.display(), "enrolled");
    Ok(name)
}
