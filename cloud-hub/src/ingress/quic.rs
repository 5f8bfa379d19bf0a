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
//! most [`MAX_DELIVERIES_PER_STREAM`]); the hub stores the batch in the feedback store
//! (deduplicated by device, epoch and seq; durable before it answers) and answers one `Ack`
//! frame per record, in order.

use super::tls::{self, TlsError};
use crate::feedback::{Ingested, Store};
use crate::serving::Serving;
use quinn::crypto::rustls::QuicServerConfig;
use rustls_pki_types::CertificateDer;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tandem_engine::Engine;
use tandem_shared::wire::{
    DEFAULT_MAX_FRAME_BYTES, ErrorCode, FrameDecoder, Message, WireError, encode_to_vec,
};

/// QUIC application error: the peer broke the protocol.
pub const CLOSE_PROTOCOL_VIOLATION: u32 = 0x1;
/// QUIC application error (stream): a frame over the size limit.
pub const STOP_FRAME_TOO_LARGE: u32 = 0x2;
/// QUIC application error: the hub is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0x3;
/// Most `Deliver` frames one stream may carry.
pub const MAX_DELIVERIES_PER_STREAM: usize = 1024;

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
}

/// What the streams are handled with.
#[derive(Debug, Clone, Default)]
struct Services {
    serving: Option<Arc<Serving>>,
    feedback: Option<Arc<Store>>,
    registry: Option<Arc<crate::registry::Registry>>,
}

impl QuicIngress {
    /// Binds the endpoint with the TLS material of a PKI folder.
    pub fn bind(addr: SocketAddr, pki: &Path) -> Result<Self, IngressError> {
        let tls = tls::server_config(pki)?;
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| IngressError::Config(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(256u32.into());
        transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            30_000,
        ))));
        cfg.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(cfg, addr)
            .map_err(|source| IngressError::Bind { addr, source })?;
        Ok(Self {
            endpoint,
            stats: Arc::new(IngressStats::default()),
            services: Services::default(),
        })
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

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Shared statistics.
    pub fn stats(&self) -> Arc<IngressStats> {
        self.stats.clone()
    }

    /// Accepts connections until `stop` resolves, then closes the endpoint.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let (stats, services) = (self.stats.clone(), self.services.clone());
                    tokio::spawn(async move { handle_connection(incoming, stats, services).await });
                }
            }
        }
        self.endpoint.close(
            quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
            b"hub shutting down",
        );
        self.endpoint.wait_idle().await;
    }
}

async fn handle_connection(
    incoming: quinn::Incoming,
    stats: Arc<IngressStats>,
    services: Services,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = %remote, cause = %e, "QUIC connection refused during the handshake");
            push_bounded(&stats.recent_refusals, format!("{remote}: {e}"));
            return;
        }
    };
    let identity = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| tls::device_identity(&chain));
    let Some(device) = identity else {
        // Unreachable with a verifier that requires certificates; refuse rather than guess.
        stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(remote = %remote, "QUIC connection without a device name in its certificate: closed");
        conn.close(
            quinn::VarInt::from_u32(CLOSE_PROTOCOL_VIOLATION),
            b"certificate names no device",
        );
        return;
    };
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    push_bounded(&stats.recent_devices, device.clone());
    tracing::info!(device = %device, remote = %remote, "device connected");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let (conn, stats, device, services) = (
                    conn.clone(),
                    stats.clone(),
                    device.clone(),
                    services.clone(),
                );
                tokio::spawn(async move {
                    handle_stream(&conn, &device, send, recv, &stats, &services).await
                });
            }
            Err(e) => {
                tracing::info!(device = %device, reason = %e, "device disconnected");
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
    mut recv: quinn::RecvStream,
    stats: &IngressStats,
    services: &Services,
) {
    let serving = services.serving.as_deref();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    let msg = loop {
        match decoder.next_message() {
            Ok(Some(m)) => break Ok(m),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.feed(&buf[..n]),
            Ok(None) => match decoder.finish() {
                Ok(()) => return,
                Err(e) => break Err(e),
            },
            Err(e) => {
                tracing::debug!(device = %device, error = %e, "stream read failed");
                return;
            }
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
            deliveries(device, first, decoder, recv, send, stats, services).await;
        }
        Ok(Message::InferRequest {
            request_id,
            model,
            model_version,
            deadline_ms,
            input,
        }) => {
            let reply = match serving {
                Some(sv) => {
                    sv.handle(device, request_id, model, model_version, deadline_ms, input)
                        .await
                }
                None => Message::Error {
                    request_id,
                    code: ErrorCode::UnknownModel,
                    message: format!("model `{model}`: this hub serves no models"),
                },
            };
            answer(&mut send, &reply).await;
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
            tracing::warn!(device = %device, error = %e, "frame over the limit: stream stopped");
            let _ = recv.stop(quinn::VarInt::from_u32(STOP_FRAME_TOO_LARGE));
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
                    code: ErrorCode::BadRequest,
                    message: e.to_string(),
                },
            )
            .await;
        }
    }
}

/// The rest of a delivery stream: every `Deliver` frame after the first, stored as one batch,
/// then one `Ack` per record.
async fn deliveries(
    device: &str,
    first: (u64, u64, Vec<u8>),
    mut decoder: FrameDecoder,
    mut recv: quinn::RecvStream,
    mut send: quinn::SendStream,
    stats: &IngressStats,
    services: &Services,
) {
    let refuse = |message: String| Message::Error {
        request_id: 0,
        code: ErrorCode::BadRequest,
        message,
    };
    let Some(store) = services.feedback.clone() else {
        let msg = refuse("this hub keeps no feedback store: records not accepted".into());
        return answer(&mut send, &msg).await;
    };
    let mut batch = vec![first];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decoder.next_message() {
            Ok(Some(Message::Deliver {
                epoch,
                seq,
                payload,
            })) if batch.len() < MAX_DELIVERIES_PER_STREAM => {
                batch.push((epoch, seq, payload));
                continue;
            }
            Ok(Some(other)) => {
                let why = match other {
                    Message::Deliver { .. } => {
                        format!("more than {MAX_DELIVERIES_PER_STREAM} deliveries on one stream")
                    }
                    m => format!("a {:?} frame in a delivery stream", m.kind()),
                };
                tracing::warn!(device, why = %why, "delivery stream refused");
                return answer(&mut send, &refuse(why)).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(device, error = %e, "delivery stream refused");
                return answer(&mut send, &refuse(e.to_string())).await;
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.feed(&buf[..n]),
            Ok(None) => match decoder.finish() {
                Ok(()) => break,
                Err(e) => return answer(&mut send, &refuse(e.to_string())).await,
            },
            Err(e) => {
                tracing::debug!(device, error = %e, "delivery stream read failed: nothing stored");
                return;
            }
        }
    }
    let dev = device.to_string();
    let keys: Vec<(u64, u64)> = batch.iter().map(|(e, s, _)| (*e, *s)).collect();
    let stored = tokio::task::spawn_blocking(move || {
        let refs: Vec<(u64, u64, &[u8])> = batch
            .iter()
            .map(|(e, s, p)| (*e, *s, p.as_slice()))
            .collect();
        store.ingest(&dev, &refs)
    })
    .await;
    let outcomes = match stored {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::error!(device, error = %e, "feedback store failed: records not acknowledged");
            let msg = Message::Error {
                request_id: 0,
                code: ErrorCode::Internal,
                message: format!("the hub could not store the records: {e}"),
            };
            return answer(&mut send, &msg).await;
        }
        Err(e) => {
            tracing::error!(device, error = %e, "feedback store task failed");
            return;
        }
    };
    let mut out = Vec::new();
    for ((epoch, seq), o) in keys.into_iter().zip(outcomes) {
        match o {
            Ingested::Duplicate => stats.redelivered.fetch_add(1, Ordering::Relaxed),
            Ingested::New | Ingested::Rejected => stats.delivered.fetch_add(1, Ordering::Relaxed),
        };
        if let Ok(b) = encode_to_vec(&Message::Ack { epoch, seq }, DEFAULT_MAX_FRAME_BYTES) {
            out.extend_from_slice(&b);
        }
    }
    let _ = send.write_all(&out).await;
    let _ = send.finish();
}
