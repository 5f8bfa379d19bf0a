//! `[policy]` in the agent config: the default routing mode and deadline, and per-model
//! overrides. The router holds it behind a lock so an operator can change it at run time
//! (MQTT `cmd/set_policy`, `cmd/set_threshold`).

use crate::policy::Mode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tandem_shared::manifest::Signal;

/// `[policy]` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Default mode: `local`, `cloud` or `cascade` (offloading needs `[hub]`).
    pub mode: Mode,
    /// Default deadline for requests that set none, in milliseconds (0 = none).
    pub deadline_ms: u32,
    /// Per-model overrides.
    pub models: BTreeMap<String, ModelPolicyConfig>,
}

/// `[policy.models.NAME]`: any key left out comes from `[policy]` or the model's manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelPolicyConfig {
    /// Mode for this model.
    pub mode: Option<Mode>,
    /// Signal the threshold applies to (`max_prob`, `margin`, `entropy`).
    pub signal: Option<Signal>,
    /// Threshold (default: the manifest's suggestion).
    pub threshold: Option<f32>,
    /// Default deadline, milliseconds.
    pub deadline_ms: Option<u32>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Cascade,
            deadline_ms: 0,
            models: BTreeMap::new(),
        }
    }
}
