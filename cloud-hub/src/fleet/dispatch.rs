//! What the hub does with each MQTT message it receives (status, telemetry, events,
//! command results, snapshot replies): decode by the topic's kind, count, and feed the
//! [`FleetStore`], the per-device series, or the caller waiting for it. The connection
//! itself is [`super::link`]'s.

use super::link::{LinkStats, now_ms};
use super::snapshot::SnapshotWaiters;
use super::store::FleetStore;
use crate::series::SeriesStore;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use tandem_shared::mqtt::{
    CommandResult, Event as DeviceEvent, SnapshotReply, State, Status, Telemetry, Topic, TopicKind,
};
use tokio::sync::oneshot;

/// Commands waiting for their result, by (device, id).
pub(super) type Waiters = Mutex<HashMap<(String, String), oneshot::Sender<CommandResult>>>;

/// Where received state goes.
pub(super) struct Sinks {
    /// Per-device state (status, telemetry, last seen, unreadable messages).
    pub(super) store: FleetStore,
    /// Per-device series (newer telemetry, events).
    pub(super) series: Arc<dyn SeriesStore>,
    /// Requests waiting for a snapshot reply.
    pub(super) snapshots: Arc<SnapshotWaiters>,
}

/// Applies one received message: decoded by its topic's kind, counted, stored or handed to
/// its waiter; an unreadable one is counted, logged and noted on its device.
pub(super) fn dispatch(
    topic: &str,
    payload: &[u8],
    sinks: &Sinks,
    waiters: &Waiters,
    stats: &LinkStats,
) {
    let store = &sinks.store;
    let Ok(t) = Topic::parse(topic) else {
        count(stats, "other");
        return;
    };
    let now = now_ms();
    let device = t.device.as_str();
    let unreadable = |e: String| {
        stats.unreadable.fetch_add(1, Relaxed);
        tracing::warn!(device, topic, error = %e, "unreadable MQTT message");
        let _ = store.update(device, |d| {
            d.unreadable += 1;
            d.last_error = Some(format!("{topic}: {e}"));
        });
    };
    let stored = match t.kind {
        TopicKind::Status => {
            count(stats, "status");
            match Status::decode(payload) {
                Ok(s) => store.update(device, |d| {
                    d.online = s.state == State::Online;
                    d.last_seen_ms = now;
                    if s.state == State::Online {
                        d.status = Some(s);
                    } else if let Some(old) = &mut d.status {
                        old.state = State::Offline;
                        old.reason = s.reason;
                    } else {
                        d.status = Some(s);
                    }
                }),
                Err(e) => return unreadable(e.to_string()),
            }
        }
        TopicKind::Telemetry => {
            count(stats, "telemetry");
            match Telemetry::decode(payload) {
                Ok(tm) => {
                    let mut newer = false;
                    let r = store.update(device, |d| {
                        newer = d.take_telemetry(tm.clone(), now, false);
                    });
                    // An older sample (a device clock set back) would be a point out of order.
                    if newer {
                        sinks.series.record(device, &tm, now);
                    }
                    r
                }
                Err(e) => return unreadable(e.to_string()),
            }
        }
        TopicKind::CommandResult(_) => {
            count(stats, "result");
            match CommandResult::decode(payload) {
                Ok(r) => {
                    if let Some(id) = &r.id {
                        let key = (device.to_string(), id.clone());
                        let w = waiters
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        if let Some(tx) = w {
                            let _ = tx.send(r);
                        }
                    }
                    store.update(device, |d| d.last_seen_ms = now)
                }
                Err(e) => return unreadable(e.to_string()),
            }
        }
        TopicKind::Events => {
            count(stats, "event");
            match DeviceEvent::decode(payload) {
                // Kept in memory only: no fleet-database write per event.
                Ok(e) => {
                    sinks.series.record_event(device, &e, now);
                    return;
                }
                Err(e) => return unreadable(e.to_string()),
            }
        }
        TopicKind::Snapshot(_) => {
            count(stats, "snapshot");
            // Kept nowhere: handed to its waiter, or dropped (late, or asked by another tool).
            match SnapshotReply::decode(payload) {
                Ok(r) => {
                    sinks.snapshots.deliver(device, r);
                    return;
                }
                Err(e) => return unreadable(e.to_string()),
            }
        }
        TopicKind::Objects | TopicKind::Command(_) | TopicKind::SnapshotRequest(_) => {
            count(stats, "other");
            return;
        }
    };
    if let Err(e) = stored {
        tracing::error!(device, error = %e, "fleet state not stored");
    }
}

fn count(stats: &LinkStats, kind: &'static str) {
    *stats
        .received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(kind)
        .or_default() += 1;
}
