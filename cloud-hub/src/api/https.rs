//! HTTPS with client certificates for the HTTP API: the TLS handshake of each connection the
//! serve loop (`tandem_engine::http::serve`) accepts, on that connection's own task (a slow or
//! hostile client never holds up the others, counts against `http.max_connections` while it
//! shakes hands, and gets [`HANDSHAKE_TIMEOUT`]), handing over only the connections whose
//! client certificate chains to the hub CA and is not revoked (`ingress::tls::https_config`).
//! Refused handshakes are logged with their cause.

use crate::ingress::tls::device_identity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tandem_engine::http::serve::Handshake;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS handshake of the HTTPS listener.
#[derive(Clone)]
pub struct TlsHandshake {
    acceptor: TlsAcceptor,
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
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }
}

impl Handshake for TlsHandshake {
    type Io = TlsStream<TcpStream>;
    type Info = SocketAddr;

    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(device_identity);
                tracing::debug!(%peer, identity = identity.as_deref().unwrap_or("?"), "HTTPS client accepted");
                Some((tls, peer))
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
