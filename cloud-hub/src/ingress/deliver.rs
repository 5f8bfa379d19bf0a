//! A delivery stream (flow 3): `Deliver` frames, each stored in the feedback store as it
//! arrives ([`crate::feedback::Store::put`]; the reader holds one frame at a time), then, once
//! the stream ends, one commit (durable) and one `Ack` per record in order.
//!
//! Refusals, each after the `Ack`s of the records stored (and committed) before it:
//! - the device is over its quota: `Busy { request_id: 0, retry_after_ms }` (the agent keeps
//!   the rest and retries later), and the stream is stopped;
//! - more than [`MAX_DELIVERIES_PER_STREAM`] frames, another kind, a bad frame: `Error
//!   { code: BadRequest }`;
//! - the store failed: `Error { code: Internal }`, nothing more acknowledged.

use super::quic::IngressStats;
use super::reader::{FrameReader, ReadError};
use crate::feedback::{FeedbackError, Ingested, Store};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tandem_shared::wire::{DEFAULT_MAX_FRAME_BYTES, ErrorCode, Message, encode_to_vec};

/// Most `Deliver` frames one stream may carry.
pub const MAX_DELIVERIES_PER_STREAM: usize = 1024;

/// QUIC application error (stream): the hub stopped reading a refused delivery stream.
pub const STOP_REFUSED: u32 = 0x5;

/// Bytes of new telemetry kept for the fleet state before a commit hands it on.
const TELEMETRY_BYTES_BEFORE_COMMIT: usize = 1 << 20;

/// How a delivery stream ended.
enum End {
    /// The device finished the stream.
    Finished,
    /// Refused with this answer (after the acks).
    Refused(Message),
    /// Nothing more can be answered (the link failed).
    Gone,
}

fn bad_request(message: String) -> Message {
    Message::Error {
        request_id: 0,
        code: ErrorCode::BadRequest,
        message,
    }
}

/// Serves a stream whose first frame was `Deliver { epoch, seq, payload }`.
pub(super) async fn serve(
    device: &str,
    first: (u64, u64, Vec<u8>),
    mut reader: FrameReader,
    mut send: quinn::SendStream,
    stats: &IngressStats,
    feedback: Option<Arc<Store>>,
) {
    let Some(store) = feedback else {
        let msg = bad_request("this hub keeps no feedback store: records not accepted".into());
        return finish(&mut send, &[], Some(msg)).await;
    };
    let mut acks: Vec<(u64, u64)> = Vec::new();
    let mut telemetry = Vec::new();
    let mut telemetry_bytes = 0usize;
    let mut next = Some(first);
    let end = loop {
        let Some((epoch, seq, payload)) = next.take() else {
            match reader.next().await {
                Ok(Some(Message::Deliver {
                    epoch,
                    seq,
                    payload,
                })) if acks.len() < MAX_DELIVERIES_PER_STREAM => {
                    next = Some((epoch, seq, payload));
                    continue;
                }
                Ok(Some(Message::Deliver { .. })) => {
                    break End::Refused(bad_request(format!(
                        "more than {MAX_DELIVERIES_PER_STREAM} deliveries on one stream"
                    )));
                }
                Ok(Some(m)) => {
                    let why = format!("a {:?} frame in a delivery stream", m.kind());
                    break End::Refused(bad_request(why));
                }
                Ok(None) => break End::Finished,
                Err(ReadError::Link(e)) => {
                    tracing::debug!(device, error = %e, "delivery stream read failed: stored records not acknowledged");
                    break End::Gone;
                }
                Err(e) => break End::Refused(bad_request(e.to_string())),
            }
        };
        let (s, dev) = (store.clone(), device.to_string());
        let put = tokio::task::spawn_blocking(move || s.put(&dev, epoch, seq, &payload)).await;
        match put {
            Ok(Ok(p)) => {
                match p.outcome {
                    Ingested::Duplicate => stats.redelivered.fetch_add(1, Ordering::Relaxed),
                    Ingested::New | Ingested::Rejected => {
                        stats.delivered.fetch_add(1, Ordering::Relaxed)
                    }
                };
                acks.push((epoch, seq));
                if let Some(v) = p.telemetry {
                    telemetry_bytes += v.to_string().len();
                    telemetry.push(v);
                }
                if telemetry_bytes > TELEMETRY_BYTES_BEFORE_COMMIT {
                    if let Err(e) = commit(&store, device, std::mem::take(&mut telemetry)).await {
                        break End::Refused(internal(device, &e));
                    }
                    telemetry_bytes = 0;
                }
            }
            Ok(Err(FeedbackError::OverQuota {
                used,
                quota,
                retry_after_ms,
                ..
            })) => {
                stats.limits.over_quota.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    device,
                    used,
                    quota,
                    retry_after_ms,
                    "device over its feedback quota: delivery refused until its window ends"
                );
                break End::Refused(Message::Busy {
                    request_id: 0,
                    retry_after_ms: u32::try_from(retry_after_ms).unwrap_or(u32::MAX),
                });
            }
            Ok(Err(e)) => {
                acks.clear();
                break End::Refused(internal(device, &e));
            }
            Err(e) => {
                tracing::error!(device, error = %e, "feedback store task failed");
                acks.clear();
                break End::Refused(Message::Error {
                    request_id: 0,
                    code: ErrorCode::Internal,
                    message: "the hub could not store the records".into(),
                });
            }
        }
    };
    if let End::Refused(m) = &end
        && !matches!(m, Message::Busy { .. })
    {
        tracing::warn!(device, answer = ?m.kind(), "delivery stream refused");
    }
    // Whatever was put is made durable before any of it is acknowledged.
    if !acks.is_empty()
        && let Err(e) = commit(&store, device, telemetry).await
    {
        return finish(&mut send, &[], Some(internal(device, &e))).await;
    }
    match end {
        End::Finished => finish(&mut send, &acks, None).await,
        End::Refused(m) => {
            let _ = reader.recv().stop(quinn::VarInt::from_u32(STOP_REFUSED));
            finish(&mut send, &acks, Some(m)).await;
        }
        End::Gone => {}
    }
}

fn internal(device: &str, e: &FeedbackError) -> Message {
    tracing::error!(device, error = %e, "feedback store failed: records not acknowledged");
    Message::Error {
        request_id: 0,
        code: ErrorCode::Internal,
        message: format!("the hub could not store the records: {e}"),
    }
}

async fn commit(
    store: &Arc<Store>,
    device: &str,
    telemetry: Vec<serde_json::Value>,
) -> Result<(), FeedbackError> {
    let (s, dev) = (store.clone(), device.to_string());
    tokio::task::spawn_blocking(move || s.commit(&dev, &telemetry))
        .await
        .map_err(|e| FeedbackError::Db {
            path: store.dir().join("index"),
            message: e.to_string(),
        })?
}

/// Writes one `Ack` per record, then `last` if any, and finishes the stream.
async fn finish(send: &mut quinn::SendStream, acks: &[(u64, u64)], last: Option<Message>) {
    let mut out = Vec::with_capacity(acks.len() * 24 + 64);
    let msgs = acks
        .iter()
        .map(|&(epoch, seq)| Message::Ack { epoch, seq })
        .chain(last);
    for m in msgs {
        if let Ok(b) = encode_to_vec(&m, DEFAULT_MAX_FRAME_BYTES) {
            out.extend_from_slice(&b);
        }
    }
    let _ = send.write_all(&out).await;
    let _ = send.finish();
}
