//! Snapshots an operator asks of a device's camera (docs/mqtt.md "Snapshots", hub side):
//! `GET /v1/fleet/{device}/cameras/{camera}/snapshot.jpg[?track=ID&timeout_ms=N]` publishes a
//! [`SnapshotRequest`] with a fresh id on
//! `tandem/{device}/cameras/{camera}/snapshot/get` through the hub's MQTT link, waits for the
//! [`SnapshotReply`] with that id on `.../snapshot`, and answers the JPEG (`image/jpeg`, faces
//! blurred on the device) or a precise error ([`SnapshotError::status`]).
//!
//! Bounded: at most `fleet.snapshot_max_inflight` requests wait at once; one more is answered
//! 429 at once, never queued. Each wait ends after `fleet.snapshot_timeout_ms` (or the
//! request's `timeout_ms`, 1-60000), and its waiter is removed however the request ends
//! (answered, timed out, or dropped because the HTTP client went away: `Waiting`'s drop).
//!
//! [`Link::snapshot`] (the publish and the wait) lives here too; the link's dispatch hands
//! each reply to [`SnapshotWaiters::deliver`].

use super::Fleet;
use super::link::{Link, now_ms};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rumqttc::QoS;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_shared::mqtt::command::MAX_ID_BYTES;
use tandem_shared::mqtt::{
    SnapshotErrorCode, SnapshotImage, SnapshotReply, SnapshotRequest, Topic, topic,
};
use tokio::sync::oneshot;

/// Why no snapshot is answered.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A device name, camera id or track that cannot be asked for (nothing sent).
    #[error("{0}")]
    BadRequest(String),
    /// No status, telemetry or result was ever heard from the device.
    #[error("device `{0}` has not been heard of")]
    UnknownDevice(String),
    /// Its last status says offline (its last will, or a clean stop): nothing sent.
    #[error("device `{0}` is offline (its last status); no snapshot was asked")]
    Offline(String),
    /// `fleet.snapshot_max_inflight` requests are waiting.
    #[error(
        "{0} snapshot requests are waiting for devices (fleet.snapshot_max_inflight); ask again"
    )]
    Busy(usize),
    /// The hub's MQTT client is not connected.
    #[error("the hub is not connected to the MQTT broker")]
    NotConnected,
    /// No reply in time.
    #[error("device `{device}` sent no snapshot within {ms} ms (offline, or the request was lost)")]
    Timeout {
        /// Device.
        device: String,
        /// The wait.
        ms: u64,
    },
    /// The device answered `ok: false`.
    #[error("device `{device}` answered {code}: {message}")]
    Refused {
        /// Device.
        device: String,
        /// The agent's code.
        code: SnapshotErrorCode,
        /// The agent's message.
        message: String,
    },
    /// `ok: true` without a JPEG in base64.
    #[error("device `{0}` answered a snapshot without a readable JPEG")]
    BadReply(String),
    /// The fleet database could not be read.
    #[error("fleet database: {0}")]
    Store(String),
}

impl SnapshotError {
    /// The HTTP status: 400 bad request, 404 unknown device or the agent's `no_camera` /
    /// `no_snapshot`, 413 `too_large`, 429 the hub's bound, 503 the agent's `busy` or
    /// `privacy` or no broker, 504 offline or no reply, 502 an unreadable reply.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnknownDevice(_) => StatusCode::NOT_FOUND,
            Self::Offline(_) | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NotConnected => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadReply(_) => StatusCode::BAD_GATEWAY,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Refused { code, .. } => match code {
                SnapshotErrorCode::NoCamera | SnapshotErrorCode::NoSnapshot => {
                    StatusCode::NOT_FOUND
                }
                SnapshotErrorCode::BadRequest => StatusCode::BAD_REQUEST,
                SnapshotErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                SnapshotErrorCode::Busy | SnapshotErrorCode::Privacy => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
        }
    }
}

type Key = (String, String);

/// The requests waiting for a reply, by (device, id): filled by [`Link::snapshot`],
/// answered by the link's dispatch.
#[derive(Debug, Default)]
pub struct SnapshotWaiters {
    map: Mutex<HashMap<Key, oneshot::Sender<SnapshotReply>>>,
}

impl SnapshotWaiters {
    /// Hands `reply` from `device` to its waiter; false when none waits (late, or not ours).
    pub fn deliver(&self, device: &str, reply: SnapshotReply) -> bool {
        let Some(id) = reply.id.clone() else {
            return false;
        };
        let w = self.lock().remove(&(device.to_string(), id));
        w.is_some_and(|tx| tx.send(reply).is_ok())
    }

    /// Waiters now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A waiter for (`device`, `id`), removed when the returned guard drops.
    pub(super) fn wait(
        self: &Arc<Self>,
        device: &str,
        id: String,
    ) -> (Waiting, oneshot::Receiver<SnapshotReply>) {
        let key = (device.to_string(), id);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(key.clone(), tx);
        (
            Waiting {
                waiters: self.clone(),
                key,
            },
            rx,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, oneshot::Sender<SnapshotReply>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One waiter: removed from [`SnapshotWaiters`] on drop, however the request ended.
#[derive(Debug)]
pub(super) struct Waiting {
    waiters: Arc<SnapshotWaiters>,
    key: Key,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.key);
    }
}

impl Link {
    /// Publishes a snapshot request (a fresh id) for `device`'s `camera` and waits up to
    /// `timeout` for the reply with that id; the waiter is gone when this returns or is
    /// dropped.
    pub async fn snapshot(
        &self,
        device: &str,
        camera: &str,
        track: Option<String>,
        timeout: Duration,
    ) -> Result<SnapshotReply, SnapshotError> {
        if !self.stats.connected.load(Relaxed) {
            return Err(SnapshotError::NotConnected);
        }
        let id = format!("s{}-{}", now_ms(), self.next_id.fetch_add(1, Relaxed));
        let req = SnapshotRequest {
            v: tandem_shared::mqtt::VERSION,
            id: id.clone(),
            track,
        };
        let (_waiting, rx) = self.snapshots.wait(device, id);
        self.client
            .publish(
                Topic::snapshot_request(device, camera),
                QoS::AtLeastOnce,
                false,
                req.encode(),
            )
            .await
            .map_err(|_| SnapshotError::NotConnected)?;
        self.stats.snapshot_requests.fetch_add(1, Relaxed);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            _ => Err(SnapshotError::Timeout {
                device: device.to_string(),
                ms: timeout.as_millis() as u64,
            }),
        }
    }
}

impl Fleet {
    /// Asks `device`'s `camera` for its snapshot (`track`'s, or the one stored last) and waits
    /// up to `timeout`: the image's description and the JPEG.
    pub async fn snapshot(
        &self,
        device: &str,
        camera: &str,
        track: Option<String>,
        timeout: Duration,
    ) -> Result<(SnapshotImage, Vec<u8>), SnapshotError> {
        if !topic::valid_device_name(device) {
            return Err(SnapshotError::BadRequest(format!(
                "`{device}` is not a valid device name"
            )));
        }
        if !topic::valid_camera_id(camera) {
            return Err(SnapshotError::BadRequest(format!(
                "`{camera}` is not a camera id (1-64 of A-Z a-z 0-9 _ . -)"
            )));
        }
        if let Some(t) = &track
            && (t.is_empty() || t.len() > MAX_ID_BYTES)
        {
            return Err(SnapshotError::BadRequest(format!(
                "`track` must be 1-{MAX_ID_BYTES} bytes"
            )));
        }
        match self.store.get(device) {
            Ok(None) => return Err(SnapshotError::UnknownDevice(device.to_string())),
            Ok(Some(d)) if !d.online => return Err(SnapshotError::Offline(device.to_string())),
            Ok(Some(_)) => {}
            Err(e) => return Err(SnapshotError::Store(e.to_string())),
        }
        let Ok(_permit) = self.snapshot_slots.try_acquire() else {
            return Err(SnapshotError::Busy(self.snapshot_max_inflight));
        };
        let reply = self.link.snapshot(device, camera, track, timeout).await?;
        match (reply.ok, reply.jpeg(), reply.image) {
            (true, Some(jpeg), Some(image)) => Ok((image, jpeg)),
            (true, _, _) => Err(SnapshotError::BadReply(device.to_string())),
            (false, _, _) => Err(SnapshotError::Refused {
                device: device.to_string(),
                code: reply.code.unwrap_or(SnapshotErrorCode::BadRequest),
                message: reply.error.unwrap_or_default(),
            }),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnapshotQuery {
    track: Option<String>,
    timeout_ms: Option<u64>,
}

/// `GET /v1/fleet/{device}/cameras/{camera}/snapshot.jpg`: the JPEG, its track in
/// `x-tandem-track`; a JSON error otherwise.
pub(super) async fn get(
    State(fleet): State<Arc<Fleet>>,
    Path((device, camera)): Path<(String, String)>,
    Query(q): Query<SnapshotQuery>,
) -> Response {
    let timeout = Duration::from_millis(
        q.timeout_ms
            .unwrap_or(fleet.snapshot_timeout_ms)
            .clamp(1, 60_000),
    );
    match fleet.snapshot(&device, &camera, q.track, timeout).await {
        Ok((image, jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg".to_string()),
                (header::CACHE_CONTROL, "no-store".to_string()),
                (
                    header::HeaderName::from_static("x-tandem-track"),
                    image.track,
                ),
            ],
            jpeg,
        )
            .into_response(),
        Err(e) => super::http::error(e.status(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_removed_however_the_wait_ends() {
        let w = Arc::new(SnapshotWaiters::default());
        let reply = |id: &str| {
            SnapshotReply::failed(
                Some(id.into()),
                "c",
                SnapshotErrorCode::NoCamera,
                "x".into(),
            )
        };
        let (guard, mut rx) = w.wait("cam-01", "s-1".into());
        assert_eq!(w.len(), 1);
        // Another device's reply with the same id is not ours.
        assert!(!w.deliver("cam-02", reply("s-1")));
        assert!(w.deliver("cam-01", reply("s-1")));
        assert_eq!(
            rx.try_recv().ok().and_then(|r| r.id).as_deref(),
            Some("s-1")
        );
        assert!(w.is_empty());
        drop(guard);
        // Timed out (or the client went away): the guard takes the waiter with it.
        let (guard, _rx) = w.wait("cam-01", "s-2".into());
        drop(guard);
        assert!(w.is_empty());
        assert!(
            !w.deliver("cam-01", reply("s-2")),
            "a late reply finds no one"
        );
    }

    #[test]
    fn agent_codes_map_to_statuses() {
        let refused = |code| SnapshotError::Refused {
            device: "d".into(),
            code,
            message: "m".into(),
        };
        for (code, status) in [
            (SnapshotErrorCode::NoCamera, 404),
            (SnapshotErrorCode::NoSnapshot, 404),
            (SnapshotErrorCode::BadRequest, 400),
            (SnapshotErrorCode::TooLarge, 413),
            (SnapshotErrorCode::Busy, 503),
            (SnapshotErrorCode::Privacy, 503),
        ] {
            assert_eq!(refused(code).status().as_u16(), status, "{code:?}");
        }
        // The code as on the wire, not in Rust's debug form.
        assert_eq!(
            refused(SnapshotErrorCode::NoSnapshot).to_string(),
            "device `d` answered no_snapshot: m"
        );
        assert_eq!(SnapshotError::Busy(8).status().as_u16(), 429);
        assert_eq!(SnapshotError::Offline("d".into()).status().as_u16(), 504);
    }
}
