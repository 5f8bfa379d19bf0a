//! A routed answer: the local inference (when the device ran one), the hub's answer (when it
//! gave one), whether the answer is degraded and why; and its JSON form, shared by
//! `/v1/classify`, the OIP v2 response `parameters` and `tandem-agent infer --json`.

use crate::policy::Reason;
use serde_json::{Map, Value, json};
use tandem_engine::Inference;
use tandem_engine::engine::Timing;
use tandem_engine::postprocess::Prediction;
use tandem_shared::detect::{DetectAnswer, Detection, DetectionSignals, Detections};
use tandem_shared::manifest::VariantRole;
use tandem_shared::provider::ExecutionProvider;

/// The hub's answer, post-processed with the cloud variant's manifest.
#[derive(Debug, Clone)]
pub struct CloudAnswer {
    /// Classification (`None` for a detection model).
    pub prediction: Option<Prediction>,
    /// The hub's boxes (detection models).
    pub detections: Option<Detections>,
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
    /// The agent's id for this request (answers carry it; `POST /v1/feedback` names it).
    pub request_id: String,
    /// Model name.
    pub model: String,
    /// The local inference; `None` when the model has no local variant or the local queue was
    /// full (then `cloud` is set).
    pub local: Option<Inference>,
    /// The hub's answer, when it gave one.
    pub cloud: Option<CloudAnswer>,
    /// `true` when the policy wanted the hub but the answer is local.
    pub degraded: bool,
    /// Why.
    pub reason: Reason,
    /// What went wrong with the hub, for a degraded answer (e.g. the connection's close reason).
    pub detail: Option<String>,
    /// A detection model's frame signals under the policy in force (when the device ran it).
    pub frame: Option<DetectionSignals>,
}

impl Answer {
    /// The prediction returned: the hub's when it answered, else the local one.
    pub fn prediction(&self) -> Option<&Prediction> {
        match &self.cloud {
            Some(c) => c.prediction.as_ref(),
            None => self.local.as_ref().and_then(|l| l.predictions.first()),
        }
    }

    /// The boxes returned (detection models): the hub's when it answered, else the local ones.
    pub fn detections(&self) -> Option<&Detections> {
        match &self.cloud {
            Some(c) => c.detections.as_ref(),
            None => self.local.as_ref().and_then(|l| l.detections.first()),
        }
    }

    /// Rows answered (a local batch may hold several; the hub answers one).
    pub fn rows(&self) -> usize {
        match (&self.cloud, &self.local) {
            (Some(_), _) => 1,
            (None, Some(l)) => l.predictions.len().max(l.detections.len()),
            (None, None) => 0,
        }
    }

    /// The variant whose answer is returned.
    pub fn variant(&self) -> VariantRole {
        match (&self.cloud, &self.local) {
            (None, Some(l)) => l.variant,
            _ => VariantRole::Cloud,
        }
    }

    /// The returned answer as an inference (outputs, predictions, version): the hub's when it
    /// answered, else the local one.
    pub fn inference(&self) -> Inference {
        match (&self.cloud, &self.local) {
            (None, Some(l)) => l.clone(),
            (Some(c), local) => Inference {
                model: self.model.clone(),
                version: c.version.clone(),
                variant: VariantRole::Cloud,
                ep: local.as_ref().map_or(ExecutionProvider::Cpu, |l| l.ep),
                outputs: c.outputs.clone(),
                predictions: c.prediction.iter().cloned().collect(),
                detections: c.detections.iter().cloned().collect(),
                below: Vec::new(),
                timing: local.as_ref().map_or_else(Timing::default, |l| l.timing),
            },
            (None, None) => Inference {
                model: self.model.clone(),
                version: String::new(),
                variant: VariantRole::Cloud,
                ep: ExecutionProvider::Cpu,
                outputs: Vec::new(),
                predictions: Vec::new(),
                detections: Vec::new(),
                below: Vec::new(),
                timing: Timing::default(),
            },
        }
    }

    /// The JSON answer: the chosen label and score, `route`, `degraded`, `reason`, and both
    /// models' results when both ran.
    pub fn to_json(&self) -> Map<String, Value> {
        if let Some(m) = self.boxes_json() {
            return m;
        }
        let local = self.local.as_ref().and_then(|l| l.predictions.first());
        let mut m = match &self.local {
            Some(l) => l.answer(0).unwrap_or_default(),
            None => {
                let mut m = Map::new();
                m.insert("model".into(), json!(self.model));
                m
            }
        };
        m.insert("request_id".into(), json!(self.request_id));
        m.insert("degraded".into(), json!(self.degraded));
        m.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.detail {
            m.insert("detail".into(), json!(d));
        }
        match &self.cloud {
            Some(c) => {
                m.insert("route".into(), json!("cloud"));
                m.insert("version".into(), json!(c.version));
                m.insert("variant".into(), json!(VariantRole::Cloud.as_str()));
                let Some(cp) = &c.prediction else {
                    return m;
                };
                m.insert("label".into(), json!(cp.label));
                m.insert("index".into(), json!(cp.index));
                m.insert("score".into(), json!(cp.score));
                m.insert("top_k".into(), json!(cp.top_k));
                if let Some(p) = local {
                    m.insert(
                        "local".into(),
                        json!({"label": p.label, "score": p.score, "signals": p.signals}),
                    );
                }
                m.insert("cloud".into(), json!({"label": cp.label, "score": cp.score, "version": c.version, "round_trip_ms": c.round_trip_ms, "batch_size": c.batch_size}));
            }
            None => {
                m.insert("route".into(), json!("local"));
            }
        }
        m
    }
}

/// The device's side of a detection answer the hub gave.
#[derive(serde::Serialize)]
struct LocalBoxes<'a> {
    version: &'a str,
    detections: &'a [Detection],
}

/// The hub's side of a detection answer.
#[derive(serde::Serialize)]
struct CloudBoxes<'a> {
    version: &'a str,
    round_trip_ms: f64,
    batch_size: u32,
}

/// A detection model's routed answer: [`DetectAnswer`] (the boxes returned, route, degraded)
/// with the request's id, the routing reason and, when the hub answered, the device's boxes.
#[derive(serde::Serialize)]
struct RoutedBoxes<'a> {
    #[serde(flatten)]
    answer: DetectAnswer,
    request_id: &'a str,
    reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<LocalBoxes<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud: Option<CloudBoxes<'a>>,
}

impl Answer {
    /// The JSON of a detection model's answer; `None` for classification.
    fn boxes_json(&self) -> Option<Map<String, Value>> {
        let d = self.detections()?;
        let local = self.local.as_ref();
        let local_boxes = local.and_then(|l| l.detections.first());
        let (variant, version) = match (&self.cloud, local) {
            (Some(c), _) => (VariantRole::Cloud, c.version.as_str()),
            (None, Some(l)) => (l.variant, l.version.as_str()),
            (None, None) => (VariantRole::Cloud, ""),
        };
        let (width, height) = match (d.width, local_boxes) {
            (0, Some(l)) => (l.width, l.height),
            _ => (d.width, d.height),
        };
        let routed = RoutedBoxes {
            answer: DetectAnswer {
                model: self.model.clone(),
                version: version.to_string(),
                variant: variant.as_str().into(),
                route: if self.cloud.is_some() {
                    "cloud"
                } else {
                    "local"
                }
                .into(),
                degraded: self.degraded,
                ep: local
                    .map_or(ExecutionProvider::Cpu, |l| l.ep)
                    .as_str()
                    .into(),
                width,
                height,
                detections: d.boxes.clone(),
                signals: self.frame.unwrap_or_else(|| d.signals()),
                latency_ms: local.map_or(0.0, |l| l.timing.total_us as f64 / 1000.0)
                    + self.cloud.as_ref().map_or(0.0, |c| c.round_trip_ms),
            },
            request_id: &self.request_id,
            reason: self.reason,
            detail: self.detail.as_deref(),
            local: self.cloud.as_ref().and(local).and_then(|l| {
                Some(LocalBoxes {
                    version: &l.version,
                    detections: &l.detections.first()?.boxes,
                })
            }),
            cloud: self.cloud.as_ref().map(|c| CloudBoxes {
                version: &c.version,
                round_trip_ms: c.round_trip_ms,
                batch_size: c.batch_size,
            }),
        };
        match serde_json::to_value(routed) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        }
    }
}
