//! Frame streams, one per camera: frames posted in order to
//! `POST /v1/cameras/{camera}/frames/{model}` wait in a bounded queue that one task per camera
//! drains through the hybrid router; when inference falls behind, the oldest waiting frame is
//! dropped (a camera wants the newest picture, not a backlog) and counted.
//!
//! Policy: [`QUEUE_FRAMES`] frames per camera, [`MAX_CAMERAS`] cameras (the next new one is
//! refused with 503 and `retry-after`); camera ids are 1-64 characters of `[A-Za-z0-9_.-]`, so they go into
//! metric labels as they are. `GET /v1/cameras/{camera}` reports the counters and the latest
//! answer; `/metrics` has `tandem_camera_frames_total{camera,outcome}`.

use crate::hybrid::Router;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tandem_engine::Input;
use tokio::sync::Notify;

/// Frames waiting per camera before the oldest is dropped.
pub const QUEUE_FRAMES: usize = 4;
/// Cameras with a stream at once.
pub const MAX_CAMERAS: usize = 64;

/// Why a frame is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CameraError {
    /// The id has characters outside `[A-Za-z0-9_.-]` or is empty / over 64.
    #[error("camera id `{0}` must be 1-64 characters of A-Z a-z 0-9 _ . -")]
    BadId(String),
    /// [`MAX_CAMERAS`] streams exist already.
    #[error("{0} cameras stream already (the limit); this one is refused")]
    TooMany(usize),
}

/// One waiting frame.
#[derive(Debug)]
struct Frame {
    seq: u64,
    model: String,
    image: Bytes,
}

/// Counters and queue of one camera.
#[derive(Debug, Default)]
pub struct Stream {
    queue: Mutex<VecDeque<Frame>>,
    ready: Notify,
    received: AtomicU64,
    processed: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    latest: Mutex<Option<Value>>,
}

impl Stream {
    /// Queues a frame, dropping the oldest when full; returns (seq, dropped now).
    fn push(&self, model: &str, image: Bytes) -> (u64, bool) {
        let seq = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        let mut dropped = false;
        if let Ok(mut q) = self.queue.lock() {
            if q.len() >= QUEUE_FRAMES {
                q.pop_front();
                dropped = true;
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(Frame {
                seq,
                model: model.to_string(),
                image,
            });
        }
        self.ready.notify_one();
        (seq, dropped)
    }

    fn pop(&self) -> Option<Frame> {
        self.queue.lock().ok().and_then(|mut q| q.pop_front())
    }

    fn queued(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Counters, queue depth and the latest answer as JSON.
    pub fn report(&self, camera: &str) -> Value {
        json!({
            "camera": camera,
            "received": self.received.load(Ordering::Relaxed),
            "processed": self.processed.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "queued": self.queued(),
            "queue_frames": QUEUE_FRAMES,
            "latest": self.latest.lock().ok().and_then(|l| l.clone()),
        })
    }
}

/// Every camera's stream.
#[derive(Debug, Default)]
pub struct Cameras {
    streams: Mutex<BTreeMap<String, Arc<Stream>>>,
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Cameras {
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
        let stream = {
            let mut all = self
                .streams
                .lock()
                .map_err(|_| CameraError::TooMany(MAX_CAMERAS))?;
            match all.get(camera) {
                Some(s) => s.clone(),
                None => {
                    if all.len() >= MAX_CAMERAS {
                        return Err(CameraError::TooMany(MAX_CAMERAS));
                    }
                    let s = Arc::new(Stream::default());
                    all.insert(camera.to_string(), s.clone());
                    tokio::spawn(drain(router.clone(), s.clone()));
                    s
                }
            }
        };
        let (seq, dropped) = stream.push(model, image);
        let mut r = stream.report(camera);
        r["seq"] = json!(seq);
        r["dropped_oldest"] = json!(dropped);
        Ok(r)
    }

    /// The stream of `camera`, if it has posted a frame.
    pub fn get(&self, camera: &str) -> Option<Arc<Stream>> {
        self.streams.lock().ok()?.get(camera).cloned()
    }

    /// `tandem_camera_frames_total{camera,outcome}` for `/metrics`.
    pub fn render(&self, text: &mut String) {
        let Ok(all) = self.streams.lock() else { return };
        if all.is_empty() {
            return;
        }
        text.push_str("# HELP tandem_camera_frames_total Camera frames by outcome (dropped: the oldest waiting frame, when inference fell behind).\n");
        text.push_str("# TYPE tandem_camera_frames_total counter\n");
        for (camera, s) in all.iter() {
            for (outcome, n) in [
                ("received", &s.received),
                ("processed", &s.processed),
                ("dropped", &s.dropped),
                ("failed", &s.failed),
            ] {
                text.push_str(&format!(
                    "tandem_camera_frames_total{{camera=\"{camera}\",outcome=\"{outcome}\"}} {}\n",
                    n.load(Ordering::Relaxed)
                ));
            }
        }
    }
}

/// One camera's consumer: frames in order through the router; the latest answer kept.
async fn drain(router: Arc<Router>, stream: Arc<Stream>) {
    loop {
        let Some(frame) = stream.pop() else {
            stream.ready.notified().await;
            continue;
        };
        match router
            .classify(&frame.model, Input::Images(vec![frame.image]), None)
            .await
        {
            Ok(answer) => {
                let mut v = Value::Object(answer.to_json());
                v["seq"] = json!(frame.seq);
                v["model"] = json!(frame.model);
                if let Ok(mut l) = stream.latest.lock() {
                    *l = Some(v);
                }
                stream.processed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, seq = frame.seq, "camera frame failed");
                stream.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let s = Stream::default();
        for i in 0..10u8 {
            s.push("m", Bytes::from(vec![i]));
        }
        assert_eq!(s.dropped.load(Ordering::Relaxed), 6);
        let left: Vec<u64> = std::iter::from_fn(|| s.pop()).map(|f| f.seq).collect();
        assert_eq!(left, vec![7, 8, 9, 10]);
        assert_eq!(s.report("c")["received"], 10);
    }

    #[test]
    fn camera_ids_are_label_safe() {
        assert!(valid_id("front-door_1.cam"));
        assert!(!valid_id(""));
        assert!(!valid_id("a\"b"));
        assert!(!valid_id(&"x".repeat(65)));
    }
}
