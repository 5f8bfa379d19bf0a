//! Hard examples and corrections (the device's part of the data loop): answers the cascade sent
//! to the hub, or wanted to and could not, are sampled (rate, caps per minute/hour/day) and
//! queued with both models' outputs; a person's correction (`POST /v1/feedback` with the
//! request id and the right label) is queued with the input it corrects. The durable queue
//! delivers them to the hub, which keeps them as a dataset. A request is corrected once: a
//! second correction of it is refused (409), and the first one's input leaves memory.
//!
//! Policy when full: hard examples wait in a bounded channel (`feedback.max_pending`) for the
//! queue's writer; when it is full they are dropped and counted — inference never waits for
//! the disk. A correction is answered only once it is on disk.
//!
//! Shadow samples (`feedback.shadow_enabled`, off by default: the privacy switch): a share of
//! the confident local answers, rate-, count- and byte-limited, is queued the same way (kind
//! `shadow`, the local answer only) for the hub to judge with the cloud model; the caller gets
//! its local answer as usual.
//!
//! Faces: each image leaves through `crate::privacy` (blurred where `[privacy]` applies; an
//! image whose blur failed is dropped and counted there, a correction of it refused).
//!
//! Layout: `config` (`[feedback]`), `sampler` (rate and caps), `shadow` (the shadow samples'
//! rate, count and bytes), `recent` (the requests a person may still correct).

mod config;
mod recent;
mod sampler;
mod shadow;

pub use config::FeedbackConfig;
pub use recent::{ClaimError, Corrected, Recent, Remembered};
pub use sampler::Sampler;
pub use shadow::ShadowSampler;

use crate::hybrid::Answer;
use crate::policy::Reason;
use crate::privacy::{Leaving, Privacy, PrivacyError};
use crate::queue::{Class, Queue, QueueError, Seq};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tandem_shared::answer::Classification;
use tandem_shared::record::{self, ExampleBoxes, ExampleKind, ExampleMeta, Outcome, Record};

/// Why a correction was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The request id is unknown, or too old to be remembered.
    #[error(
        "request `{0}` is unknown or no longer remembered (only the last feedback.recent_requests are kept)"
    )]
    UnknownRequest(String),
    /// The request was corrected already (one correction per request id).
    #[error(
        "request `{request_id}` is already corrected{}: one correction per request",
        seq.map(|s| format!(" (queued as seq {s})")).unwrap_or_else(|| " (being stored)".into())
    )]
    AlreadyCorrected {
        /// The request id.
        request_id: String,
        /// The queue sequence number of the correction, once stored.
        seq: Option<u64>,
    },
    /// The queue refused or failed.
    #[error("the correction could not be stored: {0}")]
    Queue(#[from] QueueError),
    /// The faces in its image could not be blurred: it stays on the device.
    #[error("the correction is not sent: {0}")]
    Privacy(#[from] PrivacyError),
}

/// An example on its way to the queue: its input is scrubbed by the writer.
#[derive(Debug)]
struct Pending {
    meta: ExampleMeta,
    input: Bytes,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct FeedbackStats {
    /// Hard examples handed to the queue.
    pub queued: AtomicU64,
    /// Hard examples dropped because `feedback.max_pending` were already waiting.
    pub dropped: AtomicU64,
    /// Corrections accepted (on disk).
    pub corrections: AtomicU64,
    /// Shadow samples handed to the queue's writer.
    pub shadow: AtomicU64,
}

/// The feedback side of the agent.
#[derive(Debug)]
pub struct Feedback {
    queue: Arc<dyn Queue>,
    cfg: FeedbackConfig,
    sampler: Mutex<(Sampler, u64)>,
    shadow: Mutex<ShadowSampler>,
    recent: Mutex<Recent>,
    tx: tokio::sync::mpsc::Sender<Pending>,
    privacy: Arc<OnceLock<Arc<Privacy>>>,
    stats: Arc<FeedbackStats>,
    wake: Arc<tokio::sync::Notify>,
    /// Cancelled by [`Feedback::flush`]: the writer takes no more, queues what waits, ends.
    closing: tokio_util::sync::CancellationToken,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn outcome(version: &str, p: &Classification) -> Outcome {
    Outcome {
        version: version.to_string(),
        label: p.label.clone(),
        index: p.index,
        score: p.score,
        top_k: p.top_k.iter().map(|s| (s.label.clone(), s.score)).collect(),
    }
}

impl Feedback {
    /// Starts the writer task that hands hard examples to `queue`. Needs a tokio runtime.
    /// `wake` is notified after each record reaches the queue (the delivery loop listens).
    pub fn start(
        queue: Arc<dyn Queue>,
        cfg: FeedbackConfig,
        wake: Arc<tokio::sync::Notify>,
    ) -> Arc<Self> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(cfg.max_pending.max(1));
        let stats = Arc::new(FeedbackStats::default());
        let (q, st, w) = (queue.clone(), stats.clone(), wake.clone());
        let privacy = Arc::new(OnceLock::<Arc<Privacy>>::new());
        let faces = privacy.clone();
        let closing = tokio_util::sync::CancellationToken::new();
        let closed = closing.clone();
        let writer = tokio::spawn(async move {
            loop {
                let payload = tokio::select! {
                    p = rx.recv() => p,
                    () = closed.cancelled(), if !rx.is_closed() => {
                        // Shutdown: refuse new ones, queue the ones already waiting.
                        rx.close();
                        continue;
                    }
                };
                let Some(Pending { meta, input }) = payload else {
                    break;
                };
                let input = match faces.get() {
                    Some(p) if meta.input_kind == "image" => {
                        let path = match meta.kind {
                            ExampleKind::Shadow => Leaving::Shadow,
                            _ => Leaving::HardExample,
                        };
                        match p.scrub(path, &meta.model, input).await {
                            Ok(b) => b,
                            // Counted and logged by the privacy side; dropped here.
                            Err(_) => continue,
                        }
                    }
                    _ => input,
                };
                let payload = record::encode(&Record::Example {
                    meta: Box::new(meta),
                    input: input.to_vec(),
                });
                let q = q.clone();
                let done =
                    tokio::task::spawn_blocking(move || q.append(Class::HardExample, payload))
                        .await;
                match done {
                    Ok(Ok(_)) => {
                        st.queued.fetch_add(1, Ordering::Relaxed);
                        w.notify_one();
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "hard example not queued"),
                    Err(e) => tracing::warn!(error = %e, "hard example writer failed"),
                }
            }
        });
        let seed = now_ms() ^ u64::from(std::process::id()).rotate_left(32) | 1;
        Arc::new(Self {
            queue,
            sampler: Mutex::new((Sampler::new(&cfg), seed)),
            shadow: Mutex::new(ShadowSampler::new(&cfg)),
            recent: Mutex::new(Recent::new(cfg.recent_requests, cfg.recent_max_bytes)),
            cfg,
            tx,
            privacy,
            stats,
            wake,
            closing,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Shutdown: stops taking hard examples and returns once those already waiting are in the
    /// queue (each flushed to disk before the queue accepts it).
    pub async fn flush(&self) {
        self.closing.cancel();
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            let _ = w.await;
        }
    }

    /// Blurs faces in the images of examples and corrections before they are queued (set
    /// once, by the router; a second call is ignored).
    pub fn set_privacy(&self, privacy: Arc<Privacy>) {
        let _ = self.privacy.set(privacy);
    }

    /// The queue records go to.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// Counters since start.
    pub fn stats(&self) -> &FeedbackStats {
        &self.stats
    }

    /// Confident answers not sent as shadow samples (rate, cap or byte budget).
    pub fn shadow_skipped(&self) -> u64 {
        self.shadow.lock().map_or(0, |s| s.skipped)
    }

    /// Answers skipped by the sampler (rate or caps).
    pub fn skipped(&self) -> u64 {
        self.sampler.lock().map_or(0, |s| s.0.skipped)
    }

    /// Sees one answered request: remembers it for corrections and, when it is a hard example
    /// the sampler keeps, queues it. `input`: `("image" | "text", bytes)`; never blocks.
    pub fn observe(&self, answer: &Answer, input: Option<(&'static str, Bytes)>) {
        let Some((kind, bytes)) = input else { return };
        let local = answer
            .local
            .as_ref()
            .and_then(|l| l.predictions.first().map(|p| outcome(&l.version, p)));
        let cloud = answer
            .cloud
            .as_ref()
            .and_then(|c| Some(outcome(&c.version, c.prediction.classification()?)));
        // A detection model's boxes: a hard example carries both sets.
        let boxes = ExampleBoxes {
            local: answer
                .local
                .as_ref()
                .and_then(|l| Some(l.detections.first()?.boxes.clone())),
            cloud: answer
                .cloud
                .as_ref()
                .and_then(|c| Some(c.prediction.detections()?.boxes.clone())),
        };
        let boxes = (boxes.local.is_some() || boxes.cloud.is_some()).then_some(boxes);
        let time_ms = now_ms();
        let reason = serde_json::to_value(answer.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if let Ok(mut r) = self.recent.lock() {
            r.insert(
                answer.request_id.clone(),
                Remembered {
                    model: answer.model.clone(),
                    input_kind: kind,
                    input: bytes.clone(),
                    local: local.clone(),
                    cloud: cloud.clone(),
                    reason: reason.clone(),
                    time_ms,
                },
            );
        }
        let example_kind = match (answer.reason, &answer.cloud, answer.degraded) {
            (Reason::LowConfidence, Some(_), _) => ExampleKind::Hard,
            (
                Reason::HubUnreachable
                | Reason::HubBusy
                | Reason::HubTimeout
                | Reason::HubError
                | Reason::Deadline,
                None,
                true,
            ) => ExampleKind::Degraded,
            (Reason::Confident, None, false) if local.is_some() && self.cfg.shadow_enabled => {
                ExampleKind::Shadow
            }
            _ => return,
        };
        if !self.cfg.enabled {
            return;
        }
        let Ok(mut sampler) = self.sampler.lock() else {
            return;
        };
        // xorshift64: a uniform draw without a dependency.
        let mut x = sampler.1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sampler.1 = x;
        let draw = (x >> 11) as f64 / (1u64 << 53) as f64;
        let keep = match example_kind {
            ExampleKind::Shadow => self
                .shadow
                .lock()
                .is_ok_and(|mut s| s.take(time_ms, draw, bytes.len() as u64)),
            _ => sampler.0.take(time_ms, draw),
        };
        drop(sampler);
        if !keep {
            return;
        }
        let sent = self.tx.try_send(Pending {
            meta: ExampleMeta {
                kind: example_kind,
                request_id: answer.request_id.clone(),
                model: answer.model.clone(),
                time_ms,
                input_kind: kind.to_string(),
                reason,
                local,
                cloud,
                label: None,
                boxes,
            },
            input: bytes,
        });
        if sent.is_ok() && example_kind == ExampleKind::Shadow {
            self.stats.shadow.fetch_add(1, Ordering::Relaxed);
        }
        if sent.is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(model = %answer.model, "hard example dropped: feedback.max_pending are waiting");
        }
    }

    /// The model a remembered request ran on.
    pub fn model_of(&self, request_id: &str) -> Option<String> {
        self.recent
            .lock()
            .ok()?
            .get(request_id)
            .map(|r| r.model.clone())
    }

    /// Queues a person's correction of request `request_id`; returns once it is on disk. A
    /// request is corrected once: the second time is [`FeedbackError::AlreadyCorrected`].
    pub async fn correct(&self, request_id: &str, label: &str) -> Result<Seq, FeedbackError> {
        let claimed = match self.recent.lock() {
            Ok(mut g) => g.claim(request_id),
            Err(_) => Err(ClaimError::Unknown),
        };
        let r = claimed.map_err(|e| match e {
            ClaimError::Unknown => FeedbackError::UnknownRequest(request_id.to_string()),
            ClaimError::Taken(c) => FeedbackError::AlreadyCorrected {
                request_id: request_id.to_string(),
                seq: match c {
                    Corrected::Pending => None,
                    Corrected::Stored(s) => Some(s),
                },
            },
        })?;
        let input = match self.privacy.get() {
            Some(p) if r.input_kind == "image" => {
                p.scrub(Leaving::Correction, &r.model, r.input.clone())
                    .await
            }
            _ => Ok(r.input.clone()),
        };
        let stored = match input {
            Ok(input) => {
                let payload = record::encode(&Record::Example {
                    meta: Box::new(ExampleMeta {
                        kind: ExampleKind::Correction,
                        request_id: request_id.to_string(),
                        model: r.model,
                        time_ms: r.time_ms,
                        input_kind: r.input_kind.to_string(),
                        reason: r.reason,
                        local: r.local,
                        cloud: r.cloud,
                        label: Some(label.to_string()),
                        boxes: None,
                    }),
                    input: input.to_vec(),
                });
                let q = self.queue.clone();
                tokio::task::spawn_blocking(move || q.append(Class::Correction, payload))
                    .await
                    .map_err(|_| FeedbackError::Queue(QueueError::Closed))
                    .and_then(|r| r.map_err(FeedbackError::Queue))
            }
            Err(e) => Err(FeedbackError::Privacy(e)),
        };
        if let Ok(mut g) = self.recent.lock() {
            match &stored {
                Ok(seq) => g.settle(request_id, *seq),
                Err(_) => g.release(request_id),
            }
        }
        let seq = stored?;
        self.stats.corrections.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(seq)
    }
}
