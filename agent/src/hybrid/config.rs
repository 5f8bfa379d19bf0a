//! `[policy]` in the agent config: the default routing mode and deadline, and per-model
//! overrides (a detection model's uncertain band and box count among them). The router holds it
//! behind a lock so an operator can change it at run time (MQTT `cmd/set_policy`,
//! `cmd/set_threshold`).

use crate::policy::Mode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tandem_shared::detect::cascade::CascadeSpec;
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
    /// Where thresholds set at run time (`set_threshold` from an operator or the hub's
    /// calibration) are kept so they survive restarts (default `thresholds.json`, relative to
    /// the config file; empty: kept in memory only). They win over `models.NAME.threshold`.
    /// Read at start.
    pub thresholds_file: std::path::PathBuf,
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
    /// Detection models: bottom of the uncertain score band (0..1; default: the manifest's
    /// `detection.cascade.uncertain_low`). A band reaching under the variant's decode floor
    /// (`DetectionSpec::candidate_floor`) counts no box there.
    pub uncertain_low: Option<f32>,
    /// Detection models: top of the band, excluded (0..1; default: the manifest's).
    pub uncertain_high: Option<f32>,
    /// Detection models: frames with at least this many boxes in the band go to the hub
    /// (>= 1; default: the manifest's, else 1).
    pub uncertain_boxes: Option<usize>,
    /// Detection models: frames with more boxes than this go to the hub (default: the
    /// manifest's, else no limit).
    pub max_boxes: Option<usize>,
    /// Detection models: bottom of the second band, for boxes of classes outside
    /// `common_classes` (0..1; default: the manifest's `detection.cascade.rare_low`). Setting
    /// it without `rare_high` needs the manifest's.
    pub rare_low: Option<f32>,
    /// Detection models: top of the second band, excluded (0..1; default: the manifest's).
    pub rare_high: Option<f32>,
    /// Detection models: frames with at least this many boxes in the second band go to the
    /// hub (>= 1; default: the manifest's, else 1).
    pub rare_boxes: Option<usize>,
    /// Detection models: labels the second band does not count (default: the manifest's).
    pub common_classes: Option<Vec<String>>,
}

impl ModelPolicyConfig {
    /// The detection frame policy in force: the manifest's, with the keys set here on top.
    /// `None` when neither gives a band.
    pub fn boxes(&self, manifest: Option<CascadeSpec>) -> Option<CascadeSpec> {
        let base = manifest
            .or_else(|| Some(CascadeSpec::band(self.uncertain_low?, self.uncertain_high?)))?;
        Some(CascadeSpec {
            uncertain_low: self.uncertain_low.unwrap_or(base.uncertain_low),
            uncertain_high: self.uncertain_high.unwrap_or(base.uncertain_high),
            uncertain_boxes: self.uncertain_boxes.unwrap_or(base.uncertain_boxes),
            max_boxes: self.max_boxes.or(base.max_boxes),
            rare_low: self.rare_low.or(base.rare_low),
            rare_high: self.rare_high.or(base.rare_high),
            rare_boxes: self.rare_boxes.or(base.rare_boxes),
            common_classes: self.common_classes.clone().unwrap_or(base.common_classes),
        })
    }

    /// What is wrong with the detection keys (each a `key: problem` line).
    pub fn box_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (key, v) in [
            ("uncertain_low", self.uncertain_low),
            ("uncertain_high", self.uncertain_high),
            ("rare_low", self.rare_low),
            ("rare_high", self.rare_high),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && (0.0..=1.0).contains(&v))
            {
                p.push(format!("{key}: {v} is not a score in 0..1"));
            }
        }
        if let (Some(low), Some(high)) = (self.uncertain_low, self.uncertain_high)
            && low >= high
        {
            p.push(format!(
                "uncertain_low: {low} must be below uncertain_high ({high})"
            ));
        }
        if let (Some(low), Some(high)) = (self.rare_low, self.rare_high)
            && low >= high
        {
            p.push(format!("rare_low: {low} must be below rare_high ({high})"));
        }
        for (key, v) in [
            ("uncertain_boxes", self.uncertain_boxes),
            ("rare_boxes", self.rare_boxes),
        ] {
            if v == Some(0) {
                p.push(format!(
                    "{key}: must be at least 1 (0 offloads every frame: use mode `cloud`)"
                ));
            }
        }
        p
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Cascade,
            deadline_ms: 0,
            models: BTreeMap::new(),
            thresholds_file: std::path::PathBuf::from("thresholds.json"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_band_merges_key_by_key_and_is_checked() {
        let manifest = CascadeSpec {
            rare_low: Some(0.4),
            rare_high: Some(0.6),
            common_classes: vec!["person".into()],
            ..CascadeSpec::band(0.3, 0.65)
        };
        let c = ModelPolicyConfig {
            rare_low: Some(0.2),
            rare_boxes: Some(2),
            ..Default::default()
        };
        let merged = c.boxes(Some(manifest.clone())).expect("a policy");
        assert_eq!(
            (merged.rare_low, merged.rare_high, merged.rare_boxes),
            (Some(0.2), Some(0.6), Some(2))
        );
        assert_eq!(merged.common_classes, manifest.common_classes);
        assert!(merged.validate().is_ok());
        let bad = ModelPolicyConfig {
            rare_low: Some(0.7),
            rare_high: Some(0.5),
            rare_boxes: Some(0),
            ..Default::default()
        };
        let problems = bad.box_problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("rare_low: 0.7 must be below"));
        assert!(problems[1].starts_with("rare_boxes: must be at least 1"));
        assert!(ModelPolicyConfig::default().box_problems().is_empty());
    }
}
