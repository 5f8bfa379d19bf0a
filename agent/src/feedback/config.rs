//! `[feedback]` in the agent config: which answers become hard examples for the hub's dataset
//! (rate and caps), and how many recent requests are kept so a person can correct them.

use serde::{Deserialize, Serialize};

/// `[feedback]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Keep hard examples at all (inputs the cascade offloaded, or wanted to and could not).
    pub enabled: bool,
    /// Share of eligible answers kept, 0.0–1.0 (before the caps).
    pub sample_rate: f64,
    /// At most this many hard examples per minute (0 = no cap).
    pub max_per_minute: u32,
    /// At most this many per hour (0 = no cap).
    pub max_per_hour: u32,
    /// At most this many per day (0 = no cap).
    pub max_per_day: u32,
    /// Recent requests kept (input and answers) so `POST /v1/feedback` can correct them.
    pub recent_requests: usize,
    /// Bytes of input those recent requests may hold; the oldest go first.
    pub recent_max_bytes: usize,
    /// Hard examples waiting to be written to the queue; when full, new ones are dropped and
    /// counted (inference never waits for the disk).
    pub max_pending: usize,
    /// Send shadow samples (default false): a share of the inputs answered confidently on the
    /// device (answered locally as usual) also goes to the hub, which judges them with the
    /// cloud model. The privacy switch: it sends inputs that would otherwise stay on the
    /// device (`enabled = false` stops every input leaving it).
    pub shadow_enabled: bool,
    /// Share of confident answers sampled, 0.0–1.0 (default 0.01).
    pub shadow_rate: f64,
    /// At most this many shadow samples per minute (default 6; 0 = no cap).
    pub shadow_max_per_minute: u32,
    /// At most this many input bytes of shadow samples per hour (default 8388608, 8 MiB;
    /// 0 = no cap).
    pub shadow_max_bytes_per_hour: u64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_rate: 1.0,
            max_per_minute: 60,
            max_per_hour: 600,
            max_per_day: 5000,
            recent_requests: 256,
            recent_max_bytes: 32 * 1024 * 1024,
            max_pending: 64,
            shadow_enabled: false,
            shadow_rate: 0.01,
            shadow_max_per_minute: 6,
            shadow_max_bytes_per_hour: 8 << 20,
        }
    }
}

impl FeedbackConfig {
    /// Every problem with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(0.0..=1.0).contains(&self.sample_rate) {
            p.push("feedback.sample_rate must be between 0.0 and 1.0".into());
        }
        if !(0.0..=1.0).contains(&self.shadow_rate) {
            p.push("feedback.shadow_rate must be between 0.0 and 1.0".into());
        }
        if self.max_pending == 0 {
            p.push("feedback.max_pending must be at least 1".into());
        }
        p
    }
}
