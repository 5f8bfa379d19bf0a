//! `[cameras]`: the per-camera frame queue and its drop policy, the object tracker
//! (`[cameras.tracker]`) and the snapshot store (`[cameras.snapshots]`). Defaults here and in
//! the embedded default config (`agent/config/default.toml`).

use serde::{Deserialize, Serialize};

/// Which frame goes when a camera's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropPolicy {
    /// The oldest waiting frame is dropped and the new one queued: a camera wants the newest
    /// picture, not a backlog (default).
    #[default]
    Oldest,
    /// The new frame is dropped, the waiting ones kept: every frame that is taken is
    /// processed in order (for streams that must not skip ahead).
    Newest,
}

/// `[cameras]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CamerasConfig {
    /// Frames waiting per camera (1-1024); when full, `drop` says which frame goes (counted in
    /// `tandem_camera_frames_total{outcome="dropped"}`). Default 4.
    pub queue_frames: usize,
    /// `oldest` (default) or `newest`: the frame dropped when a camera's queue is full.
    pub drop: DropPolicy,
    /// Cameras with a stream at once (1-4096); the next new one is refused with 503. Default 64.
    pub max_cameras: usize,
    /// The object tracker of each camera streaming to a detection model.
    pub tracker: TrackerConfig,
    /// The best frame of each track, kept as a JPEG for `GET
    /// /v1/cameras/{camera}/events/{id}/snapshot.jpg`.
    pub snapshots: SnapshotConfig,
}

/// `[cameras.tracker]`: IoU matching of each frame's boxes to the camera's tracks, per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Publish object events (`appeared`, `updated`, `gone`) for cameras streaming to a
    /// detection model. Default true.
    pub enabled: bool,
    /// A box is tracked (starts or continues a track) only when it scores at least this
    /// (0-1; Frigate's per-object `min_score`). Lower boxes stay in the frame's answer and the
    /// cascade's signals, but never become events: the edge answers down to the cloud's
    /// detector threshold (mAP), the bar for an event is here. Default 0.35.
    pub min_score: f32,
    /// A box continues a track of its class when their IoU is at least this (0-1, above 0).
    /// Default 0.3.
    pub iou_threshold: f32,
    /// Frames in a row a new object must be seen in before `appeared` (1 = at once; more
    /// suppresses one-frame flicker). Default 2.
    pub min_hits: u32,
    /// A track is `gone` after this many processed frames without it (at least 1). Default 5.
    pub max_missed_frames: u32,
    /// ... or after this many milliseconds without it, frames or not (at least 100). Default
    /// 5000.
    pub max_unseen_ms: u64,
    /// At most one `updated` per track per this many milliseconds; a change in between is
    /// published at the next frame after it. Default 1000.
    pub update_interval_ms: u64,
    /// The box moved notably (an `updated`) when its IoU with the box last published falls
    /// under this (0-1). Default 0.5.
    pub move_iou: f32,
    /// Tracks per camera at once (1-1024); new objects past it are not tracked (counted in
    /// `tandem_camera_tracks_refused_total`). Default 64.
    pub max_tracks: usize,
}

/// `[cameras.snapshots]`: one JPEG per track (its best-score frame, replaced as the score
/// improves), kept after the track ends until evicted; least recently stored evicted first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// JPEGs kept per camera (0 turns snapshots off). Default 32.
    pub max_per_camera: usize,
    /// Bytes of JPEGs kept per camera (at least 64 KiB when snapshots are on). Default 16 MiB.
    pub max_bytes_per_camera: usize,
    /// JPEG quality (1-100) for frames that came as PNG or raw pixels (a JPEG frame is kept
    /// as it came). Default 85.
    pub jpeg_quality: u8,
    /// Largest JPEG sent in answer to an MQTT snapshot request, bytes (1024 to 778240: its
    /// base64 fits a 1 MiB payload); a larger one is answered `too_large` (the local API still
    /// serves it). Default 524288 (512 KiB).
    pub mqtt_max_bytes: usize,
    /// MQTT snapshot requests in flight at once (1-16; each runs the face blur); more are
    /// answered `busy`. Default 2.
    pub mqtt_max_inflight: usize,
}

impl Default for CamerasConfig {
    fn default() -> Self {
        Self {
            queue_frames: 4,
            drop: DropPolicy::Oldest,
            max_cameras: 64,
            tracker: TrackerConfig::default(),
            snapshots: SnapshotConfig::default(),
        }
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_score: 0.35,
            iou_threshold: 0.3,
            min_hits: 2,
            max_missed_frames: 5,
            max_unseen_ms: 5000,
            update_interval_ms: 1000,
            move_iou: 0.5,
            max_tracks: 64,
        }
    }
}

/// The largest `mqtt_max_bytes`: its base64 (4/3) and the reply's other fields fit
/// `tandem_shared::mqtt::payload::MAX_PAYLOAD_BYTES` (1 MiB).
pub const MAX_MQTT_SNAPSHOT_BYTES: usize = 760 * 1024;

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            max_per_camera: 32,
            max_bytes_per_camera: 16 * 1024 * 1024,
            jpeg_quality: 85,
            mqtt_max_bytes: 512 * 1024,
            mqtt_max_inflight: 2,
        }
    }
}

impl CamerasConfig {
    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let t = &self.tracker;
        let s = &self.snapshots;
        let mut need = |ok: bool, msg: &str| {
            if !ok {
                p.push(format!("cameras.{msg}"));
            }
        };
        need(
            (1..=1024).contains(&self.queue_frames),
            "queue_frames must be 1-1024",
        );
        need(
            (1..=4096).contains(&self.max_cameras),
            "max_cameras must be 1-4096",
        );
        need(
            (0.0..=1.0).contains(&t.min_score),
            "tracker.min_score must be 0-1",
        );
        need(
            t.iou_threshold > 0.0 && t.iou_threshold <= 1.0,
            "tracker.iou_threshold must be above 0 and at most 1",
        );
        need(t.min_hits >= 1, "tracker.min_hits must be at least 1");
        need(
            t.max_missed_frames >= 1,
            "tracker.max_missed_frames must be at least 1",
        );
        need(
            t.max_unseen_ms >= 100,
            "tracker.max_unseen_ms must be at least 100",
        );
        need(
            (0.0..=1.0).contains(&t.move_iou),
            "tracker.move_iou must be 0-1",
        );
        need(
            (1..=1024).contains(&t.max_tracks),
            "tracker.max_tracks must be 1-1024",
        );
        need(
            s.max_per_camera == 0 || s.max_bytes_per_camera >= 64 * 1024,
            "snapshots.max_bytes_per_camera must be at least 65536",
        );
        need(
            (1..=100).contains(&s.jpeg_quality),
            "snapshots.jpeg_quality must be 1-100",
        );
        need(
            (1024..=MAX_MQTT_SNAPSHOT_BYTES).contains(&s.mqtt_max_bytes),
            "snapshots.mqtt_max_bytes must be 1024-778240",
        );
        need(
            (1..=16).contains(&s.mqtt_max_inflight),
            "snapshots.mqtt_max_inflight must be 1-16",
        );
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_each_named() {
        let mut c = CamerasConfig {
            queue_frames: 0,
            ..Default::default()
        };
        c.tracker.iou_threshold = 0.0;
        c.tracker.min_hits = 0;
        c.snapshots.jpeg_quality = 0;
        let p = c.problems();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("cameras.queue_frames"), "{p:?}");
        assert!(CamerasConfig::default().problems().is_empty());
    }
}
