//! HTTPS with client certificates for the HTTP API: a listener for `axum::serve` that completes
//! each TLS handshake on its own task (a slow or hostile client never holds up the others, and
//! a handshake gets [`HANDSHAKE_TIMEOUT`]) and hands over only the connections whose client
//! certificate chains to the hub CA and is not revoked (`ingress::tls::https_config`).
//! Refused handshakes are logged with their cause.
//!
//! Backpressure: finished handshakes wait in a bounded channel ([`ACCEPTED_BACKLOG`]); when it
//! is full, handshake tasks wait for the server to take their connection.

use crate::ingress::tls::device_identity;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections handshaken and waiting for the server to take them.
pub const ACCEPTED_BACKLOG: usize = 64;

type Accepted = (TlsStream<TcpStream>, SocketAddr);

/// A TCP listener whose connections come out as verified TLS streams.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<Accepted>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with a server configuration (from within a Tokio runtime).
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
        tokio::spawn(accept_loop(tcp, TlsAcceptor::from(Arc::new(config)), tx));
        Ok(Self { local, rx })
    }
}

/// Accepts TCP connections until the listener is dropped, a handshake task for each.
async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, tx: mpsc::Sender<Accepted>) {
    loop {
        let (stream, peer) = tokio::select! {
            () = tx.closed() => return,
            r = tcp.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let identity = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(device_identity);
                    tracing::debug!(%peer, identity = identity.as_deref().unwrap_or("?"), "HTTPS client accepted");
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "HTTPS handshake refused"),
                Err(_) => tracing::info!(%peer, "HTTPS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
