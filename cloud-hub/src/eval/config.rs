//! `[eval]`: where reports are kept and the bounds of one evaluation.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[eval]`: model evaluation (`tandem-hub eval`, `POST /v1/eval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Folder of the report store (default `eval`, relative to the config file).
    pub dir: PathBuf,
    /// Most items one evaluation judges (each shift judges them again; default 20000).
    pub max_items: usize,
    /// Length of a time-window slice in milliseconds (default 3600000, one hour; 0: none).
    pub window_ms: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("eval"),
            max_items: 20_000,
            window_ms: 3_600_000,
        }
    }
}

impl EvalConfig {
    /// What is wrong with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_items == 0 {
            p.push("eval.max_items must be > 0".into());
        }
        p
    }
}
