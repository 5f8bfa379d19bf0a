//! The delivery loop (flow 3): drains the durable queue to the hub, in the background, never
//! holding up start-up or inference.
//!
//! Each round leases a batch (highest priority first, then oldest; `DELIVER_MAX_RECORDS` /
//! `DELIVER_MAX_BYTES`), sends it as `Deliver` frames on one QUIC stream, and deletes exactly the
//! records the hub acknowledged (the hub acknowledges only what it has stored durably). Records
//! not acknowledged — the link dropped, the hub refused, the answer was cut — are released and
//! sent again later: at-least-once, and the hub deduplicates by (device, epoch, seq). While the
//! hub is unreachable the loop waits for the link (the keeper reconnects it) instead of spinning.
//! After a round that was not wholly acknowledged it waits a random time up to 200 ms, doubling
//! per failed round to 5 s (full jitter, `tandem_shared::backoff`); when the hub answered
//! `Busy` (the device's quota), the time it asked for instead (`retry_after_ms`, at most an
//! hour), plus up to half of it again at random (`backoff::after_hint`). Shutdown ends a wait.

use super::quic::Uplink;
use crate::queue::{Queue, Seq};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tandem_shared::backoff::{Backoff, after_hint};
use tandem_shared::wire::{DEFAULT_MAX_FRAME_BYTES, Message, encode_to_vec};
use tokio_util::sync::CancellationToken;

/// Most records per delivery stream.
pub const DELIVER_MAX_RECORDS: usize = 256;
/// Most payload bytes per delivery stream.
pub const DELIVER_MAX_BYTES: usize = 4 << 20;
/// Longest wait after the first failed round; it doubles per failed round.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest wait after failed rounds.
const RETRY_CAP: Duration = Duration::from_secs(5);
/// Longest wait a hub's `Busy` hint is taken for (its quota windows are an hour by default).
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Delivery counters since start.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Records the hub acknowledged (counted before they are deleted here).
    pub acked: AtomicU64,
    /// Delivery rounds that failed (records released for a later round).
    pub failed_rounds: AtomicU64,
}

/// Runs until the queue or the link is dropped. `wake` shortens the idle wait (a producer
/// appended something).
pub async fn run(
    link: std::sync::Weak<Uplink>,
    queue: Arc<dyn Queue>,
    wake: Arc<tokio::sync::Notify>,
) {
    run_until(link, queue, wake, CancellationToken::new()).await;
}

/// [`run`] until `stop` is cancelled (shutdown): no new round starts after it, a round in
/// progress ends normally (what the hub acknowledged is deleted, the rest released).
pub async fn run_until(
    link: std::sync::Weak<Uplink>,
    queue: Arc<dyn Queue>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let epoch = queue.epoch();
    let Some(stats) = link.upgrade().map(|u| u.delivery_stats().clone()) else {
        return;
    };
    let idle = Duration::from_millis(500);
    let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let Some(up) = link.upgrade() else { return };
        if !up.view().available {
            drop(up);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        let q = queue.clone();
        let batch = match tokio::task::spawn_blocking(move || {
            q.lease(DELIVER_MAX_RECORDS, DELIVER_MAX_BYTES)
        })
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "queue lease failed");
                tokio::time::sleep(idle).await;
                continue;
            }
            Err(_) => return,
        };
        if batch.is_empty() {
            drop(up);
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        let mut frames = Vec::new();
        for d in &batch {
            let msg = Message::Deliver {
                epoch,
                seq: d.seq,
                payload: d.payload.clone(),
            };
            match encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES) {
                Ok(b) => frames.extend_from_slice(&b),
                Err(e) => {
                    tracing::error!(seq = d.seq, error = %e, "a queued record cannot be framed")
                }
            }
        }
        let leased: Vec<Seq> = batch.iter().map(|d| d.seq).collect();
        let timeout = up.timeout().max(Duration::from_secs(5));
        let (acked, retry_after) = match up.deliver(&frames, timeout).await {
            Ok(d) => (
                d.acks
                    .into_iter()
                    .filter(|(e, s)| *e == epoch && leased.contains(s))
                    .map(|(_, s)| s)
                    .collect::<Vec<_>>(),
                d.retry_after,
            ),
            Err(e) => {
                tracing::debug!(records = leased.len(), error = %e, "delivery failed: records kept");
                (Vec::new(), None)
            }
        };
        drop(up);
        // Counted before the records leave the queue: whoever sees the queue drained sees
        // them counted.
        stats.acked.fetch_add(acked.len() as u64, Ordering::Relaxed);
        let rest: Vec<Seq> = leased
            .iter()
            .copied()
            .filter(|s| !acked.contains(s))
            .collect();
        let (q, a) = (queue.clone(), acked.clone());
        let deleted = tokio::task::spawn_blocking(move || {
            let n = if a.is_empty() { Ok(0) } else { q.ack(&a) };
            q.release(&rest);
            n
        })
        .await;
        if let Ok(Err(e)) = &deleted {
            tracing::warn!(error = %e, "acknowledged records not deleted: they will be sent again");
        }
        if acked.len() < leased.len() {
            stats.failed_rounds.fetch_add(1, Ordering::Relaxed);
            let wait = match retry_after {
                Some(hint) => after_hint(hint.min(RETRY_AFTER_CAP)),
                None => backoff.next_delay(),
            };
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                busy = retry_after.is_some(),
                "delivery round incomplete: waiting"
            );
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        } else {
            backoff.reset();
        }
    }
}
