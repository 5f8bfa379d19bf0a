//! HTTPS with client certificates for the HTTP API: the TLS handshake of each connection the
//! serve loop (`tandem_engine::http::serve`) accepts, on that connection's own task (a slow or
//! hostile client never holds up the others, counts against `http.max_connections` while it
//! shakes hands, and gets [`HANDSHAKE_TIMEOUT`]), handing over only the connections whose
//! client certificate chains to the hub CA and is not revoked (`ingress::tls::https_config`).
//! Refused handshakes are logged with their cause. A new CRL replaces the configuration
//! ([`TlsReload`]) and ends the open connections of the revoked certificates
//! (`ingress::live::Revocable`).

use super::gate::Peer;
use crate::ingress::live::{LiveConns, Revocable, serial};
use crate::pki::role::CertRole;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tandem_engine::http::serve::Handshake;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted connection: revocable by its certificate's serial.
pub type Stream = Revocable<TlsStream<TcpStream>>;

/// The server configuration new handshakes use, replaced when the CRL changes (rustls
/// verifiers cannot change: a new configuration is built and swapped in), and the open
/// connections by certificate serial.
pub struct TlsReload {
    acceptor: RwLock<TlsAcceptor>,
    live: Arc<LiveConns>,
}

impl std::fmt::Debug for TlsReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsReload")
    }
}

impl TlsReload {
    /// New handshakes use `config` from now on.
    pub fn set(&self, config: rustls::ServerConfig) {
        if let Ok(mut a) = self.acceptor.write() {
            *a = TlsAcceptor::from(Arc::new(config));
        }
    }

    /// Ends the open connections whose certificate serial is in `revoked`; returns their
    /// devices.
    pub fn close_revoked(&self, revoked: &std::collections::BTreeSet<u64>) -> Vec<String> {
        self.live.close_revoked(revoked)
    }

    fn current(&self) -> Option<TlsAcceptor> {
        self.acceptor.read().ok().map(|a| a.clone())
    }
}

/// The TLS handshake of the HTTPS listener.
#[derive(Clone)]
pub struct TlsHandshake {
    reload: Arc<TlsReload>,
}

impl std::fmt::Debug for TlsHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsHandshake")
    }
}

impl TlsHandshake {
    /// The handshake of a server configuration.
    pub fn new(config: rustls::ServerConfig) -> Self {
        Self {
            reload: Arc::new(TlsReload {
                acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
                live: Arc::default(),
            }),
        }
    }

    /// The handle that replaces the server configuration and ends revoked connections.
    pub fn reload(&self) -> Arc<TlsReload> {
        self.reload.clone()
    }
}

impl Handshake for TlsHandshake {
    type Io = Stream;
    /// The role of the client certificate, for the gate (`api::gate`).
    type Info = Peer;

    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(Stream, Peer)> {
        let acceptor = self.reload.current()?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let chain = tls.get_ref().1.peer_certificates();
                let who = Peer::of(chain);
                let cert_serial = chain.and_then(|c| serial(c.first()?));
                let identity = match who.role() {
                    Some(CertRole::Device(d)) => d.clone(),
                    Some(CertRole::Operator(o)) => format!("operator {o}"),
                    Some(CertRole::Subscriber(s)) => format!("subscriber {s}"),
                    None => "?".into(),
                };
                tracing::debug!(%peer, identity, "HTTPS client accepted");
                let Some(cert_serial) = cert_serial else {
                    tracing::info!(%peer, "HTTPS client certificate without a readable serial: closed");
                    return None;
                };
                Some((
                    Revocable::new(tls, &self.reload.live, cert_serial, &identity),
                    who,
                ))
            }
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "HTTPS handshake refused");
                None
            }
            Err(_) => {
                tracing::info!(%peer, "HTTPS handshake timed out");
                None
            }
        }
    }
}
