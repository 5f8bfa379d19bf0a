//! The serve loop of both daemons' HTTP listeners (instead of `axum::serve`, which has no
//! header timeout, idle timeout or connection cap): accepts TCP connections, runs each one's
//! handshake (TLS on the hub's HTTPS listener) and HTTP/1.1 on its own task, and bounds what
//! a client can hold:
//!
//! - at most [`ConnLimits::max_connections`] connections open (handshakes included); at the cap
//!   a new connection closes the oldest idle one (no request in progress: a half-open or slow
//!   client), or is closed at once when every connection is busy;
//! - a connection with no request in progress closes after `idle_timeout` (from its accept or
//!   its last response), and one whose request head began but did not complete closes after
//!   `header_read_timeout`; a request body must arrive within `body_timeout` of its head
//!   (`TimedBody`: 400, the connection closes).
//!
//! Each refusal is counted in `tandem_http_refused_total{reason}` and logged, rate-limited.
//! On stop, the loop stops accepting, lets every connection finish its request in progress
//! (HTTP/1.1 graceful shutdown) and returns when all are closed.

use super::body::TimedBody;
use super::conn::{Admit, ConnLimits, ConnState, Expiry, Refusals, Table, Tracked};
use crate::metrics::Metrics;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower_service::Service;

/// How a listener turns an accepted TCP connection into the stream HTTP runs on, and what it
/// learnt of the peer (inserted in every request as `ConnectInfo<Info>`).
pub trait Handshake: Send + Sync + 'static {
    /// The stream HTTP runs on.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// What requests learn of the connection.
    type Info: Clone + Send + Sync + 'static;

    /// Completes the handshake, or `None` (refused or failed: the implementation logs why).
    fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Io, Self::Info)>> + Send;
}

/// Plain TCP: no handshake; requests carry the peer's address.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainTcp;

impl Handshake for PlainTcp {
    type Io = TcpStream;
    type Info = SocketAddr;

    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<(TcpStream, SocketAddr)> {
        Some((tcp, peer))
    }
}

/// Pause after a failed accept (out of descriptors and the like) instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

struct Shared<H> {
    handshake: H,
    app: Router,
    limits: ConnLimits,
    table: Table,
    refusals: Arc<Refusals>,
    metrics: Arc<Metrics>,
    origin: Instant,
}

/// Serves `app` on `tcp` until `stop` completes, then lets in-flight requests finish and
/// returns when every connection is closed.
pub async fn serve<H: Handshake>(
    tcp: TcpListener,
    handshake: H,
    app: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send,
) {
    let shared = Arc::new(Shared {
        handshake,
        app,
        table: Table::new(limits.max_connections),
        refusals: Arc::new(Refusals::new(metrics.clone(), limits.section)),
        limits,
        metrics,
        origin: Instant::now(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender: when all are dropped, every connection is closed.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            r = tcp.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    shared.refusals.refuse("accept_error", &format!("accept failed: {e}"));
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let state = Arc::new(ConnState::new(shared.origin));
        let id = match shared.table.admit(state.clone()) {
            Admit::Open(id) => id,
            Admit::Evicted(id) => {
                shared.refusals.refuse(
                    "evicted",
                    "at the connection cap: the oldest idle connection was closed",
                );
                id
            }
            Admit::Full => {
                drop(stream);
                shared.refusals.refuse(
                    "connection_cap",
                    &format!(
                        "{peer}: at the cap of {} connections, all busy",
                        shared.limits.max_connections
                    ),
                );
                continue;
            }
        };
        let (shared, stop_rx, done) = (shared.clone(), stop_rx.clone(), done_tx.clone());
        tokio::spawn(async move {
            shared.metrics.http_connections(1);
            connection(&shared, stream, peer, &state, stop_rx).await;
            shared.table.remove(id);
            shared.metrics.http_connections(-1);
            drop(done);
        });
    }
    drop(tcp);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

/// Completes when the listener stops.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // The listener is gone: stopping too.
    }
}

/// One connection: its handshake, then HTTP/1.1 until the peer closes, a timeout or an
/// eviction closes it, or the listener stops.
async fn connection<H: Handshake>(
    shared: &Shared<H>,
    tcp: TcpStream,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = &shared.limits;
    let shook = tokio::select! {
        r = shared.handshake.handshake(tcp, peer) => r,
        () = tokio::time::sleep(limits.idle_timeout) => {
            shared.refusals.refuse("idle_timeout", &format!("{peer}: no handshake within {} ms ({}.idle_timeout_ms)", limits.idle_timeout.as_millis(), limits.section));
            return;
        }
        () = state.close.notified() => return,
        () = stopped(&mut stop) => return,
    };
    let Some((io, info)) = shook else { return };
    let app = shared.app.clone();
    let conn_state = state.clone();
    let (body_timeout, refusals) = (limits.body_timeout, shared.refusals.clone());
    let section = limits.section;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = conn_state.begin();
        let mut app = app.clone();
        let refusals = refusals.clone();
        let mut req = req.map(|b| Body::new(TimedBody::new(b, body_timeout, refusals, section)));
        req.extensions_mut().insert(ConnectInfo(info.clone()));
        async move {
            let resp = app.call(req).await;
            drop(busy);
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(Tracked::new(io, state.clone())), service);
    tokio::pin!(conn);
    loop {
        let (at, expiry) = state.deadline(limits);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(at.into()) => {
                // Look again: a request may have begun or ended since the deadline was taken.
                let (now_at, now_expiry) = state.deadline(limits);
                if expiry.is_some() && now_expiry == expiry && now_at <= Instant::now() {
                    let (reason, key, ms) = match expiry {
                        Some(Expiry::Header) => ("header_timeout", "header_read_timeout_ms", limits.header_read_timeout.as_millis()),
                        _ => ("idle_timeout", "idle_timeout_ms", limits.idle_timeout.as_millis()),
                    };
                    shared.refusals.refuse(reason, &format!("{peer}: closed after {ms} ms ({}.{key})", limits.section));
                    return;
                }
            }
            () = state.close.notified() => return,
            () = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                if let Err(e) = conn.as_mut().await {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error while stopping");
                }
                return;
            }
        }
    }
}
