//! What one device, one connection and the whole QUIC endpoint may hold (`[quic.limits]`):
//! handshakes and connections admitted, streams per connection, bytes of frames buffered.
//!
//! Policy:
//! - At most `max_handshakes` connections in the TLS handshake at once (each given at most
//!   `handshake_timeout_ms`), and at most
//!   `max_connections` connections (handshakes included) in all: an incoming connection over
//!   either cap is refused at once (QUIC `CONNECTION_REFUSED`, before any TLS work) and counted;
//!   the device retries with its backoff. Existing connections are never closed for a newcomer.
//! - At most `max_connections_per_device` connections per device identity: a device that
//!   reconnects while its old connections linger (a changed address, a restart) closes its
//!   oldest (application error 0x4), so the newest always gets through. The default (256) leaves
//!   room for the agent, which opens a connection per request while none is up yet (a burst of
//!   48 requests made over 64 at once in `agent/tests/hub_policy.rs`); one device can hold at
//!   most 256 of the 4096.
//! - At most `max_streams_per_connection` bidirectional streams open at once per connection
//!   (QUIC flow control: the peer cannot open more; it waits), and no unidirectional streams.
//! - Bytes of frames being received and handled are reserved, once a frame's header is in and
//!   before its payload is read, from a budget per connection and one for the hub; a stream
//!   waits (its peer is flow-controlled) while the budget is spent, and a frame must complete
//!   within `frame_timeout_ms` of its header or its stream is reset. quinn's own buffering per
//!   connection is bounded by the same per-connection figure (its receive window).

use super::quic::IngressStats;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// QUIC application error: a newer connection of the same device replaced this one.
pub const CLOSE_REPLACED: u32 = 0x4;

/// `[quic.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicLimits {
    /// Connections in the TLS handshake at once (default 64); more are refused and retry.
    pub max_handshakes: u32,
    /// Longest a handshake may take, in milliseconds (default 10000); then it is dropped and
    /// its place freed (a client that goes silent mid-handshake holds a place no longer).
    pub handshake_timeout_ms: u64,
    /// Connections at once, handshakes included (default 4096); more are refused and retry.
    pub max_connections: u32,
    /// Connections per device identity (default 256); a newer one closes the oldest.
    pub max_connections_per_device: u32,
    /// Bidirectional streams open at once per connection (default 64); the peer waits for
    /// more. Unidirectional streams: none.
    pub max_streams_per_connection: u32,
    /// Bytes of frames buffered per connection (default 33554432, 32 MiB; at least
    /// `max_frame_bytes`).
    pub max_buffered_bytes_per_connection: u64,
    /// Bytes of frames buffered by all connections together (default 536870912, 512 MiB; at
    /// least `max_buffered_bytes_per_connection`).
    pub max_buffered_bytes: u64,
    /// Largest `InferRequest` or `Deliver` payload (default 16777216, 16 MiB, the wire's
    /// default); the other kinds have the smaller limits their layouts allow.
    pub max_frame_bytes: u32,
    /// Longest time a frame may take to arrive once its header is in, in milliseconds
    /// (default 60000); after it the stream is reset and its buffer freed.
    pub frame_timeout_ms: u64,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            max_handshakes: 64,
            handshake_timeout_ms: 10_000,
            max_connections: 4096,
            max_connections_per_device: 256,
            max_streams_per_connection: 64,
            max_buffered_bytes_per_connection: 32 << 20,
            max_buffered_bytes: 512 << 20,
            max_frame_bytes: 16 << 20,
            frame_timeout_ms: 60_000,
        }
    }
}

impl QuicLimits {
    /// What is wrong with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (key, v) in [
            ("max_handshakes", self.max_handshakes),
            ("max_connections", self.max_connections),
            (
                "max_connections_per_device",
                self.max_connections_per_device,
            ),
            (
                "max_streams_per_connection",
                self.max_streams_per_connection,
            ),
            ("max_frame_bytes", self.max_frame_bytes),
        ] {
            if v == 0 {
                p.push(format!("quic.limits.{key} must be > 0"));
            }
        }
        for (key, v) in [
            ("frame_timeout_ms", self.frame_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
        ] {
            if v == 0 {
                p.push(format!("quic.limits.{key} must be > 0"));
            }
        }
        if self.max_buffered_bytes_per_connection < u64::from(self.max_frame_bytes) {
            p.push(
                "quic.limits.max_buffered_bytes_per_connection must be at least max_frame_bytes"
                    .into(),
            );
        }
        if self.max_buffered_bytes < self.max_buffered_bytes_per_connection {
            p.push(
                "quic.limits.max_buffered_bytes must be at least max_buffered_bytes_per_connection"
                    .into(),
            );
        }
        p
    }

    /// quinn's transport settings for these limits.
    pub fn transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(self.max_streams_per_connection.into());
        t.max_concurrent_uni_streams(0u32.into());
        let window = self
            .max_buffered_bytes_per_connection
            .min(u64::from(u32::MAX));
        t.receive_window(quinn::VarInt::from_u32(window as u32));
        t.stream_receive_window(quinn::VarInt::from_u32((window as u32).min(2 << 20)));
        t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            30_000,
        ))));
        t
    }
}

/// Counters of the limits at work (rendered in `/metrics`).
#[derive(Debug, Default)]
pub struct LimitStats {
    /// Connections refused because `max_handshakes` were in progress.
    pub handshakes_refused: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections closed because their device opened more than `max_connections_per_device`.
    pub connections_replaced: AtomicU64,
    /// Handshakes in progress now.
    pub handshakes: AtomicU64,
    /// Connections open now (handshakes included).
    pub connections: AtomicU64,
    /// Streams reset for a frame over its kind's limit or not complete within the timeout.
    pub frames_refused: AtomicU64,
    /// Delivered records refused because their device was over its quota.
    pub over_quota: AtomicU64,
}

/// Admission of connections: counts, caps, and the connections of each device.
#[derive(Debug)]
pub(super) struct Admission {
    limits: QuicLimits,
    next_id: AtomicU64,
    by_device: Mutex<HashMap<String, VecDeque<(u64, quinn::Connection)>>>,
}

/// A place in a gauge ([`LimitStats::connections`], [`LimitStats::handshakes`]), given back
/// when dropped.
pub(super) struct Held {
    stats: Arc<IngressStats>,
    gauge: fn(&LimitStats) -> &AtomicU64,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.gauge)(&self.stats.limits).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an incoming connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_connections` are open.
    Connections,
    /// `max_handshakes` are in progress.
    Handshakes,
}

impl Admission {
    pub(super) fn new(limits: QuicLimits) -> Self {
        Self {
            limits,
            next_id: AtomicU64::new(0),
            by_device: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one incoming connection: its connection and handshake places (give the
    /// handshake's back when it ends), or why it is refused (counted).
    pub(super) fn admit(&self, stats: &Arc<IngressStats>) -> Result<(Held, Held), Refusal> {
        let take = |gauge: fn(&LimitStats) -> &AtomicU64, max: u32| {
            let prev = gauge(&stats.limits).fetch_add(1, Ordering::Relaxed);
            let held = Held {
                stats: stats.clone(),
                gauge,
            };
            (prev < u64::from(max)).then_some(held)
        };
        let limits = &stats.limits;
        let Some(conn) = take(|s| &s.connections, self.limits.max_connections) else {
            limits.connections_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Connections);
        };
        let Some(handshake) = take(|s| &s.handshakes, self.limits.max_handshakes) else {
            limits.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Handshakes);
        };
        Ok((conn, handshake))
    }

    /// Records `conn` as one of `device`'s; closes its oldest connections beyond
    /// `max_connections_per_device`. Returns the id to [`Admission::forget`] it with.
    pub(super) fn register(
        &self,
        device: &str,
        conn: &quinn::Connection,
        stats: &LimitStats,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(device.to_string()).or_default();
        list.push_back((id, conn.clone()));
        while list.len() > self.limits.max_connections_per_device as usize {
            if let Some((_, old)) = list.pop_front() {
                stats.connections_replaced.fetch_add(1, Ordering::Relaxed);
                tracing::info!(device, remote = %old.remote_address(), "a newer connection of the device replaces this one");
                old.close(
                    quinn::VarInt::from_u32(CLOSE_REPLACED),
                    b"replaced by a newer connection of this device",
                );
            }
        }
        id
    }

    /// Forgets a connection that ended.
    pub(super) fn forget(&self, device: &str, id: u64) {
        let mut map = self.by_device.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(device) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                map.remove(device);
            }
        }
    }
}
