//! A snapshot asked of the device, by the local API (`GET /v1/cameras/{camera}/snapshot.jpg`,
//! `GET .../events/{id}/snapshot.jpg`) or over MQTT (`tandem/{device}/cameras/{camera}/snapshot/get`,
//! docs/mqtt.md "Snapshots"): one lookup ([`crate::camera::Cameras::snapshot`]) and the face
//! blur every snapshot leaves through ([`super::snapshot::leaving`], failing closed), with one
//! error type that both answer from: 400 / `bad_request`, 404 / `no_camera` or `no_snapshot`,
//! 503 / `privacy` or `busy`, and `too_large` (MQTT only).
//!
//! MQTT requests are bounded: at most `cameras.snapshots.mqtt_max_inflight` run at once (each
//! runs the face detector); one more is answered `busy` at once, never queued. A JPEG over
//! `mqtt_max_bytes` is answered `too_large`.

use super::snapshot::Kept;
use crate::api::AppState;
use crate::camera::CameraError;
use crate::privacy::PrivacyError;
use bytes::Bytes;
use std::sync::Arc;
use tandem_shared::mqtt::snapshot::encode_jpeg;
use tandem_shared::mqtt::{
    SnapshotErrorCode, SnapshotImage, SnapshotReply, SnapshotRequest, VERSION,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why no snapshot is sent.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No stream, no such snapshot, a bad camera id, or the agent is stopping.
    #[error(transparent)]
    Lookup(#[from] CameraError),
    /// The face blur could not run: the snapshot stays on the device.
    #[error("the snapshot may not leave the device: {0}")]
    Privacy(#[from] PrivacyError),
    /// Over the MQTT size bound.
    #[error(
        "the snapshot is {len} bytes, over cameras.snapshots.mqtt_max_bytes ({limit}); \
         GET {path} on the local API serves it"
    )]
    TooLarge {
        /// JPEG bytes.
        len: usize,
        /// The bound.
        limit: usize,
        /// Its local API path.
        path: String,
    },
    /// Too many MQTT requests in flight.
    #[error("{0} snapshot requests are in flight (cameras.snapshots.mqtt_max_inflight); ask again")]
    Busy(usize),
    /// The request payload could not be read.
    #[error("{0}")]
    BadRequest(String),
}

impl RequestError {
    /// The MQTT reply's code.
    pub fn code(&self) -> SnapshotErrorCode {
        match self {
            Self::Lookup(CameraError::NoStream(_)) => SnapshotErrorCode::NoCamera,
            Self::Lookup(CameraError::NoSnapshot { .. }) => SnapshotErrorCode::NoSnapshot,
            Self::Lookup(CameraError::BadId(_)) | Self::BadRequest(_) => {
                SnapshotErrorCode::BadRequest
            }
            Self::Lookup(CameraError::TooMany(_) | CameraError::Stopping) | Self::Busy(_) => {
                SnapshotErrorCode::Busy
            }
            Self::Privacy(_) => SnapshotErrorCode::Privacy,
            Self::TooLarge { .. } => SnapshotErrorCode::TooLarge,
        }
    }

    /// The local API's answer.
    pub fn api(self) -> crate::api::error::ApiError {
        use crate::api::error::ApiError;
        match self.code() {
            SnapshotErrorCode::BadRequest => ApiError::BadRequest(self.to_string()),
            SnapshotErrorCode::NoCamera | SnapshotErrorCode::NoSnapshot => {
                ApiError::NotFound(self.to_string())
            }
            _ => ApiError::Unavailable(self.to_string()),
        }
    }
}

/// The snapshot of `track` of `camera` (the one stored last without `track`), faces blurred
/// per `[privacy]`: where it comes from, and the JPEG that may leave.
pub async fn fetch(
    state: &AppState,
    camera: &str,
    track: Option<&str>,
) -> Result<(Kept, Bytes), RequestError> {
    let kept = state.cameras.snapshot(camera, track)?;
    let jpeg = super::snapshot::leaving(&state.router, &kept.model, kept.snap.jpeg.clone()).await?;
    Ok((kept, jpeg))
}

/// MQTT snapshot requests of one agent: the bound on those in flight.
#[derive(Debug)]
pub struct MqttSnapshots {
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    max_bytes: usize,
}

/// An MQTT request taken: answered now (unreadable, busy) or once the blur has run.
#[derive(Debug)]
pub enum Taken {
    /// The reply.
    Now(SnapshotReply),
    /// Admitted: [`MqttSnapshots::answer`] with this.
    Admitted(SnapshotRequest, OwnedSemaphorePermit),
}

impl MqttSnapshots {
    /// The bounds of `[cameras.snapshots]`.
    pub fn new(cfg: &super::SnapshotConfig) -> Self {
        Self {
            inflight: Arc::new(Semaphore::new(cfg.mqtt_max_inflight)),
            max_inflight: cfg.mqtt_max_inflight,
            max_bytes: cfg.mqtt_max_bytes,
        }
    }

    /// Reads a request for `camera` and admits it when there is room (never waits).
    pub fn take(&self, camera: &str, payload: &[u8]) -> Taken {
        let req = match SnapshotRequest::decode(payload) {
            Ok(r) => r,
            Err((id, e)) => {
                let e = RequestError::BadRequest(e.to_string());
                return Taken::Now(SnapshotReply::failed(id, camera, e.code(), e.to_string()));
            }
        };
        match self.inflight.clone().try_acquire_owned() {
            Ok(permit) => Taken::Admitted(req, permit),
            Err(_) => {
                let e = RequestError::Busy(self.max_inflight);
                Taken::Now(SnapshotReply::failed(
                    Some(req.id),
                    camera,
                    e.code(),
                    e.to_string(),
                ))
            }
        }
    }

    /// The reply to an admitted request (the permit is held until it is made).
    pub async fn answer(
        &self,
        state: &AppState,
        camera: &str,
        req: SnapshotRequest,
        _permit: OwnedSemaphorePermit,
    ) -> SnapshotReply {
        let fetched = fetch(state, camera, req.track.as_deref())
            .await
            .and_then(|(kept, jpeg)| self.bounded(camera, kept, jpeg));
        match fetched {
            Ok(image) => SnapshotReply {
                v: VERSION,
                id: Some(req.id),
                camera: camera.to_string(),
                ok: true,
                image: Some(image),
                code: None,
                error: None,
            },
            Err(e) => SnapshotReply::failed(Some(req.id), camera, e.code(), e.to_string()),
        }
    }

    fn bounded(
        &self,
        camera: &str,
        kept: Kept,
        jpeg: Bytes,
    ) -> Result<SnapshotImage, RequestError> {
        if jpeg.len() > self.max_bytes {
            return Err(RequestError::TooLarge {
                len: jpeg.len(),
                limit: self.max_bytes,
                path: tandem_shared::mqtt::objects::snapshot_path(camera, &kept.track),
            });
        }
        Ok(SnapshotImage {
            track: kept.track,
            model: kept.model,
            ts_ms: kept.snap.ts_ms,
            score: kept.snap.score,
            bbox: kept.snap.bbox,
            content_type: "image/jpeg".into(),
            bytes: jpeg.len() as u64,
            jpeg: encode_jpeg(&jpeg),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::snapshot::Snapshot;

    fn snaps(max_bytes: usize, max_inflight: usize) -> MqttSnapshots {
        MqttSnapshots::new(&crate::track::SnapshotConfig {
            mqtt_max_bytes: max_bytes,
            mqtt_max_inflight: max_inflight,
            ..Default::default()
        })
    }

    /// The errors an agent sends are the golden replies of docs/mqtt.md.
    #[test]
    fn error_replies_are_the_golden_ones() {
        let golden = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
        let cases = [
            (
                "s-43",
                RequestError::from(CameraError::NoStream("porch-1".into())),
                include_str!("../../../shared/tests/fixtures/mqtt/snapshot_reply_no_camera.json"),
            ),
            (
                "s-44",
                RequestError::from(CameraError::NoSnapshot {
                    camera: "porch-1".into(),
                    track: Some("1764518461200-9".into()),
                }),
                include_str!("../../../shared/tests/fixtures/mqtt/snapshot_reply_no_snapshot.json"),
            ),
        ];
        for (id, e, file) in cases {
            let r = SnapshotReply::failed(Some(id.into()), "porch-1", e.code(), e.to_string());
            let sent: serde_json::Value = serde_json::from_slice(&r.encode()).expect("JSON");
            assert_eq!(sent, golden(file));
        }
    }

    #[test]
    fn requests_are_bounded_in_flight_and_in_size() {
        let s = snaps(4, 1);
        let Taken::Admitted(_, permit) = s.take("porch", br#"{"v":1,"id":"a"}"#) else {
            panic!("the first is admitted")
        };
        let Taken::Now(busy) = s.take("porch", br#"{"v":1,"id":"b"}"#) else {
            panic!("the second is busy")
        };
        assert_eq!(
            (busy.id.as_deref(), busy.code),
            (Some("b"), Some(SnapshotErrorCode::Busy))
        );
        drop(permit);
        assert!(matches!(
            s.take("porch", br#"{"v":1,"id":"c"}"#),
            Taken::Admitted(..)
        ));
        let Taken::Now(bad) = s.take("porch", br#"{"v":1,"id":"d","camera":"x"}"#) else {
            panic!("an unknown field is refused")
        };
        assert_eq!(bad.code, Some(SnapshotErrorCode::BadRequest));
        assert_eq!(bad.id.as_deref(), Some("d"));

        let kept = |n| Kept {
            track: "1-2".into(),
            model: "detect-coco".into(),
            snap: Snapshot {
                jpeg: Bytes::from(vec![0u8; n]),
                ts_ms: 1,
                score: 0.5,
                bbox: [0.0; 4],
            },
        };
        let ok = s
            .bounded("porch", kept(4), Bytes::from(vec![7u8; 4]))
            .expect("at the bound");
        assert_eq!((ok.bytes, ok.jpeg.as_str()), (4, "BwcHBw=="));
        let e = s
            .bounded("porch", kept(5), Bytes::from(vec![7u8; 5]))
            .expect_err("over the bound");
        assert_eq!(e.code(), SnapshotErrorCode::TooLarge);
        assert!(
            e.to_string()
                .contains("/v1/cameras/porch/events/1-2/snapshot.jpg"),
            "{e}"
        );
    }
}
