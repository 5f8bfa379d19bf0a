//! Commands on `tandem/{device}/cmd/{name}` and their results on `.../cmd/{name}/result`.
//!
//! A command payload is `{"v": 1, "id": "...", ...fields of the command}`; unknown fields are
//! refused, and so is an argument out of its range ([`super::args`]: a threshold outside its
//! signal's range, NaN, a model name or version that is not one). Every command, well-formed or
//! not, gets a [`CommandResult`] with the same `id` (or `null` when none could be read), `ok`,
//! and `error` when it failed.

use super::args::{ArgError, check_model_name, check_threshold, check_version};
use super::payload::{PayloadError, VERSION, versioned_object};
use crate::manifest::Signal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest command payload decoded, in bytes.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// Longest command id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// A routing mode, as commands and results spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Always answer on the device.
    Local,
    /// Always ask the hub.
    Cloud,
    /// Ask the hub when the local answer is not confident enough.
    Cascade,
}

/// Where a model's routing threshold comes from (reported in telemetry; carried by
/// `set_threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdSource {
    /// The model's manifest (nothing set it on the device).
    Manifest,
    /// Fitted by the hub's calibration and pushed as desired state.
    HubCalibrated,
    /// Set by a person: the agent's config file, an operator's command or a hub pin.
    Operator,
}

impl ThresholdSource {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::HubCalibrated => "hub-calibrated",
            Self::Operator => "operator",
        }
    }
}

/// The commands this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    /// `set_threshold`.
    SetThreshold,
    /// `set_policy`.
    SetPolicy,
    /// `telemetry_now`.
    TelemetryNow,
    /// `update_model`.
    UpdateModel,
}

impl CommandName {
    /// Every known command.
    pub const ALL: [CommandName; 4] = [
        Self::SetThreshold,
        Self::SetPolicy,
        Self::TelemetryNow,
        Self::UpdateModel,
    ];

    /// The topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SetThreshold => "set_threshold",
            Self::SetPolicy => "set_policy",
            Self::TelemetryNow => "telemetry_now",
            Self::UpdateModel => "update_model",
        }
    }

    /// The command a topic level names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// A decoded command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Set one model's confidence threshold (and optionally the signal it applies to).
    SetThreshold {
        /// Model.
        model: String,
        /// Threshold, in the signal's range (in [0, 1] when no signal is named).
        threshold: f32,
        /// Signal; unchanged when absent.
        signal: Option<Signal>,
        /// Who set it: `hub-calibrated` or `operator` (absent: `operator`); the device keeps
        /// the value across restarts and reports it with this source. `manifest` is refused.
        source: Option<ThresholdSource>,
    },
    /// Set the routing mode of one model, or the default when `model` is absent.
    SetPolicy {
        /// Model; the default mode when absent.
        model: Option<String>,
        /// Mode.
        mode: PolicyMode,
    },
    /// Publish telemetry at once.
    TelemetryNow,
    /// Download a model version from the hub's registry and install it (flow 5); `rollback`:
    /// an older version than the serving one is accepted.
    UpdateModel {
        /// Model.
        model: String,
        /// Version (in the hub's registry).
        version: String,
        /// An ordered rollback.
        rollback: bool,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetThresholdBody {
    #[allow(dead_code)]
    v: u32,
    #[allow(dead_code)]
    id: String,
    model: String,
    threshold: f32,
    #[serde(default)]
    signal: Option<Signal>,
    #[serde(default)]
    source: Option<ThresholdSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPolicyBody {
    #[allow(dead_code)]
    v: u32,
    #[allow(dead_code)]
    id: String,
    #[serde(default)]
    model: Option<String>,
    mode: PolicyMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateModelBody {
    #[allow(dead_code)]
    v: u32,
    #[allow(dead_code)]
    id: String,
    model: String,
    version: String,
    #[serde(default)]
    rollback: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {
    #[allow(dead_code)]
    v: u32,
    #[allow(dead_code)]
    id: String,
}

/// A command that cannot be decoded, with the id when it could be read (for the result).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct CommandError {
    /// The command's id, when the payload carried a readable one.
    pub id: Option<String>,
    /// What is wrong.
    pub error: PayloadError,
}

fn invalid(e: serde_json::Error) -> PayloadError {
    PayloadError::Invalid(e.to_string())
}

impl Command {
    /// The command's name.
    pub fn name(&self) -> CommandName {
        match self {
            Self::SetThreshold { .. } => CommandName::SetThreshold,
            Self::SetPolicy { .. } => CommandName::SetPolicy,
            Self::TelemetryNow => CommandName::TelemetryNow,
            Self::UpdateModel { .. } => CommandName::UpdateModel,
        }
    }

    /// Decodes the payload of `tandem/{device}/cmd/{name}`: returns the id and the command.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<(String, Command), CommandError> {
        let fail = |id: Option<String>, error| CommandError { id, error };
        let map = versioned_object(bytes, MAX_COMMAND_BYTES).map_err(|e| {
            // Still try to read the id of a versioned-but-wrong payload for the result.
            let id = serde_json::from_slice::<Map<String, Value>>(bytes)
                .ok()
                .and_then(|m| readable_id(&m));
            fail(id, e)
        })?;
        let id = readable_id(&map);
        let Some(id) = id else {
            return Err(fail(
                None,
                PayloadError::Invalid(format!("`id` must be a string of 1-{MAX_ID_BYTES} bytes")),
            ));
        };
        let Some(known) = CommandName::parse(name) else {
            return Err(fail(Some(id), PayloadError::UnknownCommand(name.into())));
        };
        let value = Value::Object(map);
        let cmd = match known {
            CommandName::SetThreshold => {
                serde_json::from_value::<SetThresholdBody>(value).map(|b| Command::SetThreshold {
                    model: b.model,
                    threshold: b.threshold,
                    signal: b.signal,
                    source: b.source,
                })
            }
            CommandName::SetPolicy => {
                serde_json::from_value::<SetPolicyBody>(value).map(|b| Command::SetPolicy {
                    model: b.model,
                    mode: b.mode,
                })
            }
            CommandName::TelemetryNow => {
                serde_json::from_value::<EmptyBody>(value).map(|_| Command::TelemetryNow)
            }
            CommandName::UpdateModel => {
                serde_json::from_value::<UpdateModelBody>(value).map(|b| Command::UpdateModel {
                    model: b.model,
                    version: b.version,
                    rollback: b.rollback,
                })
            }
        }
        .map_err(|e| fail(Some(id.clone()), invalid(e)))?;
        cmd.check()
            .map_err(|e| fail(Some(id.clone()), PayloadError::Argument(e.to_string())))?;
        Ok((id, cmd))
    }

    /// Checks every argument against its range (see [`super::args`]).
    pub fn check(&self) -> Result<(), ArgError> {
        match self {
            Self::SetThreshold {
                model,
                threshold,
                signal,
                source,
            } => {
                check_model_name(model)?;
                if *source == Some(ThresholdSource::Manifest) {
                    return Err(ArgError::Source);
                }
                check_threshold(*signal, *threshold)
            }
            Self::SetPolicy { model, .. } => model.as_deref().map_or(Ok(()), check_model_name),
            Self::TelemetryNow => Ok(()),
            Self::UpdateModel { model, version, .. } => {
                check_model_name(model)?;
                check_version(version)
            }
        }
    }

    /// The payload for this command with `id`.
    pub fn encode(&self, id: &str) -> Vec<u8> {
        let body = match self {
            Self::SetThreshold {
                model,
                threshold,
                signal,
                source,
            } => Body::SetThreshold {
                model,
                threshold: *threshold,
                signal: *signal,
                source: *source,
            },
            Self::SetPolicy { model, mode } => Body::SetPolicy {
                model: model.as_deref(),
                mode: *mode,
            },
            Self::TelemetryNow => Body::Empty {},
            Self::UpdateModel {
                model,
                version,
                rollback,
            } => Body::UpdateModel {
                model,
                version,
                rollback: *rollback,
            },
        };
        let out = Out {
            v: VERSION,
            id,
            body,
        };
        serde_json::to_vec(&out).unwrap_or_default()
    }
}

/// A command payload as written (floats stay `f32`, so `0.8` is written `0.8`).
#[derive(Serialize)]
struct Out<'a> {
    v: u32,
    id: &'a str,
    #[serde(flatten)]
    body: Body<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    SetThreshold {
        model: &'a str,
        threshold: f32,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<Signal>,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<ThresholdSource>,
    },
    SetPolicy {
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<&'a str>,
        mode: PolicyMode,
    },
    UpdateModel {
        model: &'a str,
        version: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        rollback: bool,
    },
    Empty {},
}

fn readable_id(m: &Map<String, Value>) -> Option<String> {
    match m.get("id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Some(s.clone()),
        _ => None,
    }
}

/// The routing of a model (or the default) after a command changed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    /// Model; absent for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Mode in force.
    pub mode: PolicyMode,
    /// Signal the threshold applies to (models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// Threshold in force (models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Where that threshold comes from (models only; absent from agents before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ThresholdSource>,
}

/// `tandem/{device}/cmd/{name}/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Payload version.
    pub v: u32,
    /// The command's id; `null` when it could not be read.
    pub id: Option<String>,
    /// Whether the command was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The routing now in force (`set_threshold`, `set_policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyView>,
    /// The sequence number of the telemetry published (`telemetry_now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_seq: Option<u64>,
}

impl CommandResult {
    /// Success.
    pub fn ok(id: &str) -> Self {
        Self {
            v: VERSION,
            id: Some(id.to_string()),
            ok: true,
            error: None,
            policy: None,
            telemetry_seq: None,
        }
    }

    /// Failure.
    pub fn error(id: Option<&str>, error: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            id: id.map(str::to_string),
            ok: false,
            error: Some(error.into()),
            policy: None,
            telemetry_seq: None,
        }
    }

    /// Decodes a result (version checked first).
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        super::payload::decode(bytes)
    }

    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        super::payload::encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for cmd in [
            Command::SetThreshold {
                model: "m".into(),
                threshold: 0.75,
                signal: Some(Signal::Margin),
                source: Some(ThresholdSource::HubCalibrated),
            },
            Command::SetThreshold {
                model: "m".into(),
                threshold: 0.5,
                signal: None,
                source: None,
            },
            Command::SetPolicy {
                model: None,
                mode: PolicyMode::Cloud,
            },
            Command::SetPolicy {
                model: Some("m".into()),
                mode: PolicyMode::Local,
            },
            Command::TelemetryNow,
            Command::UpdateModel {
                model: "m".into(),
                version: "1.0.2".into(),
                rollback: true,
            },
        ] {
            let bytes = cmd.encode("c-1");
            let (id, back) = Command::decode(cmd.name().as_str(), &bytes).expect("decodes");
            assert_eq!((id.as_str(), &back), ("c-1", &cmd));
        }
    }

    #[test]
    fn malformed_commands_keep_their_id_when_readable() {
        let e = Command::decode("set_threshold", br#"{"v":1,"id":"c-2","model":"m"}"#)
            .expect_err("no threshold");
        assert_eq!(e.id.as_deref(), Some("c-2"));
        assert!(e.to_string().contains("threshold"), "{e}");
        let e = Command::decode(
            "set_threshold",
            br#"{"v":1,"id":"c-3","model":"m","treshold":1}"#,
        )
        .expect_err("misspelt key");
        assert!(e.to_string().contains("treshold"), "{e}");
        let e = Command::decode("reboot", br#"{"v":1,"id":"c-4"}"#).expect_err("unknown");
        assert_eq!(e.id.as_deref(), Some("c-4"));
        assert!(matches!(e.error, PayloadError::UnknownCommand(_)));
        let e = Command::decode("set_policy", br#"{"v":9,"id":"c-5","mode":"local"}"#)
            .expect_err("version");
        assert_eq!(e.id.as_deref(), Some("c-5"));
        assert!(matches!(e.error, PayloadError::Version { .. }));
        let e = Command::decode("telemetry_now", b"{not json").expect_err("json");
        assert_eq!(e.id, None);
        let e = Command::decode("telemetry_now", br#"{"v":1}"#).expect_err("no id");
        assert_eq!(e.id, None);
        let e = Command::decode("set_policy", br#"{"v":1,"id":"c-6","mode":"sometimes"}"#)
            .expect_err("bad mode");
        assert_eq!(e.id.as_deref(), Some("c-6"));
    }

    #[test]
    fn arguments_out_of_range_are_refused_with_their_id() {
        for (name, body) in [
            ("set_threshold", r#""model":"m","threshold":5.0"#),
            (
                "set_threshold",
                r#""model":"m","threshold":1.5,"signal":"max_prob""#,
            ),
            (
                "set_threshold",
                r#""model":"m","threshold":-0.1,"signal":"margin""#,
            ),
            (
                "set_threshold",
                r#""model":"m","threshold":17,"signal":"entropy""#,
            ),
            ("set_threshold", r#""model":"m","threshold":1e39"#),
            ("set_threshold", r#""model":"../m","threshold":0.5"#),
            (
                "set_threshold",
                r#""model":"m","threshold":0.5,"source":"manifest""#,
            ),
            ("set_policy", r#""model":"M/x","mode":"local""#),
            ("update_model", r#""model":"m","version":"../../etc""#),
            ("update_model", r#""model":"","version":"1.0.0""#),
        ] {
            let bytes = format!(r#"{{"v":1,"id":"c-9",{body}}}"#);
            let e = Command::decode(name, bytes.as_bytes()).expect_err(&bytes);
            assert_eq!(e.id.as_deref(), Some("c-9"), "{bytes}");
            assert!(matches!(e.error, PayloadError::Argument(_)), "{bytes}: {e}");
        }
        let (_, c) = Command::decode(
            "set_threshold",
            br#"{"v":1,"id":"c-10","model":"m","threshold":2.5,"signal":"entropy"}"#,
        )
        .expect("an entropy threshold above 1");
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn results_round_trip() {
        let mut r = CommandResult::ok("c-1");
        r.policy = Some(PolicyView {
            model: Some("m".into()),
            mode: PolicyMode::Cascade,
            signal: Some(Signal::MaxProb),
            threshold: Some(0.8),
            source: Some(ThresholdSource::Operator),
        });
        assert_eq!(CommandResult::decode(&r.encode()), Ok(r));
        let e = CommandResult::error(None, "payload is not JSON");
        assert_eq!(CommandResult::decode(&e.encode()), Ok(e));
    }
}
