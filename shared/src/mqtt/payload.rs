//! Device-to-hub payloads (`status`, `telemetry`, `events`) and the version check every payload
//! goes through. Each is a JSON object with `"v": 1`; see docs/mqtt.md for the fields and
//! examples (the examples there are the golden files in `shared/tests/fixtures/mqtt/`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The payload version this build writes and reads.
pub const VERSION: u32 = 1;

/// Largest payload decoded, in bytes (the broker's `max_packet_size` is set to match).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Why a payload cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Larger than the limit.
    #[error("payload of {len} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON.
    #[error("payload is not JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("payload is not a JSON object")]
    NotObject,
    /// No `v` field.
    #[error("payload has no `v` (version) field")]
    MissingVersion,
    /// A version this build does not read.
    #[error("payload version {found} is not supported (this build reads v {VERSION})")]
    Version {
        /// The `v` found, as JSON.
        found: String,
    },
    /// The right version, but a field is missing, unknown or of the wrong type.
    #[error("payload: {0}")]
    Invalid(String),
    /// A command name this build does not know.
    #[error(
        "unknown command `{0}` (known: set_threshold, set_policy, telemetry_now, update_model)"
    )]
    UnknownCommand(String),
    /// A command argument out of its range (see `mqtt::args`).
    #[error("{0}")]
    Argument(String),
}

/// Parses `bytes` as a JSON object and checks its version.
pub(crate) fn versioned_object(
    bytes: &[u8],
    limit: usize,
) -> Result<Map<String, Value>, PayloadError> {
    if bytes.len() > limit {
        return Err(PayloadError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(PayloadError::NotObject);
    };
    match map.get("v") {
        None => Err(PayloadError::MissingVersion),
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => Ok(map),
        Some(other) => Err(PayloadError::Version {
            found: other.to_string(),
        }),
    }
}

/// Decodes a versioned payload into `T`: size, JSON, object, `v`, then the fields.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PayloadError> {
    let map = versioned_object(bytes, MAX_PAYLOAD_BYTES)?;
    serde_json::from_value(Value::Object(map)).map_err(|e| PayloadError::Invalid(e.to_string()))
}

/// Encodes a payload (serialising these types cannot fail: string keys, finite numbers).
pub fn encode<T: Serialize>(payload: &T) -> Vec<u8> {
    serde_json::to_vec(payload).unwrap_or_default()
}

/// Online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Connected.
    Online,
    /// Gone: by the last will (`reason: connection_lost`) or on shutdown (`reason: shutdown`).
    Offline,
}

/// A model as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// Model name.
    pub name: String,
    /// Version of the loaded variant.
    pub version: String,
    /// Variant role (`edge`, `tiny`, ...).
    pub variant: String,
    /// Execution provider in use (`cpu`, `cuda`, ...).
    pub ep: String,
}

/// `tandem/{device}/status`, retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Payload version.
    pub v: u32,
    /// Online or offline.
    pub state: State,
    /// When, milliseconds since the Unix epoch (device clock); absent in the last will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<u64>,
    /// Why offline: `connection_lost` (last will) or `shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent's version (online only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Models loaded (online only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelStatus>,
    /// The device's labels from its config (`group = "cameras-north"`; online only): what
    /// rollouts select devices by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The devices ONNX Runtime discovers here (CPU, plugin EPs' GPUs and NPUs; online only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accelerators: Vec<crate::provider::Accelerator>,
}

impl Status {
    /// `online`, with what the device runs.
    pub fn online(ts_ms: u64, agent_version: &str, models: Vec<ModelStatus>) -> Self {
        Self {
            v: VERSION,
            state: State::Online,
            ts_ms: Some(ts_ms),
            reason: None,
            agent_version: Some(agent_version.to_string()),
            models,
            labels: BTreeMap::new(),
            accelerators: Vec::new(),
        }
    }

    /// The last will: `offline`, `reason: connection_lost` (the broker publishes it).
    pub fn last_will() -> Self {
        Self::offline(None, "connection_lost")
    }

    /// `offline` with a reason.
    pub fn offline(ts_ms: Option<u64>, reason: &str) -> Self {
        Self {
            v: VERSION,
            state: State::Offline,
            ts_ms,
            reason: Some(reason.to_string()),
            agent_version: None,
            models: Vec::new(),
            labels: BTreeMap::new(),
            accelerators: Vec::new(),
        }
    }
}

/// A latency histogram with Prometheus semantics: `counts[i]` observations were at most
/// `le_s[i]` seconds (cumulative); `count` is the total (the `+Inf` bucket).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds, seconds.
    pub le_s: Vec<f64>,
    /// Cumulative counts, one per bound.
    pub counts: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum_s: f64,
}

/// One model's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelTelemetry {
    /// Version of the loaded variant.
    pub version: String,
    /// Variant role.
    pub variant: String,
    /// Execution provider in use.
    pub ep: String,
    /// Inferences finished, by outcome (`ok` or an error kind).
    pub inferences: BTreeMap<String, u64>,
    /// Requests refused because the model's queue was full.
    pub rejected: u64,
    /// Requests waiting in the model's queue now.
    pub queue_depth: u64,
    /// Time from submission to answer of successful inferences.
    pub latency: Histogram,
    /// What was measured of each provider tried for this model (accuracy gate; speed with
    /// `auto`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ep_measured: Vec<crate::provider::EpMeasurement>,
    /// Times the model's sessions moved to the next provider after run-time failures.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ep_failovers: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Answers of one model by route (`local`, `cloud`, `failed`) and reason (`confident`,
/// `low_confidence`, `hub_unreachable`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCount {
    /// Model.
    pub model: String,
    /// Where the answer came from; `failed` when there was none.
    pub route: String,
    /// Why.
    pub reason: String,
    /// Whether the policy wanted the hub but the answer is local.
    pub degraded: bool,
    /// Answers since start.
    pub count: u64,
}

/// The store-and-forward queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Records waiting.
    pub depth: u64,
    /// Bytes they take.
    pub bytes: u64,
    /// Accepted records found missing at a start (the queue's files were damaged), since the
    /// queue was made. Absent from older agents: 0.
    #[serde(default)]
    pub lost: u64,
}

/// The MQTT link's own counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttCounters {
    /// Messages accepted into the outgoing queue, by class (`telemetry`, `events`, `results`).
    pub queued: BTreeMap<String, u64>,
    /// Messages dropped because the outgoing queue was full, by class.
    pub dropped: BTreeMap<String, u64>,
    /// Connections to the broker made.
    pub connects: u64,
    /// Commands handled, by name and outcome (`set_threshold/ok`, `bad/error`).
    pub commands: BTreeMap<String, u64>,
}

/// The process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// CPU time used (user + system), seconds.
    pub cpu_s: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// `tandem/{device}/telemetry`: periodic, from the same counters as the agent's `/metrics`.
/// Counters are cumulative since the agent started: a lost message is made up by the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Payload version.
    pub v: u32,
    /// When, milliseconds since the Unix epoch (device clock).
    pub ts_ms: u64,
    /// Sequence number since the agent started (1, 2, ...).
    pub seq: u64,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// The agent's version.
    pub agent_version: String,
    /// Per model.
    pub models: BTreeMap<String, ModelTelemetry>,
    /// Route mix.
    pub routes: Vec<RouteCount>,
    /// The store-and-forward queue, when the agent runs one.
    #[serde(default)]
    pub queue: Option<QueueStats>,
    /// The MQTT link.
    pub mqtt: MqttCounters,
    /// CPU and memory.
    pub process: ProcessStats,
    /// Model updates (flow 5), while the agent runs: the last state of each of a model's most
    /// recent versions, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<UpdateReport>,
    /// The face blur on images leaving the device, when a served model has it on
    /// (`[privacy]`). Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyCounters>,
    /// The routing threshold in force per model, with its signal and source (what the hub's
    /// calibration compares with its desired state); absent from agents before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<String, ThresholdView>,
    /// The cameras with a frame stream on the device, in id order (at most `[cameras]
    /// max_cameras`): what the hub lists and asks snapshots of. Absent when none streams, and
    /// from agents before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cameras: Vec<super::CameraTelemetry>,
}

/// The face blur's counters since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyCounters {
    /// Images leaving the device that the face detector checked first.
    pub images_checked: u64,
    /// Of those, images with at least one face blurred.
    pub images_blurred: u64,
    /// Face boxes blurred.
    pub faces_blurred: u64,
    /// Images kept on the device because the blur failed, by path (`offload`,
    /// `hard_example`, `shadow`, `correction`, `snapshot`; zeros left out).
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
}

/// A model's routing threshold as the device uses it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdView {
    /// The threshold.
    pub threshold: f32,
    /// The signal it applies to.
    pub signal: crate::manifest::Signal,
    /// Where it comes from.
    pub source: super::command::ThresholdSource,
}

/// Where a model update stands on the device (the rollout controller reads it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// Model.
    pub model: String,
    /// The version the update is about.
    pub version: String,
    /// `downloading`, `verifying`, `testing`, `watching`, `active`, `rejected`, `rolled_back`.
    pub state: String,
    /// Why (`rejected`, `rolled_back`): a short reason, then words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes downloaded (`downloading`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    /// Bytes of the bundle (`downloading`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// `tandem/{device}/events`: one sampled inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Payload version.
    pub v: u32,
    /// When it was answered, milliseconds since the Unix epoch (device clock).
    pub ts_ms: u64,
    /// Model.
    pub model: String,
    /// Version of the model that gave the answer.
    pub version: String,
    /// Best label.
    pub label: String,
    /// Its probability.
    pub score: f32,
    /// `local` or `cloud`.
    pub route: String,
    /// Why.
    pub reason: String,
    /// Whether the policy wanted the hub but the answer is local.
    pub degraded: bool,
    /// Time to answer, milliseconds.
    pub latency_ms: f64,
}

macro_rules! codec {
    ($($t:ty),*) => {$(
        impl $t {
            /// Decodes the payload (version checked first).
            pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
                decode(bytes)
            }

            /// The payload bytes.
            pub fn encode(&self) -> Vec<u8> {
                encode(self)
            }
        }
    )*};
}
codec!(Status, Telemetry, Event);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_payloads_are_typed_errors() {
        assert!(matches!(
            Status::decode(b"nope"),
            Err(PayloadError::Json(_))
        ));
        assert_eq!(Status::decode(b"[1]"), Err(PayloadError::NotObject));
        assert_eq!(
            Status::decode(br#"{"state":"online"}"#),
            Err(PayloadError::MissingVersion)
        );
        assert_eq!(
            Status::decode(br#"{"v":2,"state":"online"}"#),
            Err(PayloadError::Version { found: "2".into() })
        );
        assert_eq!(
            Status::decode(br#"{"v":"1","state":"online"}"#),
            Err(PayloadError::Version {
                found: "\"1\"".into()
            })
        );
        assert!(matches!(
            Status::decode(br#"{"v":1,"state":"sleeping"}"#),
            Err(PayloadError::Invalid(_))
        ));
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            Telemetry::decode(&big),
            Err(PayloadError::TooLarge { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored_in_device_payloads() {
        let s = Status::decode(br#"{"v":1,"state":"offline","battery":0.5}"#).expect("decodes");
        assert_eq!(s.state, State::Offline);
    }

    #[test]
    fn last_will_round_trips() {
        let will = Status::last_will();
        assert_eq!(Status::decode(&will.encode()), Ok(will));
    }
}
