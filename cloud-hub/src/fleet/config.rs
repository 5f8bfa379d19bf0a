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
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("state"),
            cache_bytes: 16 * 1024 * 1024,
            series: crate::series::SeriesConfig::default(),
        }
    }
}

impl FleetConfig {
    /// What is wrong with it, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        self.series.problems()
    }
}
