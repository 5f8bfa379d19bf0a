//! The typed answer of one input, per task: the `k` best classes of a classification, the
//! boxes of a detection ([`Prediction`]). The engine's post-processing makes it on the hub and
//! on the agent alike; the hub sends it to the agent (`wire::Message::PredictResponse`); every
//! JSON answer (`/v1/classify`, `/v1/detect`, OIP v2 `parameters`, `infer --json`) is
//! serialised from it and the routed answer types here ([`ClassifyAnswer`]).

use crate::detect::Detections;
use serde::{Deserialize, Serialize};

/// Most classes in a top-k, and most boxes in one image's answer, that the wire carries
/// (`wire::Message::PredictRequest::top_k` is at most this).
pub const MAX_PREDICTIONS: usize = 4096;

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// Class index (line of the labels file).
    pub index: usize,
    /// Class label.
    pub label: String,
    /// Probability, 0..1.
    pub score: f32,
}

/// Confidence signals of a classification, which the routing policy reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassSignals {
    /// Highest probability.
    pub max_prob: f32,
    /// Highest minus second-highest probability.
    pub margin: f32,
    /// Shannon entropy in nats (0 = certain).
    pub entropy: f32,
}

/// The classification of one input: its best class and the `k` best, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Best class index.
    pub index: usize,
    /// Best class label.
    pub label: String,
    /// Its probability.
    pub score: f32,
    /// The `k` best, best first (the first is the best class above).
    pub top_k: Vec<ClassScore>,
    /// Routing signals (of the whole distribution, not only the top-k).
    pub signals: ClassSignals,
}

impl Classification {
    /// The classification whose `k` best are `top_k` (best first; the best class is its
    /// first; index 0, label `""` and score 0 when it is empty).
    pub fn from_top_k(top_k: Vec<ClassScore>, signals: ClassSignals) -> Self {
        let (index, label, score) = top_k.first().map_or((0, String::new(), 0.0), |b| {
            (b.index, b.label.clone(), b.score)
        });
        Self {
            index,
            label,
            score,
            top_k,
            signals,
        }
    }
}

/// The answer for one input, by task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Prediction {
    /// A classification model's answer: the `k` best classes.
    TopK(Classification),
    /// A detection model's answer: the kept boxes, in the image's pixels.
    Boxes(Detections),
}

impl Prediction {
    /// The classification (`None` for boxes).
    pub fn classification(&self) -> Option<&Classification> {
        match self {
            Self::TopK(c) => Some(c),
            Self::Boxes(_) => None,
        }
    }

    /// The boxes (`None` for a classification).
    pub fn detections(&self) -> Option<&Detections> {
        match self {
            Self::TopK(_) => None,
            Self::Boxes(d) => Some(d),
        }
    }
}

/// The local model's side of a classification the hub answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalClass {
    /// Version of the local (edge) model that ran; absent in answers from agents older than
    /// this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Best class label.
    pub label: String,
    /// Its probability.
    pub score: f32,
    /// The local model's signals (what the policy read).
    pub signals: ClassSignals,
}

/// The hub's side of an answer it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudSide {
    /// Best class label (classification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Its probability (classification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// Model version that ran on the hub.
    pub version: String,
    /// Round trip as the agent measured it, milliseconds.
    pub round_trip_ms: f64,
    /// Requests in the hub's batch.
    pub batch_size: u32,
}

/// Where the time of a local inference went, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TimingUs {
    /// Waiting in the queue.
    pub queue_us: u64,
    /// Decoding / tokenising.
    pub preprocess_us: u64,
    /// `Session::run`.
    pub run_us: u64,
    /// Post-processing.
    pub postprocess_us: u64,
    /// Submission to answer.
    pub total_us: u64,
    /// Requests that ran together in this batch (1 without batching).
    pub batch_size: usize,
}

/// A classification answer as `/v1/classify/{model}` and `infer --json` give it (OIP v2
/// `parameters` carry a subset): the returned class (the hub's when it answered), how it was
/// made, and both models' results when both ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyAnswer {
    /// Model name.
    pub model: String,
    /// Version of the model that answered.
    pub version: String,
    /// Variant that answered (`edge`, `cloud`).
    pub variant: String,
    /// Best class label.
    pub label: String,
    /// Best class index.
    pub index: usize,
    /// Its probability.
    pub score: f32,
    /// The `k` best of the model that answered, best first.
    pub top_k: Vec<ClassScore>,
    /// The local model's signals (what the policy read; absent when no local model ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<ClassSignals>,
    /// `local` or `cloud`.
    pub route: String,
    /// True when the policy wanted the hub but the answer is local.
    pub degraded: bool,
    /// Execution provider of the local run (absent when none ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ep: Option<String>,
    /// Local submission to answer, milliseconds (absent when no local model ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The local run's stage timings (absent when no local model ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_us: Option<TimingUs>,
    /// The agent's id for this request (`POST /v1/feedback` names it).
    pub request_id: String,
    /// Why this route (`policy_local`, `low_confidence`, `hub_unreachable`, ...).
    pub reason: String,
    /// What went wrong with the hub, for a degraded answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The local model's result, when the hub answered after it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalClass>,
    /// The hub's side, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudSide>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prediction_names_its_task_in_json() {
        let c = Classification::from_top_k(
            vec![ClassScore {
                index: 3,
                label: "Dress".into(),
                score: 0.9,
            }],
            ClassSignals {
                max_prob: 0.9,
                margin: 0.8,
                entropy: 0.1,
            },
        );
        assert_eq!((c.index, c.label.as_str(), c.score), (3, "Dress", 0.9));
        let v = serde_json::to_value(Prediction::TopK(c.clone())).expect("json");
        assert_eq!(v["task"], "top_k");
        assert_eq!(v["top_k"][0]["label"], "Dress");
        let back: Prediction = serde_json::from_value(v).expect("back");
        assert_eq!(back.classification(), Some(&c));
        let empty = Classification::from_top_k(Vec::new(), c.signals);
        assert_eq!((empty.index, empty.score), (0, 0.0));
    }

    #[test]
    fn the_local_side_names_its_version_and_older_answers_still_read() {
        let signals = ClassSignals {
            max_prob: 0.4,
            margin: 0.1,
            entropy: 1.2,
        };
        let local = LocalClass {
            version: Some("1.0.3".into()),
            label: "Shirt".into(),
            score: 0.4,
            signals,
        };
        let v = serde_json::to_value(&local).expect("json");
        assert_eq!(v["version"], "1.0.3");
        let back: LocalClass = serde_json::from_value(v).expect("back");
        assert_eq!(back, local);
        // An older agent's `local`, without the version.
        let old = serde_json::json!({"label": "Shirt", "score": 0.4,
            "signals": {"max_prob": 0.4, "margin": 0.1, "entropy": 1.2}});
        let read: LocalClass = serde_json::from_value(old).expect("an older answer");
        assert_eq!(read.version, None);
        assert_eq!(read.label, "Shirt");
        let none = serde_json::to_value(&read).expect("json");
        assert!(none.get("version").is_none(), "{none}");
    }
}
