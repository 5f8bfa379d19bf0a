//! `[calibrate]`: where calibrations are kept, how many samples a fit needs, the strata's
//! weights and how desired thresholds are pushed.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[calibrate]`: routing-threshold calibration (`tandem-hub calibrate`, `/v1/calibrations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrateConfig {
    /// Folder of the calibration store (default `calibrate`, relative to the config file).
    pub dir: PathBuf,
    /// Fewest samples in the calibration split to fit on (default 200); fewer: refused.
    pub min_fit_samples: u64,
    /// Fewest samples in the test split to report on (default 100); fewer: refused.
    pub min_test_samples: u64,
    /// Share of cloud-only accuracy `keep_accuracy` keeps when the request names none
    /// (default 0.995).
    pub keep_accuracy_factor: f64,
    /// Weight of a shadow sample: 1 / the fleet's `feedback.shadow_rate` (default 100, for
    /// the agent's default rate 0.01).
    pub shadow_weight: f64,
    /// Weight of a hard example: 1 / the fleet's `feedback.sample_rate` (default 1).
    pub hard_weight: f64,
    /// Fewest correction-labelled samples where the edge and the cloud model disagree, in a
    /// split, for the split's corrections to judge its teacher-labelled samples
    /// (`calibrate::truth`; default 20); fewer: the teacher's labels are taken as the truth.
    pub min_corrected_disagreements: u64,
    /// How often desired thresholds are compared with what devices report, in milliseconds
    /// (default 2000).
    pub push_every_ms: u64,
    /// Longest wait before a device that still reports another threshold is commanded again,
    /// in milliseconds (default 30000).
    pub resend_after_ms: u64,
}

impl Default for CalibrateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("calibrate"),
            min_fit_samples: 200,
            min_test_samples: 100,
            keep_accuracy_factor: 0.995,
            shadow_weight: 100.0,
            hard_weight: 1.0,
            min_corrected_disagreements: 20,
            push_every_ms: 2000,
            resend_after_ms: 30_000,
        }
    }
}

impl CalibrateConfig {
    /// What is wrong with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.keep_accuracy_factor > 0.0 && self.keep_accuracy_factor <= 1.0) {
            p.push("calibrate.keep_accuracy_factor must be in (0, 1]".into());
        }
        for (key, w) in [
            ("shadow_weight", self.shadow_weight),
            ("hard_weight", self.hard_weight),
        ] {
            if !(w.is_finite() && w > 0.0) {
                p.push(format!("calibrate.{key} must be a positive number"));
            }
        }
        if self.min_fit_samples == 0 || self.min_test_samples == 0 {
            p.push("calibrate.min_fit_samples and min_test_samples must be > 0".into());
        }
        if self.push_every_ms == 0 {
            p.push("calibrate.push_every_ms must be > 0".into());
        }
        p
    }
}
