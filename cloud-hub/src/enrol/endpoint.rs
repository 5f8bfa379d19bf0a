//! The enrolment endpoint (QUIC, ALPN `tandem-enrol/1`, TLS 1.3 with server authentication
//! only): a new device, holding the CA certificate and a claim token, verifies the hub, sends
//! one `Enrol` frame on one stream and gets `Issued` or `Error` (`Forbidden` for a token
//! unknown, used, expired or revoked; `BadRequest` for a bad request or a taken name). Also
//! the answer to `Renew` on the device ingress (mutual TLS: the name is the connection's).
//!
//! Bounds: at most `enrol.max_connections` connections (more refused at once), one stream
//! per connection, a frame of at most [`MAX_ENROL_FRAME_BYTES`], 10 s to send it.

use super::service::{EnrolError, Enroller};
use crate::ingress::quic::IngressError;
use crate::ingress::tls;
use quinn::crypto::rustls::QuicServerConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tandem_shared::wire::{ErrorCode, FrameDecoder, MAX_ENROL_FRAME_BYTES, Message, encode_to_vec};

/// Longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint, bound.
#[derive(Debug)]
pub struct EnrolEndpoint {
    endpoint: quinn::Endpoint,
    enroller: Arc<Enroller>,
    max_connections: usize,
}

fn now_ms() -> u64 {
    crate::fleet::link::now_ms()
}

/// The wire answer to an enrolment or renewal outcome.
fn answer(outcome: Result<super::service::Issued, EnrolError>) -> Message {
    match outcome {
        Ok(i) => Message::Issued {
            name: i.name,
            cert: i.cert,
        },
        Err(e) => Message::Error {
            request_id: 0,
            code: e.code(),
            message: e.to_string(),
        },
    }
}

fn internal(e: tokio::task::JoinError) -> Message {
    Message::Error {
        request_id: 0,
        code: ErrorCode::Internal,
        message: format!("the enrolment task failed: {e}"),
    }
}

/// The answer to `Renew { csr }` from the authenticated `device`.
pub async fn answer_renew(enroller: &Arc<Enroller>, device: &str, csr: Vec<u8>) -> Message {
    let (e, d) = (enroller.clone(), device.to_string());
    let msg = tokio::task::spawn_blocking(move || answer(e.renew(&d, &csr, now_ms())))
        .await
        .unwrap_or_else(internal);
    if let Message::Error { message, .. } = &msg {
        tracing::warn!(device = %device, reason = %message, "certificate renewal refused");
    }
    msg
}

impl EnrolEndpoint {
    /// Binds the endpoint with the hub certificate of a PKI folder.
    pub fn bind(
        addr: SocketAddr,
        pki: &Path,
        enroller: Arc<Enroller>,
        max_connections: usize,
    ) -> Result<Self, IngressError> {
        let crypto = QuicServerConfig::try_from(tls::enrol_config(pki)?)
            .map_err(|e| IngressError::Config(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(1u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
        transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            10_000,
        ))));
        cfg.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(cfg, addr)
            .map_err(|source| IngressError::Bind { addr, source })?;
        Ok(Self {
            endpoint,
            enroller,
            max_connections,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves until `stop` resolves, then closes the endpoint.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    if self.endpoint.open_connections() > self.max_connections {
                        tracing::warn!(remote = %incoming.remote_address(), limit = self.max_connections, "enrolment connection refused: too many open");
                        incoming.refuse();
                        continue;
                    }
                    let enroller = self.enroller.clone();
                    tokio::spawn(async move { serve(incoming, enroller).await });
                }
            }
        }
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"hub shutting down");
        self.endpoint.wait_idle().await;
    }
}

/// One enrolment: one stream, one request, one answer.
async fn serve(incoming: quinn::Incoming, enroller: Arc<Enroller>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(remote = %remote, cause = %e, "enrolment handshake failed");
            return;
        }
    };
    let request = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let bytes = recv
            .read_to_end(MAX_ENROL_FRAME_BYTES + tandem_shared::wire::HEADER_LEN)
            .await
            .map_err(|e| e.to_string())?;
        let mut d = FrameDecoder::new(MAX_ENROL_FRAME_BYTES);
        d.feed(&bytes);
        let msg = d.next_message().map_err(|e| e.to_string())?;
        Ok::<_, String>((send, msg))
    };
    let (mut send, msg) = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(remote = %remote, error = %e, "enrolment request unreadable");
            conn.close(quinn::VarInt::from_u32(1), b"unreadable request");
            return;
        }
        Err(_) => {
            conn.close(quinn::VarInt::from_u32(1), b"request timed out");
            return;
        }
    };
    let reply = match msg {
        Some(Message::Enrol { token, name, csr }) => {
            let e = enroller.clone();
            let proposed = name.clone();
            let msg =
                tokio::task::spawn_blocking(move || answer(e.enrol(&token, &name, &csr, now_ms())))
                    .await
                    .unwrap_or_else(internal);
            if let Message::Error { message, .. } = &msg {
                tracing::warn!(remote = %remote, name = %proposed, reason = %message, "enrolment refused");
            }
            msg
        }
        other => Message::Error {
            request_id: 0,
            code: ErrorCode::UnsupportedKind,
            message: format!(
                "the enrolment endpoint answers Enrol only, not {:?}",
                other.map(|m| m.kind())
            ),
        },
    };
    if let Ok(bytes) = encode_to_vec(&reply, MAX_ENROL_FRAME_BYTES) {
        let _ = send.write_all(&bytes).await;
    }
    let _ = send.finish();
    // Let the client read the answer and close; do not hold the slot for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
}
