//! Per-device time series for the console's plots: one [`Point`] per telemetry message the hub
//! receives over MQTT (answers by route in the interval, offload share, latency p50/p99, queue
//! depth and bytes, degraded answers), a [`Marker`] where a model's version changes, and the
//! device's last sampled inference events ([`Heard`]).
//!
//! # Layout
//! - [`config`]: `[fleet.series]` (the bounds).
//! - [`derive`](mod@derive): telemetry (cumulative counters) to interval points and version markers.
//! - [`memory`]: [`MemorySeries`], the embedded store: in memory, bounded per device
//!   (points and markers, oldest first) and in total (`max_bytes`), evictions counted.
//! - [`http`]: `GET /v1/fleet/{device}/series?since_ms=&until_ms=&step_ms=`.
//! - this file: the [`SeriesStore`] trait and the answer types.
//!
//! The series is derived state: it starts empty with the hub and is not persisted.

pub mod config;
pub mod derive;
pub mod http;
pub mod memory;

pub use config::SeriesConfig;
pub use memory::MemorySeries;

use serde::{Deserialize, Serialize};
use tandem_shared::mqtt::{Event, Telemetry};

/// One telemetry message, as the plots read it: counts are over the interval since the
/// device's previous message (its whole run so far when it is the first one, or the agent
/// restarted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When the hub received it, milliseconds since the Unix epoch (hub clock).
    pub at_ms: u64,
    /// When the device sent it, milliseconds since the Unix epoch (device clock).
    pub ts_ms: u64,
    /// The device's sequence number.
    pub seq: u64,
    /// The counters started again (first message heard, or the agent restarted).
    pub reset: bool,
    /// Answers from the device's own model in the interval.
    pub local: u64,
    /// Answers from the hub (offloaded) in the interval.
    pub cloud: u64,
    /// Requests with no answer in the interval.
    pub failed: u64,
    /// Answers the policy wanted from the hub that were answered locally (degraded).
    pub degraded: u64,
    /// `cloud / (local + cloud + failed)` in the interval; `None` without answers.
    pub offload_share: Option<f64>,
    /// Median latency of successful inferences in the interval, seconds (all models whose
    /// histogram has the first model's bounds, linear within a bucket); `None` without any.
    pub latency_p50_s: Option<f64>,
    /// 99th percentile latency, as `latency_p50_s`.
    pub latency_p99_s: Option<f64>,
    /// Requests waiting in the models' queues (sum over models).
    pub model_queue_depth: u64,
    /// Records in the store-and-forward queue (`None`: the agent runs none).
    pub queue_depth: Option<u64>,
    /// Bytes of those records.
    pub queue_bytes: Option<u64>,
}

/// A model's version changed on the device (or was first heard: `from` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// When the hub heard it (hub clock, milliseconds since the Unix epoch).
    pub at_ms: u64,
    /// The model.
    pub model: String,
    /// The version before.
    pub from: Option<String>,
    /// The version now.
    pub to: String,
}

/// A sampled inference event the device published, as the hub heard it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heard {
    /// When the hub received it (hub clock, milliseconds since the Unix epoch).
    pub at_ms: u64,
    /// The event.
    pub event: Event,
}

/// What a read returns for one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesAnswer {
    /// The device.
    pub device: String,
    /// Points with `since_ms <= at_ms <= until_ms`, oldest first (merged per `step_ms`).
    pub points: Vec<Point>,
    /// Markers in the same window, oldest first.
    pub markers: Vec<Marker>,
    /// The last sampled inference events in the same window, oldest first.
    #[serde(default)]
    pub events: Vec<Heard>,
    /// Points of this device evicted so far (its bound or the total one).
    pub evicted_points: u64,
    /// The oldest point still kept for the device (hub clock), if any.
    pub oldest_ms: Option<u64>,
}

/// The store's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesStats {
    /// Devices with a series.
    pub devices: u64,
    /// Points kept.
    pub points: u64,
    /// Bytes accounted (points, markers, per-device state).
    pub bytes: u64,
    /// Points evicted (oldest first), per-device bound and total bound together.
    pub evicted_points: u64,
    /// Markers evicted (oldest first).
    pub evicted_markers: u64,
    /// Whole devices dropped to stay under the total bound.
    pub evicted_devices: u64,
}

/// Where per-device series are kept.
pub trait SeriesStore: Send + Sync + std::fmt::Debug {
    /// Adds the point (and markers) derived from `tm`, received at `at_ms` (hub clock).
    fn record(&self, device: &str, tm: &Telemetry, at_ms: u64);
    /// Keeps a sampled inference event of the device, received at `at_ms` (hub clock).
    fn record_event(&self, device: &str, event: &Event, at_ms: u64);
    /// The device's points and markers in `[since_ms, until_ms]`; `None` when it has no
    /// series.
    fn read(&self, device: &str, since_ms: u64, until_ms: u64) -> Option<SeriesAnswer>;
    /// The counters.
    fn stats(&self) -> SeriesStats;
}
