//! A hub as it was before `PredictRequest` (wire kind 0x07), for the mixed-version tests
//! (docs/wire.md, "Offload"): real QUIC with the hub's own mutual-TLS configuration
//! (`tandem_hub::ingress::tls::server_config`: ALPN `tandem/1`, device certificates from the
//! PKI's CA), frames cut and decoded with the shared sans-IO codec, and answered as that hub's
//! reader answered them: `Ping` with `Pong`; a kind it did not know (0x07 `PredictRequest`,
//! 0x08 `PredictResponse`) with `Error { request_id: 0, code: UnsupportedKind }` whose message
//! is the codec's `UnknownKind` error; an `InferRequest` with `UnknownModel` (it serves no
//! models); anything else with `UnsupportedKind`.
//!
//! It is a test peer, not a switch in the hub: nothing in a hub build can be told to refuse a
//! kind it knows.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tandem_shared::wire::{
    DEFAULT_MAX_FRAME_BYTES, ErrorCode, Frame, FrameDecoder, Message, WireError, encode_to_vec,
};

/// The kinds added after that hub's version: its codec decoded them as unknown.
const NEW_KINDS: [u8; 2] = [0x07, 0x08];

/// A running old hub on a free loopback port; closed when dropped.
pub struct OldHub {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Frames of a kind it did not know, answered `UnsupportedKind`.
    refused: AtomicU64,
    /// `Ping`s answered.
    pings: AtomicU64,
}

impl OldHub {
    /// Listens on `127.0.0.1:0` with the hub identity and CA of the PKI folder `pki`.
    pub fn start(pki: &Path) -> OldHub {
        let tls = tandem_hub::ingress::tls::server_config(pki).expect("hub TLS configuration");
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
        let endpoint = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(crypto)),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .expect("bind the old hub");
        let addr = endpoint.local_addr().expect("local addr");
        let counts = Arc::new(Counts::default());
        let (ep, c) = (endpoint.clone(), counts.clone());
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        while let Ok((send, recv)) = conn.accept_bi().await {
                            tokio::spawn(serve_stream(send, recv, c.clone()));
                        }
                    }
                });
            }
        });
        OldHub {
            addr,
            endpoint,
            counts,
        }
    }

    /// Frames answered `UnsupportedKind` because their kind is newer than this hub.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// `Ping`s answered with `Pong`.
    pub fn pings(&self) -> u64 {
        self.counts.pings.load(Ordering::Relaxed)
    }
}

impl Drop for OldHub {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
    }
}

/// One request stream: the agent writes one frame and finishes; one answer frame back.
async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, c: Arc<Counts>) {
    let Ok(bytes) = recv.read_to_end(DEFAULT_MAX_FRAME_BYTES).await else {
        return;
    };
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    decoder.feed(&bytes);
    let reply = match decoder.next_frame() {
        Ok(Some(frame)) => answer(&frame, &c),
        Ok(None) | Err(_) => return,
    };
    let frame = encode_to_vec(&reply, DEFAULT_MAX_FRAME_BYTES).expect("an answer encodes");
    let _ = send.write_all(&frame).await;
    let _ = send.finish();
    let _ = send.stopped().await;
}

fn answer(frame: &Frame, c: &Counts) -> Message {
    let decoded = if NEW_KINDS.contains(&frame.kind) {
        Err(WireError::UnknownKind(frame.kind))
    } else {
        frame.decode()
    };
    match decoded {
        Ok(Message::Ping { nonce }) => {
            c.pings.fetch_add(1, Ordering::Relaxed);
            Message::Pong { nonce }
        }
        Ok(Message::InferRequest {
            request_id, model, ..
        }) => Message::Error {
            request_id,
            code: ErrorCode::UnknownModel,
            message: format!("model `{model}`: this hub serves no models"),
        },
        Ok(other) => Message::Error {
            request_id: 0,
            code: ErrorCode::UnsupportedKind,
            message: format!("unexpected {:?} frame from a device", other.kind()),
        },
        Err(e) => {
            if matches!(e, WireError::UnknownKind(_)) {
                c.refused.fetch_add(1, Ordering::Relaxed);
            }
            Message::Error {
                request_id: 0,
                code: e.answer_code(),
                message: e.to_string(),
            }
        }
    }
}
