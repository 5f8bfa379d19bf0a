//! A routed answer: the local inference (when the device ran one), the hub's answer (when it
//! gave one), whether the answer is degraded and why; and its JSON form, shared by
//! `/v1/classify`, the OIP v2 response `parameters` and `tandem-agent infer --json`.

use crate::policy::Reason;
use serde_json::{Map, Value, json};
use tandem_engine::Inference;
use tandem_engine::engine::Timing;
use tandem_engine::postprocess::Prediction;
use tandem_shared::manifest::VariantRole;
use tandem_shared::provider::ExecutionProvider;

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
}

impl Answer {
    /// The prediction returned: the hub's when it answered, else the local one.
    pub fn prediction(&self) -> Option<&Prediction> {
        self.cloud
            .as_ref()
            .map(|c| &c.prediction)
            .or_else(|| self.local.as_ref().and_then(|l| l.predictions.first()))
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
                predictions: vec![c.prediction.clone()],
                detections: Vec::new(),
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
                timing: Timing::default(),
            },
        }
    }

    /// The JSON answer: the chosen label and score, `route`, `degraded`, `reason`, and both
    /// models' results when both ran.
    pub fn to_json(&self) -> Map<String, Value> {
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
                m.insert("label".into(), json!(c.prediction.label));
                m.insert("index".into(), json!(c.prediction.index));
                m.insert("score".into(), json!(c.prediction.score));
                m.insert("top_k".into(), json!(c.prediction.top_k));
                if let Some(p) = local {
                    m.insert(
                        "local".into(),
                        json!({"label": p.label, "score": p.score, "signals": p.signals}),
                    );
                }
                m.insert("cloud".into(), json!({"label": c.prediction.label, "score": c.prediction.score, "version": c.version, "round_trip_ms": c.round_trip_ms, "batch_size": c.batch_size}));
            }
            None => {
                m.insert("route".into(), json!("local"));
            }
        }
        m
    }
}
