//! `[fleet]` in the hub config: where fleet state is kept, and the bounds of the per-device
//! time series (`[fleet.series]`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[fleet]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Folder of the fleet database (`fleet.db`, sled): per device, last seen, status,
    /// versions and the last telemetry.
    pub dir: PathBuf,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// `[fleet.series]`: the per-device time series for the console (in memory; bounds).
    pub series: crate::series::SeriesConfig,
    /// Longest wait for a device's reply to a snapshot request
    /// (`GET /v1/fleet/{device}/cameras/{camera}/snapshot.jpg`; its `timeout_ms` overrides it),
    /// milliseconds (1-60000). Default 5000.
    pub snapshot_timeout_ms: u64,
    /// Snapshot requests waiting for devices at once (1-64); more are answered 429, never
    /// queued. Default 8.
    pub snapshot_max_inflight: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("state"),
            cache_bytes: 16 * 1024 * 1024,
            series: crate::series::SeriesConfig::default(),
            snapshot_timeout_ms: 5000,
            snapshot_max_inflight: 8,
        }
    }
}

impl FleetConfig {
    /// What is wrong with it, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.series.problems();
        if !(1..=60_000).contains(&self.snapshot_timeout_ms) {
            p.push("fleet.snapshot_timeout_ms must be 1-60000".into());
        }
        if !(1..=64).contains(&self.snapshot_max_inflight) {
            p.push("fleet.snapshot_max_inflight must be 1-64".into());
        }
        p
    }
}
