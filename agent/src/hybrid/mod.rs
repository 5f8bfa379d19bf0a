//! The hybrid path: run the local variant, ask the routing policy, offload to the hub when it
//! says so, and never fail a request the local variant answered: any hub failure returns the
//! local answer marked `degraded` with its reason. A model with no local variant, or a request
//! the local queue had no room for, goes to the hub directly; only then can a hub failure
//! reach the caller (as [`RouteError::Hub`]).
//!
//! Layout: `config` (`[policy]`), `answer` (the routed answer and its JSON), `boxes` (a
//! detection model's frame signals), `offload` (asking the hub for its typed prediction),
//! `remote` (models only the hub runs),
//! `thresholds` (thresholds set at run time, kept across restarts).

mod answer;
mod boxes;
mod config;
mod offload;
mod remote;
pub mod thresholds;

pub use answer::{Answer, AnswerBody, CloudAnswer, RoutedBoxes};
pub use config::{ModelPolicyConfig, PolicyConfig};
pub use offload::{Ask, OLD_HUB};
pub use remote::RemoteModel;

use crate::policy::{self, Context, Decision, Local, Mode, ModelPolicy, Reason};
use crate::privacy::Leaving;
use crate::uplink::Uplink;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tandem_engine::{Engine, InferenceError, Input};
use tandem_shared::manifest::{Preprocess, Signal, VariantRole};
use tandem_shared::mqtt::args::check_threshold;
use tandem_shared::mqtt::{ThresholdSource, ThresholdView};
use tandem_shared::wire;
use tracing::Instrument as _;

/// Why a request got no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The local engine refused or failed (unknown model, bad input, queue full, ...).
    #[error(transparent)]
    Local(#[from] InferenceError),
    /// There was no local answer and the hub did not give one.
    #[error("model `{model}`: no local answer ({why}) and the hub did not answer: {reason:?}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Hub {
        /// Model.
        model: String,
        /// Why the device had no answer of its own.
        why: &'static str,
        /// What happened with the hub.
        reason: Reason,
        /// The hub's error, when known.
        detail: Option<String>,
    },
}

/// Runs requests through the local engine and, per policy, the hub.
#[derive(Debug)]
pub struct Router {
    engine: Arc<Engine>,
    uplink: Option<Arc<Uplink>>,
    config: RwLock<PolicyConfig>,
    remote: BTreeMap<String, RemoteModel>,
    feedback: Option<Arc<crate::feedback::Feedback>>,
    next_id: AtomicU64,
    counters: Arc<crate::telemetry::AgentCounters>,
    models: Option<Arc<crate::models::Manager>>,
    labels: BTreeMap<String, String>,
    device: String,
    privacy: Option<Arc<crate::privacy::Privacy>>,
    thresholds: thresholds::Overrides,
}

/// How an offload attempt ended, when it gave no answer.
struct Missed {
    reason: Reason,
    detail: Option<String>,
}

impl Router {
    /// A router over an engine and, when configured, a hub link.
    pub fn new(engine: Arc<Engine>, uplink: Option<Arc<Uplink>>, config: PolicyConfig) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            engine,
            uplink,
            config: RwLock::new(config),
            remote: BTreeMap::new(),
            feedback: None,
            next_id: AtomicU64::new(seed | 1),
            counters: Arc::default(),
            models: None,
            labels: BTreeMap::new(),
            device: String::new(),
            privacy: None,
            thresholds: thresholds::Overrides::in_memory(),
        }
    }

    /// Keeps thresholds set at run time in this store (`policy.thresholds_file`).
    pub fn with_thresholds(mut self, thresholds: thresholds::Overrides) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Sets `model`'s threshold at run time (`set_threshold`) and keeps it across restarts:
    /// durable before it is in force. The value must be in the range of the signal in force.
    pub fn set_threshold(
        &self,
        model: &str,
        threshold: f32,
        signal: Option<Signal>,
        source: ThresholdSource,
    ) -> Result<(), String> {
        if self.engine.model(model).is_none() && !self.remote.contains_key(model) {
            return Err(format!("model `{model}` is not served here"));
        }
        let effective = signal.unwrap_or_else(|| self.policy(model).signal);
        check_threshold(Some(effective), threshold).map_err(|e| e.to_string())?;
        let set_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let value = thresholds::Override {
            threshold,
            signal,
            source,
            set_ms,
        };
        self.thresholds
            .set(model, value)
            .map_err(|e| format!("not kept: {e}"))?;
        tracing::info!(
            model,
            threshold,
            ?signal,
            source = source.as_str(),
            "routing threshold set"
        );
        Ok(())
    }

    /// The thresholds in force of the classification models served here (telemetry,
    /// `/metrics`).
    pub fn thresholds(&self) -> BTreeMap<String, ThresholdView> {
        self.engine
            .models()
            .filter(|m| m.files.variant.detection.is_none())
            .map(|m| (m.name().to_string(), self.threshold_view(m.name())))
            .collect()
    }

    /// `model`'s threshold in force, its signal and where it comes from.
    pub fn threshold_view(&self, model: &str) -> ThresholdView {
        let p = self.policy(model);
        let source = if let Some(o) = self.thresholds.get(model) {
            o.source
        } else if self
            .config
            .read()
            .ok()
            .and_then(|c| c.models.get(model).and_then(|m| m.threshold))
            .is_some()
        {
            ThresholdSource::Operator
        } else {
            ThresholdSource::Manifest
        };
        ThresholdView {
            threshold: p.threshold,
            signal: p.signal,
            source,
        }
    }

    /// Blurs faces in the images that leave the device (`[privacy]`), offloads and feedback.
    pub fn with_privacy(mut self, privacy: Arc<crate::privacy::Privacy>) -> Self {
        if let Some(f) = &self.feedback {
            f.set_privacy(privacy.clone());
        }
        self.privacy = Some(privacy);
        self
    }

    /// The face blur every image leaving the device goes through, when configured.
    pub fn privacy(&self) -> Option<&Arc<crate::privacy::Privacy>> {
        self.privacy.as_ref()
    }

    /// The device's labels (`[labels]` in the config), reported in its status.
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// The device's name (its certificate's CN), carried by every request's log span.
    pub fn with_device(mut self, device: String) -> Self {
        self.device = device;
        self
    }

    /// The device's labels.
    pub fn labels_of_device(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Installs model updates the hub orders (`update_model`) with this manager.
    pub fn with_models(mut self, models: Arc<crate::models::Manager>) -> Self {
        self.models = Some(models);
        self
    }

    /// The model manager, when updates are on (`models.trusted_key` and a hub link).
    pub fn models(&self) -> Option<&Arc<crate::models::Manager>> {
        self.models.as_ref()
    }

    /// Adds models only the hub runs (see `remote`); ignored without a hub link.
    pub fn with_remote(mut self, remote: BTreeMap<String, RemoteModel>) -> Self {
        if self.uplink.is_some() {
            self.remote = remote;
        }
        self
    }

    /// Keeps hard examples and remembers requests for corrections (see `feedback`).
    pub fn with_feedback(mut self, feedback: Arc<crate::feedback::Feedback>) -> Self {
        self.feedback = Some(feedback);
        self
    }

    /// The feedback side, when the agent keeps one.
    pub fn feedback(&self) -> Option<&Arc<crate::feedback::Feedback>> {
        self.feedback.as_ref()
    }

    /// The labels of `model` (the local variant's, else the hub's), if it is served here.
    pub fn labels(&self, model: &str) -> Option<&[String]> {
        match self.engine.model(model) {
            Some(h) => Some(&h.files.labels),
            None => self.remote.get(model).map(|r| r.labels.as_slice()),
        }
    }

    /// Finds the remote-only models among `names` in `models_dir` (all when `names` is empty).
    pub fn discover_remote(
        models_dir: &std::path::Path,
        names: &[String],
        local: VariantRole,
    ) -> BTreeMap<String, RemoteModel> {
        remote::discover(models_dir, names, local)
    }

    /// Whether `name` in `models_dir` has no `local` variant but a cloud one.
    pub fn is_remote_only(models_dir: &std::path::Path, name: &str, local: VariantRole) -> bool {
        remote::remote_only(models_dir, name, local)
    }

    /// The route mix, MQTT counters and event sampling (`/metrics`, MQTT telemetry).
    pub fn counters(&self) -> &Arc<crate::telemetry::AgentCounters> {
        &self.counters
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The hub link, when configured.
    pub fn uplink(&self) -> Option<&Arc<Uplink>> {
        self.uplink.as_ref()
    }

    /// Models only the hub runs.
    pub fn remote(&self) -> &BTreeMap<String, RemoteModel> {
        &self.remote
    }

    /// How `model` reads its input (the local variant's, else the hub's), if it is served here.
    pub fn preprocess(&self, model: &str) -> Option<&Preprocess> {
        match self.engine.model(model) {
            Some(h) => Some(&h.files.variant.preprocess),
            None => self
                .remote
                .get(model)?
                .manifest
                .variants
                .get(&VariantRole::Cloud)
                .map(|v| &v.preprocess),
        }
    }

    /// Whether `model` is a detection model (its variant declares a `detection` block).
    pub fn detects(&self, model: &str) -> Option<bool> {
        match self.engine.model(model) {
            Some(h) => Some(h.files.variant.detection.is_some()),
            None => Some(
                self.remote
                    .get(model)?
                    .manifest
                    .variants
                    .get(&VariantRole::Cloud)?
                    .detection
                    .is_some(),
            ),
        }
    }

    /// The policy configuration now in force.
    pub fn policy_config(&self) -> PolicyConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the whole routing policy (a reloaded config): changes made by commands since
    /// are dropped, the file wins.
    pub fn set_policy_config(&self, config: PolicyConfig) {
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(_) => tracing::error!("policy lock poisoned: routing policy not reloaded"),
        }
    }

    /// Changes the routing of one model (or the default, `model = None`) at run time. Keys left
    /// `None` keep their value. The threshold must be in the range of the signal in force
    /// (`tandem_shared::mqtt::args`).
    pub fn update_policy(
        &self,
        model: Option<&str>,
        mode: Option<Mode>,
        signal: Option<Signal>,
        threshold: Option<f32>,
    ) -> Result<PolicyConfig, String> {
        if let (Some(name), Some(t)) = (model, threshold) {
            // The range of the signal that will be in force: the one named, else the model's.
            let effective = signal.unwrap_or_else(|| self.policy(name).signal);
            check_threshold(Some(effective), t).map_err(|e| e.to_string())?;
        }
        let mut c = self
            .config
            .write()
            .map_err(|_| "policy lock poisoned".to_string())?;
        match model {
            None => {
                if signal.is_some() || threshold.is_some() {
                    return Err("signal and threshold are per model: name the model".into());
                }
                if let Some(m) = mode {
                    c.mode = m;
                }
            }
            Some(name) => {
                if self.engine.model(name).is_none() && !self.remote.contains_key(name) {
                    return Err(format!("model `{name}` is not served here"));
                }
                let e = c.models.entry(name.to_string()).or_default();
                e.mode = mode.or(e.mode);
                e.signal = signal.or(e.signal);
                e.threshold = threshold.or(e.threshold);
            }
        }
        tracing::info!(
            model = model.unwrap_or("*"),
            ?mode,
            ?signal,
            ?threshold,
            "routing policy changed"
        );
        Ok(c.clone())
    }

    /// The effective policy of a model.
    pub fn policy(&self, model: &str) -> ModelPolicy {
        let Ok(c) = self.config.read() else {
            return ModelPolicy {
                mode: Mode::Local,
                signal: Signal::MaxProb,
                threshold: 0.5,
                boxes: None,
            };
        };
        let o = c.models.get(model);
        let set = self.thresholds.get(model);
        let variant = self.engine.model(model).map(|h| &h.files.variant);
        let mode = if self.uplink.is_none() {
            Mode::Local
        } else {
            o.and_then(|o| o.mode).unwrap_or(c.mode)
        };
        ModelPolicy {
            mode,
            signal: set
                .and_then(|s| s.signal)
                .or(o.and_then(|o| o.signal))
                .or(variant.and_then(|v| v.threshold_signal))
                .unwrap_or(Signal::MaxProb),
            threshold: set
                .map(|s| s.threshold)
                .or(o.and_then(|o| o.threshold))
                .or(variant.and_then(|v| v.threshold))
                .unwrap_or(0.5),
            boxes: boxes::frame_policy(model, o, variant),
        }
    }

    fn deadline(&self, model: &str, asked: Option<u32>) -> Option<u32> {
        let c = self.config.read().ok()?;
        let d = asked
            .or_else(|| c.models.get(model).and_then(|m| m.deadline_ms))
            .unwrap_or(c.deadline_ms);
        (d > 0).then_some(d)
    }

    /// Classifies one input: local first (when the device has the model and room), then the
    /// hub when the policy wants it. A single image or text is remembered for corrections and,
    /// when it is a hard example, sampled for the hub's dataset.
    pub async fn classify(
        &self,
        model: &str,
        input: Input,
        deadline_ms: Option<u32>,
    ) -> Result<Answer, RouteError> {
        let ask = Ask {
            deadline_ms,
            ..Ask::default()
        };
        self.classify_with(model, input, ask).await
    }

    /// [`Router::classify`] with a request's `k` (the local and the hub's classification both
    /// answer it) and whether the hub's raw outputs are wanted.
    pub async fn classify_with(
        &self,
        model: &str,
        input: Input,
        ask: Ask,
    ) -> Result<Answer, RouteError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Shares the request's buffer (no copy); a text is small.
        let single = match &input {
            Input::Images(v) if v.len() == 1 => Some(("image", v[0].clone())),
            Input::Texts(v) if v.len() == 1 => Some(("text", bytes::Bytes::from(v[0].clone()))),
            _ => None,
        };
        let started = Instant::now();
        // Every line on this request's path (engine, offload, hub link) carries these fields.
        let rid = format!("{id:016x}");
        let span = if self.device.is_empty() {
            tracing::info_span!("request", model, request_id = %rid)
        } else {
            tracing::info_span!("request", device = self.device.as_str(), model, request_id = %rid)
        };
        let routed = self
            .route(id, model, input, single.clone(), ask)
            .instrument(span.clone())
            .await;
        span.in_scope(|| match &routed {
            Ok(a) => tracing::debug!(
                route = if a.cloud.is_some() { "cloud" } else { "local" },
                reason = %crate::telemetry::counters::reason_name(Some(a.reason)),
                degraded = a.degraded,
                took_us = started.elapsed().as_micros() as u64,
                "answered"
            ),
            Err(e) => tracing::debug!(error = %e, "not answered"),
        });
        self.counters.answered(model, &routed, started.elapsed());
        let mut answer = routed?;
        if let Some(l) = &answer.local {
            answer.frame = boxes::frame_signals(&self.policy(model), l);
        }
        if let Some(f) = &self.feedback {
            f.observe(&answer, single);
        }
        Ok(answer)
    }

    async fn route(
        &self,
        id: u64,
        model: &str,
        input: Input,
        single: Option<(&'static str, bytes::Bytes)>,
        ask: Ask,
    ) -> Result<Answer, RouteError> {
        let started = Instant::now();
        let request_id = format!("{id:016x}");
        let policy = self.policy(model);
        let (local, local_state, queue_full) = if self.remote.contains_key(model) {
            (None, Local::NoVariant, None)
        } else {
            match self.engine.infer(model, input).await {
                Ok(mut inf) => {
                    if let Some(k) = ask.top_k {
                        self.engine.with_top_k(&mut inf, k);
                    }
                    if let Some(signals) = boxes::frame_signals(&policy, &inf) {
                        (Some(inf), Local::Boxes(signals), None)
                    } else {
                        let Some(signals) = inf.predictions.first().map(|p| p.signals) else {
                            return Ok(self.answer(
                                &request_id,
                                model,
                                Some(inf),
                                None,
                                false,
                                Reason::PolicyLocal,
                            ));
                        };
                        (Some(inf), Local::Answered(signals), None)
                    }
                }
                Err(e @ InferenceError::QueueFull { .. }) => (None, Local::QueueFull, Some(e)),
                Err(e) => return Err(e.into()),
            }
        };
        let deadline = self.deadline(model, ask.deadline_ms);
        let ctx = Context {
            local: local_state,
            remaining_ms: deadline.map(|d| f64::from(d) - started.elapsed().as_secs_f64() * 1000.0),
            offloadable: single.is_some(),
            hub: self.uplink.as_ref().map(|u| u.view()).unwrap_or_default(),
        };
        let missed = |m: Missed, local: Option<tandem_engine::Inference>| match local {
            Some(l) => Ok(Answer {
                request_id: request_id.clone(),
                model: model.to_string(),
                local: Some(l),
                cloud: None,
                degraded: true,
                reason: m.reason,
                detail: m.detail,
                frame: None,
            }),
            None => Err(match queue_full {
                // The caller sees the local refusal (503, retry later), with the hub's story logged.
                Some(e) => {
                    tracing::debug!(model, reason = ?m.reason, "local queue full and the hub did not answer");
                    RouteError::Local(e)
                }
                None => RouteError::Hub {
                    model: model.to_string(),
                    why: "no local variant",
                    reason: m.reason,
                    detail: m.detail,
                },
            }),
        };
        let reason = match policy::decide(&policy, &ctx) {
            Decision::Local(r) => {
                return Ok(self.answer(&request_id, model, local, None, false, r));
            }
            Decision::Degraded(r) | Decision::Fail(r) => {
                let detail = (r == Reason::HubUnreachable)
                    .then(|| self.uplink.as_ref().and_then(|u| u.status().last_error))
                    .flatten();
                return missed(Missed { reason: r, detail }, local);
            }
            Decision::Offload(r) => r,
        };
        let (Some(uplink), Some((kind, bytes))) = (&self.uplink, single) else {
            return missed(
                Missed {
                    reason: Reason::HubUnreachable,
                    detail: None,
                },
                local,
            );
        };
        let budget = ctx.remaining_ms.map_or(uplink.timeout(), |ms| {
            Duration::from_secs_f64(ms.max(1.0) / 1000.0)
        });
        // Fail closed: an image whose faces could not be blurred stays on the device.
        let bytes = match (&self.privacy, kind) {
            (Some(p), "image") => match p.scrub(Leaving::Offload, model, bytes).await {
                Ok(b) => b,
                Err(e) => {
                    let detail = Some(format!("not offloaded: {e}"));
                    return missed(
                        Missed {
                            reason: Reason::BlurFailed,
                            detail,
                        },
                        local,
                    );
                }
            },
            _ => bytes,
        };
        // The wire message owns its bytes: the one copy, made only when offloading.
        let wire_input = match (kind, std::str::from_utf8(&bytes)) {
            ("text", Ok(t)) => wire::Input::Text(t.to_string()),
            _ => wire::Input::ImageBytes(bytes.to_vec()),
        };
        let ask = Ask {
            deadline_ms: deadline,
            ..ask
        };
        match self
            .offload(uplink, id, model, wire_input, ask, budget)
            .await
        {
            Ok(cloud) => Ok(self.answer(&request_id, model, local, Some(cloud), false, reason)),
            Err(m) => missed(m, local),
        }
    }

    fn answer(
        &self,
        request_id: &str,
        model: &str,
        local: Option<tandem_engine::Inference>,
        cloud: Option<CloudAnswer>,
        degraded: bool,
        reason: Reason,
    ) -> Answer {
        Answer {
            request_id: request_id.to_string(),
            model: model.to_string(),
            local,
            cloud,
            degraded,
            reason,
            detail: None,
            frame: None,
        }
    }
}
