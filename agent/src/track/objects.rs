//! One camera's objects: its [`Tracker`] and [`SnapshotStore`] together, turning each frame's
//! detections into [`ObjectEvent`] payloads (with the snapshot reference of each track) and
//! keeping the best frame of each track. Sans IO apart from JPEG encoding a non-JPEG frame:
//! the camera task calls it on the blocking pool.

use super::config::CamerasConfig;
use super::snapshot::{Snapshot, SnapshotStore, to_jpeg};
use super::tracker::{Step, Tracker};
use bytes::Bytes;
use tandem_engine::preprocess::image::Limits;
use tandem_shared::detect::Detections;
use tandem_shared::mqtt::{GoneReason, ObjectEvent, VERSION};

/// The tracker and snapshots of one camera.
#[derive(Debug)]
pub struct CameraObjects {
    camera: String,
    model: String,
    tracker: Tracker,
    snapshots: SnapshotStore,
    tracker_cfg: super::config::TrackerConfig,
    limits: Limits,
    quality: u8,
    size: (u32, u32),
    snapshot_failures: u64,
}

impl CameraObjects {
    /// Nothing tracked yet.
    pub fn new(camera: &str, cfg: &CamerasConfig, limits: Limits) -> Self {
        Self {
            camera: camera.to_string(),
            model: String::new(),
            tracker: Tracker::new(cfg.tracker.clone()),
            snapshots: SnapshotStore::new(
                cfg.snapshots.max_per_camera,
                cfg.snapshots.max_bytes_per_camera,
            ),
            tracker_cfg: cfg.tracker.clone(),
            limits,
            quality: cfg.snapshots.jpeg_quality,
            size: (0, 0),
            snapshot_failures: 0,
        }
    }

    /// One frame of `model` received at `ts_ms`, its detections and its bytes (JPEG, PNG or a
    /// raw frame): the events to publish, in order. A change of model ends the tracks of the
    /// previous one first (its boxes say nothing about the new one's).
    pub fn frame(
        &mut self,
        model: &str,
        ts_ms: u64,
        dets: &Detections,
        frame: &Bytes,
    ) -> Vec<ObjectEvent> {
        let mut events = Vec::new();
        if self.model != model {
            if !self.model.is_empty() {
                let step = self.tracker.end_all(GoneReason::Unseen);
                events = self.events(ts_ms, step);
                self.tracker = Tracker::new(self.tracker_cfg.clone());
            }
            self.model = model.to_string();
        }
        self.size = (dets.width, dets.height);
        let step = self.tracker.observe(ts_ms, &dets.boxes);
        let mut jpeg: Option<Bytes> = None;
        for id in &step.best {
            let Some(t) = self.tracker.track(id) else {
                continue;
            };
            let bytes = match &jpeg {
                Some(j) => j.clone(),
                None => match to_jpeg(frame, &self.limits, self.quality) {
                    Ok(j) => jpeg.insert(j).clone(),
                    Err(e) => {
                        self.snapshot_failures += 1;
                        tracing::debug!(camera = %self.camera, error = %e, "no snapshot");
                        break;
                    }
                },
            };
            let snap = Snapshot {
                jpeg: bytes,
                ts_ms,
                score: t.best_score,
                bbox: t.bbox,
            };
            self.snapshots.put(id, snap);
        }
        events.extend(self.events(ts_ms, step));
        events
    }

    /// Ends the tracks unseen for too long at `ts_ms` (between frames).
    pub fn expire(&mut self, ts_ms: u64) -> Vec<ObjectEvent> {
        let step = self.tracker.expire(ts_ms);
        self.events(ts_ms, step)
    }

    /// Ends every track (the stream is stopping).
    pub fn end_all(&mut self, ts_ms: u64, reason: GoneReason) -> Vec<ObjectEvent> {
        let step = self.tracker.end_all(reason);
        self.events(ts_ms, step)
    }

    /// When the next track runs out of time without a frame.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.tracker.next_deadline_ms()
    }

    /// The detection model of the frames tracked now.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Snapshots kept now.
    pub fn kept_count(&self) -> usize {
        self.snapshots.usage().0
    }

    /// Track `id`'s snapshot (without `id`: the one stored last), while kept, with its track.
    pub fn kept(&self, id: Option<&str>) -> Option<(String, Snapshot)> {
        match id {
            Some(id) => self.snapshots.get(id).map(|s| (id.to_string(), s.clone())),
            None => self
                .snapshots
                .newest()
                .map(|(id, s)| (id.to_string(), s.clone())),
        }
    }

    /// For the stream's report: live tracks, new objects refused at `max_tracks`, snapshots
    /// kept / bytes / evicted, frames that could not become a snapshot.
    pub fn report(&self) -> serde_json::Value {
        let (kept, bytes, evicted) = self.snapshots.usage();
        serde_json::json!({
            "live": self.tracker.live(),
            "refused": self.tracker.refused(),
            "snapshots": {"kept": kept, "bytes": bytes, "evicted": evicted, "failed": self.snapshot_failures},
        })
    }

    fn events(&mut self, ts_ms: u64, step: Step) -> Vec<ObjectEvent> {
        for id in &step.dropped {
            self.snapshots.remove(id);
        }
        step.changes
            .into_iter()
            .map(|c| {
                let t = c.track;
                ObjectEvent {
                    v: VERSION,
                    kind: c.kind,
                    ts_ms,
                    camera: self.camera.clone(),
                    snapshot: self.snapshots.reference(&self.camera, &t.id),
                    id: t.id,
                    model: self.model.clone(),
                    label: t.label,
                    class: t.class,
                    score: t.score,
                    best_score: t.best_score,
                    bbox: t.bbox,
                    width: self.size.0,
                    height: self.size.1,
                    first_seen_ms: t.first_seen_ms,
                    last_seen_ms: t.last_seen_ms,
                    frames: t.frames,
                    reason: c.reason,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::detect::Detection;
    use tandem_shared::mqtt::ObjectEventType;

    fn dets(boxes: &[(f32, f32)]) -> Detections {
        Detections {
            width: 640,
            height: 480,
            boxes: boxes
                .iter()
                .map(|&(x, score)| Detection {
                    bbox: [x, 10.0, x + 100.0, 200.0],
                    class: 0,
                    label: "person".into(),
                    score,
                })
                .collect(),
        }
    }

    #[test]
    fn events_carry_the_best_frame_as_snapshot() {
        let cfg = CamerasConfig::default();
        let limits = Limits::from(&tandem_engine::settings::ImageConfig::default());
        let mut o = CameraObjects::new("porch", &cfg, limits);
        let (f1, f2) = (
            Bytes::from_static(b"\xFF\xD8\xFF one"),
            Bytes::from_static(b"\xFF\xD8\xFF two"),
        );
        assert!(o.frame("m", 1000, &dets(&[(10.0, 0.5)]), &f1).is_empty());
        let e = o.frame("m", 1100, &dets(&[(12.0, 0.8)]), &f2);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, ObjectEventType::Appeared);
        assert_eq!(
            (e[0].camera.as_str(), e[0].id.as_str()),
            ("porch", "1000-1")
        );
        assert_eq!((e[0].width, e[0].height, e[0].frames), (640, 480, 2));
        let r = e[0].snapshot.as_ref().expect("snapshot");
        assert_eq!((r.ts_ms, r.score), (1100, 0.8));
        assert_eq!(
            o.kept(Some("1000-1")).map(|(_, s)| s.jpeg),
            Some(f2.clone())
        );
        assert_eq!(o.kept(None).map(|(id, _)| id).as_deref(), Some("1000-1"));
        // A worse frame does not replace it; a frame that does not decode keeps none.
        o.frame("m", 1200, &dets(&[(12.0, 0.6)]), &f1);
        assert_eq!(o.kept(Some("1000-1")).map(|(_, s)| s.jpeg), Some(f2));
        o.frame(
            "m",
            1300,
            &dets(&[(400.0, 0.9)]),
            &Bytes::from_static(b"??"),
        );
        assert_eq!(o.report()["snapshots"]["failed"], 1);
        // Another model: the old tracks end.
        let e = o.frame("other", 1400, &dets(&[]), &f1);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].kind, ObjectEventType::Gone);
        assert_eq!(e[0].model, "m");
        let gone = o.end_all(1500, GoneReason::Shutdown);
        assert!(gone.is_empty());
    }
}
