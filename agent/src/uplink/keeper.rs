//! The keeper: a background task per [`Uplink`] that makes the hub connection long-lived.
//!
//! - Connects at start (after a random wait up to the backoff's base, 200 ms: a fleet started
//!   at once does not connect in one burst) and again after every loss, once the backoff has
//!   passed, so the first request after an outage finds a connection instead of paying for the
//!   handshake. A connection found closed is recorded as lost first (its backoff), never
//!   replaced at once.
//! - Watches the connection: when it closes (the hub shut down, refused this device's
//!   certificate, or went silent past `hub.idle_timeout_ms` despite keep-alives) the reason is
//!   recorded and reported once at WARN, and the backoff starts.
//! - When a request times out, probes the hub with a `Ping`: a `Pong` within a few round trips
//!   clears the suspicion; silence closes the connection, so later requests answer locally at
//!   once instead of each waiting for its own timeout.
//!
//! It holds only a weak reference: it ends when the link is dropped.

use super::quic::{Uplink, exchange};
use std::sync::Weak;
use std::time::{Duration, Instant};
use tandem_shared::wire::{DEFAULT_MAX_FRAME_BYTES, FrameDecoder, Message, encode_to_vec};

/// How often the keeper re-checks that the link still exists.
const TICK: Duration = Duration::from_secs(1);

/// Runs until the link is dropped.
pub(super) async fn run(link: Weak<Uplink>) {
    let mut nonce = 0u64;
    tokio::time::sleep(super::quic::first_connect_delay()).await;
    loop {
        let Some(up) = link.upgrade() else { return };
        match up.current() {
            Some(conn) => {
                tokio::select! {
                    reason = conn.closed() => up.fail(Some(&conn), &reason.to_string()),
                    () = up.wake.notified() => {
                        nonce = nonce.wrapping_add(1);
                        if up.state.lock().is_ok_and(|s| s.suspect.is_some()) {
                            probe(&up, &conn, nonce).await;
                        }
                    }
                    () = tokio::time::sleep(TICK) => {}
                }
            }
            None => {
                up.record_closed();
                let wait = up
                    .state
                    .lock()
                    .ok()
                    .and_then(|s| s.retry_at)
                    .map(|t| t.saturating_duration_since(Instant::now()));
                match wait {
                    Some(w) if !w.is_zero() => {
                        drop(up);
                        tokio::time::sleep(w.min(TICK)).await;
                    }
                    _ => {
                        // A failure is recorded by `connect_full` (backoff, reason). A new
                        // connection is confirmed by a ping: a hub that refuses this device's
                        // certificate closes it right after the handshake, with the reason.
                        if let Ok(conn) = up.connect_full().await {
                            nonce = nonce.wrapping_add(1);
                            probe(&up, &conn, nonce).await;
                        }
                    }
                }
            }
        }
    }
}

/// Pings the hub over `conn`; no answer within a few round trips closes the connection.
async fn probe(up: &Uplink, conn: &quinn::Connection, nonce: u64) {
    let wait = (conn.rtt() * 4)
        .max(Duration::from_millis(250))
        .min(up.timeout());
    let Ok(frame) = encode_to_vec(&Message::Ping { nonce }, DEFAULT_MAX_FRAME_BYTES) else {
        return;
    };
    let answered = match tokio::time::timeout(wait, exchange(conn, &frame)).await {
        Ok(Ok(bytes)) => {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
            d.feed(&bytes);
            matches!(d.next_message(), Ok(Some(Message::Pong { nonce: n })) if n == nonce)
        }
        _ => false,
    };
    if answered {
        up.confirmed();
    } else {
        let why = conn.close_reason().map_or_else(
            || {
                format!(
                    "the hub did not answer a ping within {} ms",
                    wait.as_millis()
                )
            },
            |r| r.to_string(),
        );
        up.fail(Some(conn), &why);
    }
}
