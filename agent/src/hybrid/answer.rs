//! A routed answer: the local inference (when the device ran one), the hub's answer (when it
//! gave one), whether the answer is degraded and why; and its typed body ([`AnswerBody`]),
//! which `/v1/classify`, `/v1/detect`, the OIP v2 response `parameters` and
//! `tandem-agent infer --json` all serialise.

use crate::policy::Reason;
use serde_json::{Map, Value};
use tandem_engine::Inference;
use tandem_engine::engine::Timing;
use tandem_engine::http::params::to_map;
use tandem_shared::answer::{Classification, ClassifyAnswer, CloudSide, LocalClass, Prediction};
use tandem_shared::detect::{DetectAnswer, Detection, DetectionSignals, Detections};
use tandem_shared::manifest::VariantRole;
use tandem_shared::provider::ExecutionProvider;

/// The hub's answer: its typed prediction (the hub's engine decoded it).
#[derive(Debug, Clone)]
pub struct CloudAnswer {
    /// The top-k or the boxes.
    pub prediction: Prediction,
    /// Model version that ran on the hub.
    pub version: String,
    /// Round trip as the agent measured it, milliseconds.
    pub round_trip_ms: f64,
    /// Requests in the hub's batch.
    pub batch_size: u32,
    /// The cloud variant's raw outputs, when asked for (`Ask::raw_outputs`), else empty.
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
    pub fn prediction(&self) -> Option<&Classification> {
        match &self.cloud {
            Some(c) => c.prediction.classification(),
            None => self.local.as_ref().and_then(|l| l.predictions.first()),
        }
    }

    /// The boxes returned (detection models): the hub's when it answered, else the local ones.
    pub fn detections(&self) -> Option<&Detections> {
        match &self.cloud {
            Some(c) => c.prediction.detections(),
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
                predictions: c.prediction.classification().cloned().into_iter().collect(),
                detections: c.prediction.detections().cloned().into_iter().collect(),
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

    /// The answer as `/v1/classify` (a [`ClassifyAnswer`]) or `/v1/detect` (the boxes) gives
    /// it: what `infer --json` prints and a one-row OIP v2 response's `parameters` carry.
    pub fn body(&self) -> AnswerBody<'_> {
        if let Some(b) = self.boxes_body() {
            return AnswerBody::Boxes(Box::new(b));
        }
        let local = self.local.as_ref();
        let local_top = local.and_then(|l| l.predictions.first());
        let (variant, version, chosen) = match (&self.cloud, local) {
            (Some(c), _) => (VariantRole::Cloud, c.version.clone(), self.prediction()),
            (None, Some(l)) => (l.variant, l.version.clone(), local_top),
            (None, None) => (VariantRole::Cloud, String::new(), None),
        };
        let chosen = chosen.cloned().unwrap_or_else(|| {
            Classification::from_top_k(
                Vec::new(),
                tandem_shared::answer::ClassSignals {
                    max_prob: 0.0,
                    margin: 0.0,
                    entropy: 0.0,
                },
            )
        });
        let timing = local.map(|l| l.timing);
        AnswerBody::Class(Box::new(ClassifyAnswer {
            model: self.model.clone(),
            version,
            variant: variant.as_str().into(),
            label: chosen.label,
            index: chosen.index,
            score: chosen.score,
            top_k: chosen.top_k,
            signals: local_top.map(|p| p.signals),
            route: self.route().into(),
            degraded: self.degraded,
            ep: local.map(|l| l.ep.as_str().into()),
            latency_ms: timing.map(|t| t.total_us as f64 / 1000.0),
            timing_us: timing,
            request_id: self.request_id.clone(),
            reason: crate::telemetry::counters::reason_name(Some(self.reason)),
            detail: self.detail.clone(),
            local: self.cloud.as_ref().and(local_top).map(|p| LocalClass {
                version: local.map(|l| l.version.clone()),
                label: p.label.clone(),
                score: p.score,
                signals: p.signals,
            }),
            cloud: self.cloud.as_ref().map(|c| CloudSide {
                label: c.prediction.classification().map(|p| p.label.clone()),
                score: c.prediction.classification().map(|p| p.score),
                version: c.version.clone(),
                round_trip_ms: c.round_trip_ms,
                batch_size: c.batch_size,
            }),
        }))
    }

    /// `cloud` when the hub answered, else `local`.
    pub fn route(&self) -> &'static str {
        if self.cloud.is_some() {
            "cloud"
        } else {
            "local"
        }
    }

    /// The `parameters` of an OIP v2 response: the whole answer for one row, how it was made
    /// for a batch of several (each row's classes are in the outputs).
    pub fn oip_parameters(&self) -> Map<String, Value> {
        if self.rows() == 1 {
            return to_map(&self.body());
        }
        let local = self.local.as_ref();
        to_map(&BatchParameters {
            model: &self.model,
            variant: self.variant().as_str(),
            route: self.route(),
            degraded: self.degraded,
            reason: self.reason,
            request_id: &self.request_id,
            ep: local.map(|l| l.ep.as_str()),
            latency_ms: local.map(|l| l.timing.total_us as f64 / 1000.0),
        })
    }
}

/// A routed answer, typed by task; serialises as the object `/v1/classify` or `/v1/detect`
/// answers.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum AnswerBody<'a> {
    /// A classification.
    Class(Box<ClassifyAnswer>),
    /// A detection.
    Boxes(Box<RoutedBoxes<'a>>),
}

/// The `parameters` of an OIP v2 answer of several rows.
#[derive(serde::Serialize)]
struct BatchParameters<'a> {
    model: &'a str,
    variant: &'static str,
    route: &'static str,
    degraded: bool,
    reason: Reason,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ep: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
}

/// The device's side of a detection answer the hub gave.
#[derive(Debug, serde::Serialize)]
struct LocalBoxes<'a> {
    version: &'a str,
    detections: &'a [Detection],
}

/// The hub's side of a detection answer.
#[derive(Debug, serde::Serialize)]
struct CloudBoxes<'a> {
    version: &'a str,
    round_trip_ms: f64,
    batch_size: u32,
}

/// A detection model's routed answer: [`DetectAnswer`] (the boxes returned, route, degraded)
/// with the request's id, the routing reason and, when the hub answered, the device's boxes.
#[derive(Debug, serde::Serialize)]
pub struct RoutedBoxes<'a> {
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
    /// A detection model's answer; `None` for classification.
    fn boxes_body(&self) -> Option<RoutedBoxes<'_>> {
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
                route: self.route().into(),
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
        Some(routed)
    }
}
