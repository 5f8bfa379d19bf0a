//! Telemetry: one set of counters and histograms behind both Prometheus `/metrics` and MQTT
//! telemetry (flow 4).
//!
//! # Layout
//! - [`metrics`]: the engine's counters and histograms (re-exported).
//! - [`counters`]: the agent's own: route mix, MQTT link.
//! - [`events`]: sampled per-inference events.
//! - [`offline`]: what the broker cannot take, kept in the durable queue.
//! - [`process`]: CPU time and resident memory.
//! - [`report`]: the `online` status and telemetry payloads built from all of the above.
//! - [`service`]: the MQTT side of the agent (link, periodic telemetry, events, commands).

pub mod counters;
pub mod events;
pub mod offline;
pub mod process;
pub mod report;
pub mod service;

pub use counters::{AgentCounters, Class, MqttCounters};
pub use report::Reporter;
pub use service::MqttService;
pub use tandem_engine::metrics::{self, Metrics};
