//! The hub's QUIC endpoint (quinn + rustls, mutual TLS).
//!
//! A client without a certificate from the hub's CA, or with an expired or revoked one, is
//! refused during the handshake; the refusal is logged with its cause and counted. An accepted
//! connection's device identity comes from its certificate. Each bidirectional stream carries
//! one request frame and gets one answer frame (inference through [`crate::serving`]). A peer that is not speaking the protocol (bad
//! magic, unknown version) has its connection closed with application error 0x1; a frame over
//! the size limit gets its stream stopped with 0x2; a payload that does not decode gets an
//! `Error` answer and the connection lives on.
//!
//! Store-and-forward: a stream that starts with a `Deliver` frame carries a batch of them (at
//! most [`super::MAX_DELIVERIES_PER_STREAM`]); the hub stores each record in the feedback store
//! as its frame arrives (deduplicated by device, epoch and seq; within the device's quota) and,
//! once they are durable, answers one `Ack` frame per record, in order (`super::deliver`).
//!
//! Limits ([`super::limits`]): handshakes and connections are admitted within caps (refusals
//! counted), each frame's size is checked against its kind's limit and reserved from byte
//! budgets before its payload is read (`super::reader`).

use super::limits::{Admission, LimitStats, QuicLimits, Refusal};
use super::reader::{Budget, FrameReader, ReadError};
use super::tls::{self, TlsError};
use crate::feedback::Store;
use crate::serving::Serving;
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::CertificateDer;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tandem_engine::Engine;
use tandem_shared::wire::{DEFAULT_MAX_FRAME_BYTES, ErrorCode, Message, WireError, encode_to_vec};
use tokio::sync::Semaphore;

/// QUIC application error: the peer broke the protocol.
pub const CLOSE_PROTOCOL_VIOLATION: u32 = 0x1;
/// QUIC application error (stream): a frame over the size limit.
pub const STOP_FRAME_TOO_LARGE: u32 = 0x2;
/// QUIC application error: the hub is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0x3;

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// QUIC configuration.
    #[error("QUIC configuration: {0}")]
    Config(String),
    /// Binding the UDP socket.
    #[error("cannot bind QUIC on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// IO error.
        source: std::io::Error,
    },
}

/// What the endpoint has seen (for metrics, the console and tests).
#[derive(Debug, Default)]
pub struct IngressStats {
    /// Connections that completed the handshake.
    pub accepted: AtomicU64,
    /// Connections refused during the handshake.
    pub refused: AtomicU64,
    /// Streams answered.
    pub streams: AtomicU64,
    /// Delivered records stored (new).
    pub delivered: AtomicU64,
    /// Delivered records already stored (redeliveries), acknowledged again.
    pub redelivered: AtomicU64,
    /// The most recent refusals (`remote: cause`), newest last, at most 64.
    pub recent_refusals: Mutex<VecDeque<String>>,
    /// Identities of the most recent accepted connections, at most 64.
    pub recent_devices: Mutex<VecDeque<String>>,
    /// The limits at work ([`super::limits`]).
    pub limits: LimitStats,
}

fn push_bounded(q: &Mutex<VecDeque<String>>, s: String) {
    if let Ok(mut q) = q.lock() {
        if q.len() == 64 {
            q.pop_front();
        }
        q.push_back(s);
    }
}

/// The QUIC endpoint.
#[derive(Debug)]
pub struct QuicIngress {
    endpoint: quinn::Endpoint,
    stats: Arc<IngressStats>,
    services: Services,
    limits: QuicLimits,
}

/// What every connection shares: the limits, their admission state, the hub's byte budget.
#[derive(Debug, Clone)]
struct Shared {
    stats: Arc<IngressStats>,
    services: Services,
    limits: QuicLimits,
    admission: Arc<Admission>,
    budget: Arc<Semaphore>,
}

/// The endpoint's server configuration from a PKI folder (certificate, CA, CRL) and the
/// limits' transport settings; built again when the CRL changes.
pub fn server_config(pki: &Path, limits: &QuicLimits) -> Result<quinn::ServerConfig, IngressError> {
    let tls = tls::server_config(pki)?;
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| IngressError::Config(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport()));
    Ok(cfg)
}

/// What the streams are handled with.
#[derive(Debug, Clone, Default)]
struct Services {
    serving: Option<Arc<Serving>>,
    feedback: Option<Arc<Store>>,
    registry: Option<Arc<crate::registry::Registry>>,
    enroller: Option<Arc<crate::enrol::Enroller>>,
    /// Open connections by certificate serial (closed when it is revoked).
    live: Arc<super::live::LiveConns>,
    /// The streams being answered (shutdown waits for them).
    streams: tokio_util::task::TaskTracker,
    /// Cancelled at shutdown: connections take no new streams.
    draining: tokio_util::sync::CancellationToken,
}

impl QuicIngress {
    /// Binds the endpoint with the TLS material of a PKI folder and the default limits.
    pub fn bind(addr: SocketAddr, pki: &Path) -> Result<Self, IngressError> {
        Self::bind_with(addr, pki, QuicLimits::default())
    }

    /// Binds the endpoint with the TLS material of a PKI folder and `limits`.
    pub fn bind_with(
        addr: SocketAddr,
        pki: &Path,
        limits: QuicLimits,
    ) -> Result<Self, IngressError> {
        let cfg = server_config(pki, &limits)?;
        let endpoint = quinn::Endpoint::server(cfg, addr)
            .map_err(|source| IngressError::Bind { addr, source })?;
        Ok(Self {
            endpoint,
            stats: Arc::new(IngressStats::default()),
            services: Services::default(),
            limits,
        })
    }

    /// What a new CRL is applied to: the endpoint, its limits, its open connections.
    pub fn reload(&self) -> super::live::QuicReload {
        super::live::QuicReload {
            endpoint: self.endpoint.clone(),
            limits: self.limits,
            live: self.services.live.clone(),
        }
    }

    /// Serves inference requests with this engine (without one, every request gets
    /// `UnknownModel`).
    pub fn with_engine(mut self, engine: Arc<Engine>) -> Self {
        self.services.serving = Some(Arc::new(Serving::new(engine)));
        self
    }

    /// Stores delivered records here (without a store, a `Deliver` gets an error answer and is
    /// not acknowledged, so the agent keeps it).
    pub fn with_feedback(mut self, store: Arc<Store>) -> Self {
        self.services.feedback = Some(store);
        self
    }

    /// Serves model downloads (`BundleRequest`, `ChunkRequest`) from this registry (without
    /// one, they get `UnknownModelVersion`).
    pub fn with_registry(mut self, registry: Arc<crate::registry::Registry>) -> Self {
        self.services.registry = Some(registry);
        self
    }

    /// Answers `Renew` (a device's new certificate for a new key) with this enrolment service
    /// (without one, `Renew` gets `UnsupportedKind`).
    pub fn with_enroller(mut self, enroller: Arc<crate::enrol::Enroller>) -> Self {
        self.services.enroller = Some(enroller);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Shared statistics.
    pub fn stats(&self) -> Arc<IngressStats> {
        self.stats.clone()
    }

    /// Accepts connections until `stop` resolves, lets the streams in flight finish, then
    /// closes the endpoint ([`QuicIngress::serve`] then [`QuicIngress::close`]).
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        self.serve(stop).await;
        self.close().await;
    }

    /// Accepts connections until `stop` resolves; then refuses new connections and new
    /// streams, and returns once the streams in flight (requests, deliveries, downloads) are
    /// answered. Connections stay open until [`QuicIngress::close`].
    pub async fn serve(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let limits = self.limits;
        let shared = Shared {
            stats: self.stats.clone(),
            services: self.services.clone(),
            limits,
            admission: Arc::new(Admission::new(limits)),
            budget: Budget::hub(&limits),
        };
        loop {
            tokio::select! {
                () = &mut stop => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    match shared.admission.admit(&shared.stats) {
                        Ok(held) => {
                            let shared = shared.clone();
                            tokio::spawn(async move { handle_connection(incoming, held, shared).await });
                        }
                        Err(why) => {
                            let cap = match why {
                                Refusal::Connections => "quic.limits.max_connections",
                                Refusal::Handshakes => "quic.limits.max_handshakes",
                            };
                            tracing::debug!(remote = %incoming.remote_address(), cap, "connection refused at a cap: the device retries");
                            incoming.refuse();
                        }
                    }
                }
            }
        }
        self.endpoint.set_server_config(None);
        self.services.draining.cancel();
        self.services.streams.close();
        self.services.streams.wait().await;
    }

    /// Closes every connection (code `CLOSE_SHUTDOWN`: devices reconnect with backoff) and
    /// waits until the endpoint is idle.
    pub async fn close(&self) {
        self.endpoint.close(
            quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
            b"hub shutting down",
        );
        self.endpoint.wait_idle().await;
    }
}

async fn handle_connection(
    incoming: quinn::Incoming,
    (_connection, handshake): (super::limits::Held, super::limits::Held),
    shared: Shared,
) {
    let Shared {
        stats, services, ..
    } = shared.clone();
    let remote = incoming.remote_address();
    let patience = std::time::Duration::from_millis(shared.limits.handshake_timeout_ms);
    // A handshake that does not finish in time is dropped (quinn closes it) and its place freed.
    let handshake_done = match tokio::time::timeout(patience, incoming.into_future()).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "handshake not completed within quic.limits.handshake_timeout_ms ({} ms)",
            patience.as_millis()
        )),
    };
    drop(handshake);
    let conn = match handshake_done {
        Ok(c) => c,
        Err(e) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = %remote, cause = %e, "QUIC connection refused during the handshake");
            push_bounded(&stats.recent_refusals, format!("{remote}: {e}"));
            return;
        }
    };
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
    let identity = chain.as_ref().and_then(|chain| {
        let serial = super::live::serial(chain.first()?)?;
        Some((tls::device_identity(chain)?, serial))
    });
    let Some((device, serial)) = identity else {
        // Unreachable with a verifier that requires certificates; refuse rather than guess.
        stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(remote = %remote, "QUIC connection without a device name in its certificate: closed");
        conn.close(
            quinn::VarInt::from_u32(CLOSE_PROTOCOL_VIOLATION),
            b"certificate names no device",
        );
        return;
    };
    // Registered while this handler runs: a revocation closes it (`revocation`).
    let _registered = services.live.register(&conn, serial, &device);
    // A renewed certificate in use: the older ones of this device are superseded (enrol).
    if let Some(e) = &services.enroller {
        e.connected(&device, serial);
    }
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    push_bounded(&stats.recent_devices, device.clone());
    tracing::info!(device = %device, remote = %remote, "device connected");
    let id = shared.admission.register(&device, &conn, &stats.limits);
    let budget = Budget::connection(&shared.limits, shared.budget.clone());
    loop {
        let accepted = tokio::select! {
            () = services.draining.cancelled() => {
                shared.admission.forget(&device, id);
                return;
            }
            a = conn.accept_bi() => a,
        };
        match accepted {
            Ok((send, recv)) => {
                let (conn, stats, device, services) = (
                    conn.clone(),
                    stats.clone(),
                    device.clone(),
                    services.clone(),
                );
                let reader = FrameReader::new(recv, budget.clone(), &shared.limits);
                let streams = services.streams.clone();
                streams.spawn(async move {
                    handle_stream(&conn, &device, send, reader, &stats, &services).await
                });
            }
            Err(e) => {
                tracing::info!(device = %device, reason = %e, "device disconnected");
                shared.admission.forget(&device, id);
                return;
            }
        }
    }
}

async fn answer(send: &mut quinn::SendStream, msg: &Message) {
    if let Ok(bytes) = encode_to_vec(msg, DEFAULT_MAX_FRAME_BYTES) {
        let _ = send.write_all(&bytes).await;
    }
    let _ = send.finish();
}

async fn handle_stream(
    conn: &quinn::Connection,
    device: &str,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    stats: &IngressStats,
    services: &Services,
) {
    let serving = services.serving.as_deref();
    let msg = match reader.next().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => return,
        Err(ReadError::Wire(e)) => Err(e),
        Err(e @ ReadError::Slow { .. }) => {
            stats.limits.frames_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %device, error = %e, "frame too slow: stream reset");
            let _ = reader
                .recv()
                .stop(quinn::VarInt::from_u32(STOP_FRAME_TOO_LARGE));
            let _ = send.reset(quinn::VarInt::from_u32(STOP_FRAME_TOO_LARGE));
            return;
        }
        Err(ReadError::Link(e)) => {
            tracing::debug!(device = %device, error = %e, "stream read failed");
            return;
        }
    };
    stats.streams.fetch_add(1, Ordering::Relaxed);
    match msg {
        Ok(Message::Ping { nonce }) => answer(&mut send, &Message::Pong { nonce }).await,
        Ok(first) if crate::registry::transfer::is_download(&first) => match &services.registry {
            Some(r) => crate::registry::transfer::serve(r, first, &mut send).await,
            None => {
                let refusal = Message::Error {
                    request_id: 0,
                    code: ErrorCode::UnknownModelVersion,
                    message: "this hub has no model registry".into(),
                };
                answer(&mut send, &refusal).await;
            }
        },
        Ok(Message::Deliver {
            epoch,
            seq,
            payload,
        }) => {
            let first = (epoch, seq, payload);
            let feedback = services.feedback.clone();
            super::deliver::serve(device, first, reader, send, stats, feedback).await;
        }
        Ok(m @ (Message::InferRequest { .. } | Message::PredictRequest { .. })) => {
            let reply = match (serving, crate::serving::Request::from_message(m)) {
                (Some(sv), Some(req)) => sv.handle(device, req).await,
                (None, Some(req)) => Message::Error {
                    request_id: req.request_id,
                    code: ErrorCode::UnknownModel,
                    message: format!("model `{}`: this hub serves no models", req.model),
                },
                (_, None) => Message::Error {
                    request_id: 0,
                    code: ErrorCode::Internal,
                    message: "an inference request was lost on its way".into(),
                },
            };
            answer(&mut send, &reply).await;
        }
        Ok(Message::Renew { csr }) if services.enroller.is_some() => {
            if let Some(e) = &services.enroller {
                let reply = crate::enrol::endpoint::answer_renew(e, device, csr).await;
                answer(&mut send, &reply).await;
            }
        }
        Ok(other) => {
            let message = format!("unexpected {:?} frame from a device", other.kind());
            answer(
                &mut send,
                &Message::Error {
                    request_id: 0,
                    code: ErrorCode::UnsupportedKind,
                    message,
                },
            )
            .await;
        }
        Err(e @ WireError::FrameTooLarge { .. }) => {
            stats.limits.frames_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %device, error = %e, "frame over the limit: stream stopped");
            let _ = reader
                .recv()
                .stop(quinn::VarInt::from_u32(STOP_FRAME_TOO_LARGE));
            let _ = send.reset(quinn::VarInt::from_u32(STOP_FRAME_TOO_LARGE));
        }
        Err(e) if e.is_framing() && !matches!(e, WireError::IncompleteFrame { .. }) => {
            tracing::warn!(device = %device, error = %e, "peer is not speaking tandem/1: connection closed");
            conn.close(
                quinn::VarInt::from_u32(CLOSE_PROTOCOL_VIOLATION),
                e.to_string().as_bytes(),
            );
        }
        Err(e) => {
            tracing::warn!(device = %device, error = %e, "malformed frame");
            answer(
                &mut send,
                &Message::Error {
                    request_id: 0,
                    code: e.answer_code(),
                    message: e.to_string(),
                },
            )
            .await;
        }
    }
}
