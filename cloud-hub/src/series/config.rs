//! `[fleet.series]` in the hub config: the bounds of the per-device time series.

use serde::{Deserialize, Serialize};

/// `[fleet.series]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeriesConfig {
    /// Points kept per device, oldest evicted first (one per telemetry message: 2880 is 8
    /// hours at the agent's default 10 s interval). Default 2880; 1 to 1,000,000.
    pub points_per_device: usize,
    /// Version markers kept per device, oldest evicted first. Default 64; 1 to 10,000.
    pub markers_per_device: usize,
    /// The device's last sampled inference events (`tandem/{device}/events`) kept for the
    /// console, oldest evicted first. Default 32; 0 (none) to 1,000.
    pub events_per_device: usize,
    /// Memory for all devices' series, in bytes (points, markers and per-device state as
    /// accounted by the store); over it, the oldest point of the device with the most points
    /// goes first. Default 67108864 (64 MiB); at least 1 MiB.
    pub max_bytes: usize,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        Self {
            points_per_device: 2880,
            markers_per_device: 64,
            events_per_device: 32,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl SeriesConfig {
    /// What is wrong with it, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=1_000_000).contains(&self.points_per_device) {
            p.push(format!(
                "fleet.series.points_per_device: {} is not in 1..=1000000",
                self.points_per_device
            ));
        }
        if !(1..=10_000).contains(&self.markers_per_device) {
            p.push(format!(
                "fleet.series.markers_per_device: {} is not in 1..=10000",
                self.markers_per_device
            ));
        }
        if self.events_per_device > 1000 {
            p.push(format!(
                "fleet.series.events_per_device: {} is not in 0..=1000",
                self.events_per_device
            ));
        }
        if self.max_bytes < 1024 * 1024 {
            p.push(format!(
                "fleet.series.max_bytes: {} is under 1 MiB (1048576)",
                self.max_bytes
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_bounds_name_their_keys() {
        assert!(SeriesConfig::default().problems().is_empty());
        let bad = SeriesConfig {
            points_per_device: 0,
            markers_per_device: 10_001,
            events_per_device: 1001,
            max_bytes: 1000,
        };
        let p = bad.problems().join("; ");
        for key in [
            "points_per_device",
            "markers_per_device",
            "events_per_device",
            "max_bytes",
        ] {
            assert!(p.contains(&format!("fleet.series.{key}")), "{p}");
        }
    }
}
