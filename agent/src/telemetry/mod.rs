//! Telemetry: the counters and histograms behind Prometheus `/metrics` (and, later, MQTT
//! telemetry from the same numbers).

pub use tandem_engine::metrics::{self, Metrics};
