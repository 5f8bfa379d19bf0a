//! The detection-aware cascade's per-frame policy (manifest `detection.cascade`, overridable
//! per model in the agent's `[policy.models.NAME]`): which frames a detection model is unsure
//! of. A frame is unsure when at least `uncertain_boxes` of its boxes score in the uncertain
//! band `[uncertain_low, uncertain_high)` (the band may reach under the answer's
//! `score_threshold`: the variant then decodes down to `uncertain_low` and keeps those boxes
//! for the signals only), or when it holds more than `max_boxes` boxes (a crowded frame).

use super::{Detection, DetectionSignals};
use serde::{Deserialize, Serialize};

/// Why a cascade policy is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CascadeError {
    /// The band is not `0 <= low < high <= 1`.
    #[error("uncertain band [{low}, {high}) must satisfy 0 <= uncertain_low < uncertain_high <= 1")]
    Band {
        /// Lower end.
        low: f32,
        /// Upper end.
        high: f32,
    },
    /// `uncertain_boxes` is 0: every frame would be offloaded.
    #[error("uncertain_boxes must be at least 1 (0 offloads every frame: use mode `cloud`)")]
    NoBoxes,
}

/// When a detection model's frame goes to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeSpec {
    /// Lower end of the uncertain score band (0..1).
    pub uncertain_low: f32,
    /// Upper end of the band, excluded (0..1, above `uncertain_low`).
    pub uncertain_high: f32,
    /// A frame with at least this many boxes in the band is offloaded (default 1).
    #[serde(default = "one")]
    pub uncertain_boxes: usize,
    /// A frame with more kept boxes than this is offloaded (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_boxes: Option<usize>,
}

fn one() -> usize {
    1
}

impl CascadeSpec {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), CascadeError> {
        let (low, high) = (self.uncertain_low, self.uncertain_high);
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low < high && high <= 1.0) {
            return Err(CascadeError::Band { low, high });
        }
        if self.uncertain_boxes == 0 {
            return Err(CascadeError::NoBoxes);
        }
        Ok(())
    }

    /// The signals of one frame: `boxes` as answered, `below` the boxes NMS kept under the
    /// answer threshold (counted in the band only).
    pub fn signals(&self, boxes: &[Detection], below: &[Detection]) -> DetectionSignals {
        let band = self.uncertain_low..self.uncertain_high;
        let mut s = DetectionSignals::of(boxes);
        s.uncertain = boxes
            .iter()
            .chain(below)
            .filter(|d| band.contains(&d.score))
            .count();
        s
    }

    /// Whether a frame with these signals is answered locally.
    pub fn confident(&self, s: &DetectionSignals) -> bool {
        s.uncertain < self.uncertain_boxes && self.max_boxes.is_none_or(|m| s.count <= m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(score: f32) -> Detection {
        Detection {
            bbox: [0.0, 0.0, 1.0, 1.0],
            class: 0,
            label: "person".into(),
            score,
        }
    }

    const SPEC: CascadeSpec = CascadeSpec {
        uncertain_low: 0.3,
        uncertain_high: 0.5,
        uncertain_boxes: 2,
        max_boxes: Some(3),
    };

    #[test]
    fn the_band_counts_boxes_under_the_answer_threshold_too() {
        let s = SPEC.signals(&[d(0.9), d(0.45)], &[d(0.31), d(0.2)]);
        assert_eq!(
            (s.count, s.uncertain, s.min_score, s.max_score),
            (2, 2, 0.45, 0.9)
        );
        assert!(!SPEC.confident(&s));
        let s = SPEC.signals(&[d(0.9), d(0.5)], &[d(0.29)]);
        assert_eq!(
            s.uncertain, 0,
            "the band's top is excluded, its bottom included"
        );
        assert!(SPEC.confident(&s));
        let crowded = SPEC.signals(&[d(0.9), d(0.8), d(0.7), d(0.6)], &[]);
        assert!(!SPEC.confident(&crowded));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(SPEC.validate().is_ok());
        let bad = CascadeSpec {
            uncertain_low: 0.5,
            uncertain_high: 0.5,
            ..SPEC
        };
        assert!(matches!(bad.validate(), Err(CascadeError::Band { .. })));
        let nan = CascadeSpec {
            uncertain_high: f32::NAN,
            ..SPEC
        };
        assert!(nan.validate().is_err());
        let zero = CascadeSpec {
            uncertain_boxes: 0,
            ..SPEC
        };
        assert_eq!(zero.validate(), Err(CascadeError::NoBoxes));
        let parsed: CascadeSpec =
            serde_json::from_str(r#"{"uncertain_low":0.3,"uncertain_high":0.5}"#).expect("parses");
        assert_eq!((parsed.uncertain_boxes, parsed.max_boxes), (1, None));
    }
}
