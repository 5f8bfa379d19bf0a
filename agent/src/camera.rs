//! Frame streams, one per camera: frames posted in order to
//! `POST /v1/cameras/{camera}/frames/{model}` wait in a bounded queue that one task per camera
//! drains through the hybrid router. With a detection model, each answer goes through the
//! camera's object tracker ([`crate::track`]): its events go to the object sink (MQTT), and the
//! best frame of each track is kept for `GET /v1/cameras/{camera}/events/{id}/snapshot.jpg`.
//!
//! Policy (`[cameras]`): `queue_frames` frames per camera; when inference falls behind, `drop`
//! says which frame goes (`oldest`: a camera wants the newest picture, not a backlog;
//! `newest`: the posted frame), counted. `max_cameras` cameras (the next new one is refused
//! with 503 and `retry-after`); camera ids are 1-64 characters of `[A-Za-z0-9_.-]`, so they go
//! into metric labels and URL paths as they are. `GET /v1/cameras/{camera}` reports the
//! counters, the tracks and the latest answer; [`Cameras::telemetry`] lists the streams for
//! MQTT telemetry (the hub's fleet view); `/metrics` has
//! `tandem_camera_frames_total{camera,outcome}` and
//! `tandem_camera_object_events_total{camera,type}`.
//!
//! Shutdown ([`Cameras::shutdown`], after the local API stops taking requests): each camera
//! task finishes the frame in flight, counts the frames still waiting as `shutdown`, ends its
//! live tracks (`gone`, `reason: shutdown`) and returns; new frames are refused (503).

use crate::hybrid::Router;
use crate::track::snapshot::Kept;
use crate::track::{CameraObjects, CamerasConfig, DropPolicy};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_engine::Input;
use tandem_engine::preprocess::image::Limits;
use tandem_shared::mqtt::{CameraTelemetry, GoneReason, ObjectEvent, ObjectEventType};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where object events go (the MQTT side; must not block).
pub type ObjectSink = Arc<dyn Fn(&ObjectEvent) + Send + Sync>;

/// Why a frame is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CameraError {
    /// The id has characters outside `[A-Za-z0-9_.-]` or is empty / over 64.
    #[error("camera id `{0}` must be 1-64 characters of A-Z a-z 0-9 _ . -")]
    BadId(String),
    /// `cameras.max_cameras` streams exist already.
    #[error("{0} cameras stream already (the limit); this one is refused")]
    TooMany(usize),
    /// The agent is shutting down.
    #[error("the agent is stopping: camera streams take no more frames")]
    Stopping,
    /// No frame was ever posted for this camera (since the agent started).
    #[error(
        "camera `{0}` has posted no frame since the agent started: no stream is linked to it \
         (POST /v1/cameras/{0}/frames/{{model}})"
    )]
    NoStream(String),
    /// The camera's stream keeps no such snapshot.
    #[error("{}", no_snapshot(.camera, .track.as_deref()))]
    NoSnapshot {
        /// The camera.
        camera: String,
        /// The track asked for (`None`: any).
        track: Option<String>,
    },
}

fn no_snapshot(camera: &str, track: Option<&str>) -> String {
    match track {
        Some(t) => format!(
            "camera `{camera}` keeps no snapshot of track `{t}` (unknown, or evicted: \
             [cameras.snapshots])"
        ),
        None => format!(
            "camera `{camera}` has no snapshot yet: no object has been tracked in its frames \
             (a detection model, [cameras.tracker] min_hits frames in a row), or all were evicted"
        ),
    }
}

/// One waiting frame.
#[derive(Debug)]
struct Frame {
    seq: u64,
    ts_ms: u64,
    model: String,
    image: Bytes,
}

/// Counters, queue and objects of one camera.
#[derive(Debug)]
pub struct Stream {
    queue: Mutex<VecDeque<Frame>>,
    ready: Notify,
    received: AtomicU64,
    processed: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    shutdown: AtomicU64,
    events: [AtomicU64; 3],
    latest: Mutex<Option<Value>>,
    /// The model of the frame posted last.
    model: Mutex<String>,
    objects: Arc<Mutex<CameraObjects>>,
}

fn kind_index(k: ObjectEventType) -> usize {
    match k {
        ObjectEventType::Appeared => 0,
        ObjectEventType::Updated => 1,
        ObjectEventType::Gone => 2,
    }
}

impl Stream {
    fn new(camera: &str, cfg: &CamerasConfig, limits: Limits) -> Self {
        Self {
            queue: Mutex::new(VecDeque::with_capacity(cfg.queue_frames)),
            ready: Notify::new(),
            received: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shutdown: AtomicU64::new(0),
            events: Default::default(),
            latest: Mutex::new(None),
            model: Mutex::new(String::new()),
            objects: Arc::new(Mutex::new(CameraObjects::new(camera, cfg, limits))),
        }
    }

    /// Queues a frame, dropping one per `drop` when full; returns (seq, which was dropped).
    fn push(&self, cfg: &CamerasConfig, frame: Frame) -> Option<DropPolicy> {
        let mut dropped = None;
        if let Ok(mut q) = self.queue.lock() {
            if q.len() >= cfg.queue_frames {
                dropped = Some(cfg.drop);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if cfg.drop == DropPolicy::Newest {
                    return dropped;
                }
                q.pop_front();
            }
            q.push_back(frame);
        }
        self.ready.notify_one();
        dropped
    }

    fn pop(&self) -> Option<Frame> {
        self.queue.lock().ok().and_then(|mut q| q.pop_front())
    }

    fn queued(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Counters, queue depth, tracks and the latest answer as JSON.
    pub fn report(&self, camera: &str) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "camera": camera,
            "received": n(&self.received),
            "processed": n(&self.processed),
            "dropped": n(&self.dropped),
            "failed": n(&self.failed),
            "shutdown": n(&self.shutdown),
            "queued": self.queued(),
            "object_events": {
                "appeared": n(&self.events[0]),
                "updated": n(&self.events[1]),
                "gone": n(&self.events[2]),
            },
            "tracks": self.objects.lock().map(|o| o.report()).unwrap_or(Value::Null),
            "latest": self.latest.lock().ok().and_then(|l| l.clone()),
        })
    }
}

/// What every camera task shares.
struct Shared {
    cfg: CamerasConfig,
    limits: Limits,
    sink: RwLock<Option<ObjectSink>>,
    stop: CancellationToken,
    /// The device clock at start, and a monotonic clock from there: frame times never go back.
    epoch: (Instant, u64),
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.1 + self.epoch.0.elapsed().as_millis() as u64
    }

    fn publish(&self, stream: &Stream, events: Vec<ObjectEvent>) {
        let sink = self.sink.read().ok().and_then(|s| s.clone());
        for e in events {
            stream.events[kind_index(e.kind)].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(camera = %e.camera, id = %e.id, label = %e.label, kind = ?e.kind, "object event");
            if let Some(s) = &sink {
                s(&e);
            }
        }
    }
}

/// Every camera's stream.
pub struct Cameras {
    shared: Arc<Shared>,
    streams: Mutex<BTreeMap<String, Arc<Stream>>>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Cameras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cameras")
            .field("cfg", &self.shared.cfg)
            .finish_non_exhaustive()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Cameras {
    /// No stream yet; `limits` bound the decoding of frames kept as snapshots.
    pub fn new(cfg: CamerasConfig, limits: Limits) -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            shared: Arc::new(Shared {
                cfg,
                limits,
                sink: RwLock::new(None),
                stop: CancellationToken::new(),
                epoch: (Instant::now(), wall),
            }),
            streams: Mutex::new(BTreeMap::new()),
            tasks: TaskTracker::new(),
        }
    }

    /// Where object events go from now on (`None`: counted only).
    pub fn set_sink(&self, sink: Option<ObjectSink>) {
        if let Ok(mut s) = self.shared.sink.write() {
            *s = sink;
        }
    }

    /// Queues a frame for `camera`, starting its task on the first frame; returns the
    /// stream's report after the push, with this frame's `seq`.
    pub fn post(
        &self,
        router: &Arc<Router>,
        camera: &str,
        model: &str,
        image: Bytes,
    ) -> Result<Value, CameraError> {
        if !valid_id(camera) {
            return Err(CameraError::BadId(camera.chars().take(80).collect()));
        }
        if self.shared.stop.is_cancelled() {
            return Err(CameraError::Stopping);
        }
        let cfg = &self.shared.cfg;
        let stream = {
            let mut all = self.streams.lock().map_err(|_| CameraError::Stopping)?;
            match all.get(camera) {
                Some(s) => s.clone(),
                None => {
                    if all.len() >= cfg.max_cameras {
                        return Err(CameraError::TooMany(cfg.max_cameras));
                    }
                    let s = Arc::new(Stream::new(camera, cfg, self.shared.limits));
                    all.insert(camera.to_string(), s.clone());
                    self.tasks.spawn(drain(
                        self.shared.clone(),
                        router.clone(),
                        camera.to_string(),
                        s.clone(),
                    ));
                    s
                }
            }
        };
        if let Ok(mut m) = stream.model.lock()
            && *m != model
        {
            *m = model.to_string();
        }
        let seq = stream.received.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = Frame {
            seq,
            ts_ms: self.shared.now_ms(),
            model: model.to_string(),
            image,
        };
        let dropped = stream.push(cfg, frame);
        let mut r = stream.report(camera);
        r["seq"] = json!(seq);
        r["dropped_oldest"] = json!(dropped == Some(DropPolicy::Oldest));
        r["dropped_newest"] = json!(dropped == Some(DropPolicy::Newest));
        Ok(r)
    }

    /// The stream of `camera`, if it has posted a frame.
    pub fn get(&self, camera: &str) -> Option<Arc<Stream>> {
        self.streams.lock().ok()?.get(camera).cloned()
    }

    /// The kept snapshot of `track` of `camera` (without `track`: the one stored last), as it
    /// is on the device (not blurred yet: [`crate::track::request`] sends it).
    pub fn snapshot(&self, camera: &str, track: Option<&str>) -> Result<Kept, CameraError> {
        if !valid_id(camera) {
            return Err(CameraError::BadId(camera.chars().take(80).collect()));
        }
        let s = self
            .get(camera)
            .ok_or_else(|| CameraError::NoStream(camera.to_string()))?;
        let o = s.objects.lock().map_err(|_| CameraError::Stopping)?;
        o.kept(track)
            .map(|(id, snap)| Kept {
                track: id,
                model: o.model().to_string(),
                snap,
            })
            .ok_or_else(|| CameraError::NoSnapshot {
                camera: camera.to_string(),
                track: track.map(str::to_string),
            })
    }

    /// Stops every camera task: each finishes its frame in flight, counts the waiting ones
    /// (`shutdown`), ends its tracks (`gone`) and returns. New frames are refused from now on.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Every camera with a stream, in id order, for telemetry.
    pub fn telemetry(&self) -> Vec<CameraTelemetry> {
        let Ok(all) = self.streams.lock() else {
            return Vec::new();
        };
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        all.iter()
            .map(|(id, s)| CameraTelemetry {
                id: id.clone(),
                model: s.model.lock().map(|m| m.clone()).unwrap_or_default(),
                received: n(&s.received),
                processed: n(&s.processed),
                dropped: n(&s.dropped),
                snapshots: s.objects.lock().map_or(0, |o| o.kept_count() as u64),
            })
            .collect()
    }

    /// `tandem_camera_frames_total{camera,outcome}` and
    /// `tandem_camera_object_events_total{camera,type}` for `/metrics`.
    pub fn render(&self, text: &mut String) {
        let Ok(all) = self.streams.lock() else { return };
        if all.is_empty() {
            return;
        }
        text.push_str("# HELP tandem_camera_frames_total Camera frames by outcome (dropped: when inference fell behind, per cameras.drop; shutdown: waiting when the agent stopped).\n");
        text.push_str("# TYPE tandem_camera_frames_total counter\n");
        for (camera, s) in all.iter() {
            for (outcome, n) in [
                ("received", &s.received),
                ("processed", &s.processed),
                ("dropped", &s.dropped),
                ("failed", &s.failed),
                ("shutdown", &s.shutdown),
            ] {
                text.push_str(&format!(
                    "tandem_camera_frames_total{{camera=\"{camera}\",outcome=\"{outcome}\"}} {}\n",
                    n.load(Ordering::Relaxed)
                ));
            }
        }
        text.push_str("# HELP tandem_camera_object_events_total Object events from the camera's tracker, by type.\n");
        text.push_str("# TYPE tandem_camera_object_events_total counter\n");
        for (camera, s) in all.iter() {
            for (kind, n) in ["appeared", "updated", "gone"].iter().zip(&s.events) {
                text.push_str(&format!(
                    "tandem_camera_object_events_total{{camera=\"{camera}\",type=\"{kind}\"}} {}\n",
                    n.load(Ordering::Relaxed)
                ));
            }
        }
    }
}

/// One camera's consumer: frames in order through the router, detections through the
/// tracker; between frames, tracks that ran out of time end; on shutdown, the rest.
async fn drain(shared: Arc<Shared>, router: Arc<Router>, camera: String, stream: Arc<Stream>) {
    loop {
        let Some(frame) = stream.pop() else {
            let wait = stream
                .objects
                .lock()
                .ok()
                .and_then(|o| o.next_deadline_ms())
                .map(|d| Duration::from_millis(d.saturating_sub(shared.now_ms())));
            tokio::select! {
                () = shared.stop.cancelled() => break,
                () = stream.ready.notified() => {}
                () = sleep_or_never(wait) => {
                    let objects = stream.objects.clone();
                    let now = shared.now_ms();
                    let events = objects.lock().map(|mut o| o.expire(now)).unwrap_or_default();
                    shared.publish(&stream, events);
                }
            }
            continue;
        };
        if shared.stop.is_cancelled() {
            stream.shutdown.fetch_add(1, Ordering::Relaxed);
            break;
        }
        process(&shared, &router, &stream, frame).await;
    }
    let waiting = std::iter::from_fn(|| stream.pop()).count() as u64;
    stream.shutdown.fetch_add(waiting, Ordering::Relaxed);
    let now = shared.now_ms();
    let events = stream
        .objects
        .lock()
        .map(|mut o| o.end_all(now, GoneReason::Shutdown))
        .unwrap_or_default();
    shared.publish(&stream, events);
    tracing::debug!(camera, "camera stream stopped");
}

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// One frame: the answer kept as the latest; with a detection model, its boxes tracked.
async fn process(shared: &Arc<Shared>, router: &Arc<Router>, stream: &Arc<Stream>, frame: Frame) {
    let image = frame.image.clone();
    let answer = match router
        .classify(&frame.model, Input::Images(vec![frame.image]), None)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, seq = frame.seq, "camera frame failed");
            stream.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut v = serde_json::to_value(answer.body()).unwrap_or_default();
    v["seq"] = json!(frame.seq);
    v["model"] = json!(frame.model);
    if let Ok(mut l) = stream.latest.lock() {
        *l = Some(v);
    }
    stream.processed.fetch_add(1, Ordering::Relaxed);
    let tracked = shared.cfg.tracker.enabled && router.detects(&frame.model) == Some(true);
    // The boxes answered: the hub's for an offloaded frame (the cascade), else the device's.
    let Some(dets) = answer.detections().filter(|_| tracked).cloned() else {
        return;
    };
    let objects = stream.objects.clone();
    let (model, ts) = (frame.model, frame.ts_ms);
    // JPEG encoding of a PNG or raw frame that became a track's best runs off the reactor.
    let events = tokio::task::spawn_blocking(move || {
        objects
            .lock()
            .map(|mut o| o.frame(&model, ts, &dets, &image))
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    shared.publish(stream, events);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Frame {
        Frame {
            seq,
            ts_ms: 0,
            model: "m".into(),
            image: Bytes::new(),
        }
    }

    fn limits() -> Limits {
        Limits::from(&tandem_engine::settings::ImageConfig::default())
    }

    #[test]
    fn a_full_queue_drops_per_policy_and_counts_it() {
        for (drop, left) in [
            (DropPolicy::Oldest, vec![7, 8, 9, 10]),
            (DropPolicy::Newest, vec![1, 2, 3, 4]),
        ] {
            let cfg = CamerasConfig {
                drop,
                ..Default::default()
            };
            let s = Stream::new("c", &cfg, limits());
            for i in 1..=10 {
                s.received.fetch_add(1, Ordering::Relaxed);
                s.push(&cfg, frame(i));
            }
            assert_eq!(s.dropped.load(Ordering::Relaxed), 6);
            let got: Vec<u64> = std::iter::from_fn(|| s.pop()).map(|f| f.seq).collect();
            assert_eq!(got, left, "{drop:?}");
            assert_eq!(s.report("c")["received"], 10);
        }
    }

    #[test]
    fn camera_ids_are_label_safe() {
        assert!(valid_id("front-door_1.cam"));
        assert!(!valid_id(""));
        assert!(!valid_id("a\"b"));
        assert!(!valid_id(&"x".repeat(65)));
    }
}
