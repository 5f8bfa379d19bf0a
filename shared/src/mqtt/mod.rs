//! The MQTT contract between agents, the hub and the broker (docs/mqtt.md): topic names and
//! the versioned JSON payloads carried on them. Sans-IO: callers hand in topic strings and
//! payload bytes.
//!
//! # Layout
//! - [`topic`]: the topics `tandem/{device}/status|telemetry|events|cmd/{name}|cmd/{name}/result`,
//!   builders, the hub's subscription filters, and a parser for incoming topics.
//! - [`payload`]: the version check every payload goes through, and the device-to-hub payloads
//!   ([`Status`], [`Telemetry`], [`Event`]).
//! - [`camera`]: the cameras a device streams, in its telemetry ([`CameraTelemetry`]).
//! - [`objects`]: object events from a camera's tracker ([`ObjectEvent`]).
//! - [`snapshot`]: snapshot requests for a camera and their replies (the JPEG in base64).
//! - [`command`]: the commands and their results (`set_threshold`, `set_policy`, ...).
//! - [`args`]: the ranges of command arguments (thresholds per signal, model names, versions).
//! - [`url`]: broker addresses (`mqtts://HOST[:PORT]`).
//!
//! # Invariants
//! - Every payload is a JSON object with `"v": 1`; decoding anything else (not JSON, not an
//!   object, another version, a missing or wrongly typed field) is a typed error, never a panic.
//! - Identity comes from the TLS certificate (the broker confines a device to
//!   `tandem/{its name}/#`): no payload carries a device name that anyone trusts.
//! - Device-to-hub payloads ignore unknown fields (a newer agent may add some without a version
//!   bump); commands refuse them, so a misspelt key is an error rather than a silent no-op.

pub mod args;
pub mod camera;
pub mod command;
pub mod objects;
pub mod payload;
pub mod snapshot;
pub mod topic;
pub mod url;

pub use args::ArgError;
pub use camera::CameraTelemetry;
pub use command::{
    Command, CommandError, CommandName, CommandResult, PolicyMode, PolicyView, ThresholdSource,
};
pub use objects::{GoneReason, ObjectEvent, ObjectEventType, SnapshotRef};
pub use payload::{
    Event, Histogram, ModelStatus, ModelTelemetry, MqttCounters, PayloadError, ProcessStats,
    QueueStats, RouteCount, State, Status, Telemetry, ThresholdView, UpdateReport, VERSION,
};
pub use snapshot::{SnapshotErrorCode, SnapshotImage, SnapshotReply, SnapshotRequest};
pub use topic::{Topic, TopicError, TopicKind, valid_camera_id, valid_device_name};
pub use url::{BrokerUrl, UrlError};
