//! The hybrid path: run the local variant, ask the routing policy, offload to the hub when it
//! says so, and never fail a request the local variant answered: any hub failure returns the
//! local answer marked `degraded` with its reason.

use crate::policy::{self, Context, Decision, Mode, ModelPolicy, Reason};
use crate::uplink::Uplink;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tandem_engine::postprocess::{self, Prediction};
use tandem_engine::{Engine, Inference, InferenceError, Input};
use tandem_shared::manifest::{OutputKind, Signal, VariantRole};
use tandem_shared::wire::{self, Message};

/// `[policy]` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Default mode: `local`, `cloud` or `cascade` (offloading needs `[hub]`).
    pub mode: Mode,
    /// Default deadline for requests that set none, in milliseconds (0 = none).
    pub deadline_ms: u32,
    /// Per-model overrides.
    pub models: BTreeMap<String, ModelPolicyConfig>,
}

/// `[policy.models.NAME]`: any key left out comes from `[policy]` or the model's manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelPolicyConfig {
    /// Mode for this model.
    pub mode: Option<Mode>,
    /// Signal the threshold applies to (`max_prob`, `margin`, `entropy`).
    pub signal: Option<Signal>,
    /// Threshold (default: the manifest's suggestion).
    pub threshold: Option<f32>,
    /// Default deadline, milliseconds.
    pub deadline_ms: Option<u32>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Cascade,
            deadline_ms: 0,
            models: BTreeMap::new(),
        }
    }
}

/// The hub's answer, post-processed with the cloud variant's manifest.
#[derive(Debug, Clone)]
pub struct CloudAnswer {
    /// Classification.
    pub prediction: Prediction,
    /// Model version that ran on the hub.
    pub version: String,
    /// Round trip as the agent measured it, milliseconds.
    pub round_trip_ms: f64,
    /// Requests in the hub's batch.
    pub batch_size: u32,
    /// The cloud variant's raw outputs.
    pub outputs: Vec<tandem_engine::OutputTensor>,
}

/// A routed answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The local inference (always run first).
    pub local: Inference,
    /// The hub's answer, when it gave one.
    pub cloud: Option<CloudAnswer>,
    /// `true` when the policy wanted the hub but the answer is local.
    pub degraded: bool,
    /// Why.
    pub reason: Reason,
}

impl Answer {
    /// The JSON answer: the chosen label and score, `route`, `degraded`, `reason`, and both
    /// models' results when both ran.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = self.local.answer(0).unwrap_or_default();
        let local = self.local.predictions.first();
        m.insert("degraded".into(), json!(self.degraded));
        m.insert("reason".into(), json!(self.reason));
        match &self.cloud {
            Some(c) => {
                m.insert("route".into(), json!("cloud"));
                m.insert("label".into(), json!(c.prediction.label));
                m.insert("index".into(), json!(c.prediction.index));
                m.insert("score".into(), json!(c.prediction.score));
                m.insert("top_k".into(), json!(c.prediction.top_k));
                m.insert("local".into(), json!({"label": local.map(|p| &p.label), "score": local.map(|p| p.score), "signals": local.map(|p| p.signals)}));
                m.insert("cloud".into(), json!({"label": c.prediction.label, "score": c.prediction.score, "version": c.version, "round_trip_ms": c.round_trip_ms, "batch_size": c.batch_size}));
            }
            None => {
                m.insert("route".into(), json!("local"));
            }
        }
        m
    }
}

/// Runs requests through the local engine and, per policy, the hub.
#[derive(Debug)]
pub struct Router {
    engine: Arc<Engine>,
    uplink: Option<Arc<Uplink>>,
    config: PolicyConfig,
    next_id: AtomicU64,
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
            config,
            next_id: AtomicU64::new(seed | 1),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The hub link, when configured.
    pub fn uplink(&self) -> Option<&Arc<Uplink>> {
        self.uplink.as_ref()
    }

    /// The effective policy of a model.
    pub fn policy(&self, model: &str) -> ModelPolicy {
        let o = self.config.models.get(model);
        let variant = self.engine.model(model).map(|h| &h.files.variant);
        let mode = if self.uplink.is_none() {
            Mode::Local
        } else {
            o.and_then(|o| o.mode).unwrap_or(self.config.mode)
        };
        ModelPolicy {
            mode,
            signal: o
                .and_then(|o| o.signal)
                .or(variant.and_then(|v| v.threshold_signal))
                .unwrap_or(Signal::MaxProb),
            threshold: o
                .and_then(|o| o.threshold)
                .or(variant.and_then(|v| v.threshold))
                .unwrap_or(0.5),
        }
    }

    fn deadline(&self, model: &str, asked: Option<u32>) -> Option<u32> {
        let d = asked
            .or_else(|| self.config.models.get(model).and_then(|m| m.deadline_ms))
            .unwrap_or(self.config.deadline_ms);
        (d > 0).then_some(d)
    }

    /// Classifies one input: local first, then the hub when the policy wants it.
    pub async fn classify(
        &self,
        model: &str,
        input: Input,
        deadline_ms: Option<u32>,
    ) -> Result<Answer, InferenceError> {
        let started = Instant::now();
        let offload_input = match &input {
            Input::Images(v) if v.len() == 1 => Some(wire::Input::ImageBytes(v[0].to_vec())),
            Input::Texts(v) if v.len() == 1 => Some(wire::Input::Text(v[0].clone())),
            _ => None,
        };
        let local = self.engine.infer(model, input).await?;
        let policy = self.policy(model);
        let deadline = self.deadline(model, deadline_ms);
        let Some(signals) = local.predictions.first().map(|p| p.signals) else {
            return Ok(Answer {
                local,
                cloud: None,
                degraded: false,
                reason: Reason::PolicyLocal,
            });
        };
        let ctx = Context {
            signals,
            remaining_ms: deadline.map(|d| f64::from(d) - started.elapsed().as_secs_f64() * 1000.0),
            offloadable: offload_input.is_some(),
            hub: self.uplink.as_ref().map(|u| u.view()).unwrap_or_default(),
        };
        let reason = match policy::decide(&policy, &ctx) {
            Decision::Local(r) => {
                return Ok(Answer {
                    local,
                    cloud: None,
                    degraded: false,
                    reason: r,
                });
            }
            Decision::Degraded(r) => {
                return Ok(Answer {
                    local,
                    cloud: None,
                    degraded: true,
                    reason: r,
                });
            }
            Decision::Offload(r) => r,
        };
        let (Some(uplink), Some(wire_input)) = (&self.uplink, offload_input) else {
            return Ok(Answer {
                local,
                cloud: None,
                degraded: true,
                reason: Reason::HubUnreachable,
            });
        };
        let budget = ctx.remaining_ms.map_or(uplink.timeout(), |ms| {
            Duration::from_secs_f64(ms.max(1.0) / 1000.0)
        });
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = Message::InferRequest {
            request_id,
            model: model.to_string(),
            model_version: None,
            deadline_ms: u32::try_from(budget.as_millis()).unwrap_or(u32::MAX),
            input: wire_input,
        };
        let t = Instant::now();
        let degraded = |why: Reason| Answer {
            local: local.clone(),
            cloud: None,
            degraded: true,
            reason: why,
        };
        match uplink.call(&msg, budget).await {
            Ok(Message::InferResponse {
                model_version,
                outputs,
                timing,
                ..
            }) => match self.cloud_prediction(model, &outputs) {
                Some(prediction) => Ok(Answer {
                    cloud: Some(CloudAnswer {
                        prediction,
                        version: model_version,
                        round_trip_ms: t.elapsed().as_secs_f64() * 1000.0,
                        batch_size: timing.batch_size,
                        outputs: outputs.iter().map(output_tensor).collect(),
                    }),
                    local,
                    degraded: false,
                    reason,
                }),
                None => Ok(degraded(Reason::HubError)),
            },
            Ok(Message::Busy { .. }) => Ok(degraded(Reason::HubBusy)),
            Ok(Message::Error {
                code: wire::ErrorCode::DeadlineExceeded,
                ..
            }) => Ok(degraded(Reason::Deadline)),
            Ok(other) => {
                tracing::warn!(model, answer = ?other.kind(), "hub answered with an error");
                Ok(degraded(Reason::HubError))
            }
            Err(crate::uplink::UplinkError::Timeout(_)) if deadline.is_some() => {
                Ok(degraded(Reason::Deadline))
            }
            Err(crate::uplink::UplinkError::Timeout(_)) => Ok(degraded(Reason::HubTimeout)),
            Err(e) => {
                tracing::debug!(model, error = %e, "offload failed; answering locally");
                Ok(degraded(Reason::HubUnreachable))
            }
        }
    }

    fn cloud_prediction(&self, model: &str, outputs: &[wire::Tensor]) -> Option<Prediction> {
        let h = self.engine.model(model)?;
        let spec = h
            .files
            .manifest
            .variants
            .get(&VariantRole::Cloud)?
            .outputs
            .first()?;
        let out = outputs.iter().find(|t| t.name == spec.name)?;
        if out.dtype != wire::DType::F32 {
            return None;
        }
        let mut probs: Vec<f32> = out
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if spec.kind == OutputKind::Logits {
            postprocess::softmax(&mut probs);
        }
        Some(postprocess::classify(&probs, &h.files.labels, 5))
    }
}

fn output_tensor(t: &wire::Tensor) -> tandem_engine::OutputTensor {
    tandem_engine::OutputTensor {
        name: t.name.clone(),
        shape: t.shape.clone(),
        data: tandem_shared::convert::tensor_data(t),
    }
}
