//! Telemetry: the counters and histograms behind Prometheus `/metrics` (and, later, MQTT
//! telemetry from the same numbers).

pub mod metrics;

pub use metrics::Metrics;
