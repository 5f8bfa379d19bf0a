//! The detection-aware cascade's per-frame policy (manifest `detection.cascade`, overridable
//! per model in the agent's `[policy.models.NAME]`): which frames a detection model is unsure
//! of. A frame is unsure when at least `uncertain_boxes` of its boxes score in the uncertain
//! band `[uncertain_low, uncertain_high)` (the band may reach under the answer's
//! `score_threshold`: the variant then decodes down to `uncertain_low` and keeps those boxes
//! for the signals only), when at least `rare_boxes` boxes of a class outside
//! `common_classes` score in the second band `[rare_low, rare_high)` (mAP averages classes,
//! so a doubtful box of a rarely seen class weighs more than one of the common class), or
//! when it holds more than `max_boxes` boxes (a crowded frame).

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
    /// The second band is not `0 <= low < high <= 1`.
    #[error("rare band [{low}, {high}) must satisfy 0 <= rare_low < rare_high <= 1")]
    RareBand {
        /// Lower end.
        low: f32,
        /// Upper end.
        high: f32,
    },
    /// Only one end of the second band is set.
    #[error("rare_low and rare_high go together (one is set without the other)")]
    RareHalf,
    /// `uncertain_boxes` or `rare_boxes` is 0: every frame would be offloaded.
    #[error("{0} must be at least 1 (0 offloads every frame: use mode `cloud`)")]
    NoBoxes(&'static str),
}

/// When a detection model's frame goes to the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Lower end of the second band, for boxes of classes outside `common_classes` (0..1;
    /// unset with `rare_high`: no second band).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rare_low: Option<f32>,
    /// Upper end of the second band, excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rare_high: Option<f32>,
    /// A frame with at least this many such boxes in the second band is offloaded (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rare_boxes: Option<usize>,
    /// Labels the second band does not count (e.g. `["person"]`; default: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub common_classes: Vec<String>,
}

fn one() -> usize {
    1
}

impl CascadeSpec {
    /// The policy of one band: at least one box in `[low, high)`, nothing else.
    pub fn band(low: f32, high: f32) -> Self {
        Self {
            uncertain_low: low,
            uncertain_high: high,
            uncertain_boxes: 1,
            max_boxes: None,
            rare_low: None,
            rare_high: None,
            rare_boxes: None,
            common_classes: Vec::new(),
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), CascadeError> {
        let (low, high) = (self.uncertain_low, self.uncertain_high);
        if !score_band(low, high) {
            return Err(CascadeError::Band { low, high });
        }
        if self.uncertain_boxes == 0 {
            return Err(CascadeError::NoBoxes("uncertain_boxes"));
        }
        match (self.rare_low, self.rare_high) {
            (None, None) => {}
            (Some(low), Some(high)) if !score_band(low, high) => {
                return Err(CascadeError::RareBand { low, high });
            }
            (Some(_), Some(_)) => {}
            _ => return Err(CascadeError::RareHalf),
        }
        if self.rare_boxes == Some(0) {
            return Err(CascadeError::NoBoxes("rare_boxes"));
        }
        Ok(())
    }

    /// The lowest score either band counts (what the variant must decode down to).
    pub fn floor(&self) -> f32 {
        self.rare_low
            .map_or(self.uncertain_low, |r| r.min(self.uncertain_low))
    }

    /// The signals of one frame: `boxes` as answered, `below` the boxes NMS kept under the
    /// answer threshold (counted in the bands only).
    pub fn signals(&self, boxes: &[Detection], below: &[Detection]) -> DetectionSignals {
        let band = self.uncertain_low..self.uncertain_high;
        let mut s = DetectionSignals::of(boxes);
        s.uncertain = boxes
            .iter()
            .chain(below)
            .filter(|d| band.contains(&d.score))
            .count();
        if let (Some(low), Some(high)) = (self.rare_low, self.rare_high) {
            s.rare = boxes
                .iter()
                .chain(below)
                .filter(|d| (low..high).contains(&d.score))
                .filter(|d| !self.common_classes.contains(&d.label))
                .count();
        }
        s
    }

    /// Whether a frame with these signals is answered locally.
    pub fn confident(&self, s: &DetectionSignals) -> bool {
        let rare = self.rare_low.is_some() && s.rare >= self.rare_boxes.unwrap_or(1);
        s.uncertain < self.uncertain_boxes && !rare && self.max_boxes.is_none_or(|m| s.count <= m)
    }
}

/// `0 <= low < high <= 1`, both finite.
fn score_band(low: f32, high: f32) -> bool {
    low.is_finite() && high.is_finite() && 0.0 <= low && low < high && high <= 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(score: f32) -> Detection {
        labelled(score, "person")
    }

    fn labelled(score: f32, label: &str) -> Detection {
        Detection {
            bbox: [0.0, 0.0, 1.0, 1.0],
            class: 0,
            label: label.into(),
            score,
        }
    }

    const SPEC: CascadeSpec = CascadeSpec {
        uncertain_low: 0.3,
        uncertain_high: 0.5,
        uncertain_boxes: 2,
        max_boxes: Some(3),
        rare_low: None,
        rare_high: None,
        rare_boxes: None,
        common_classes: Vec::new(),
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
        assert_eq!(
            zero.validate(),
            Err(CascadeError::NoBoxes("uncertain_boxes"))
        );
        let half = CascadeSpec {
            rare_low: Some(0.4),
            ..SPEC
        };
        assert_eq!(half.validate(), Err(CascadeError::RareHalf));
        let upside_down = CascadeSpec {
            rare_low: Some(0.6),
            rare_high: Some(0.4),
            ..SPEC
        };
        assert!(matches!(
            upside_down.validate(),
            Err(CascadeError::RareBand { .. })
        ));
        let none = CascadeSpec {
            rare_low: Some(0.4),
            rare_high: Some(0.6),
            rare_boxes: Some(0),
            ..SPEC
        };
        assert_eq!(none.validate(), Err(CascadeError::NoBoxes("rare_boxes")));
        let parsed: CascadeSpec =
            serde_json::from_str(r#"{"uncertain_low":0.3,"uncertain_high":0.5}"#).expect("parses");
        assert_eq!(parsed, CascadeSpec::band(0.3, 0.5));
        assert!(
            serde_json::from_str::<CascadeSpec>(
                r#"{"uncertain_low":0.3,"uncertain_high":0.5,"rare":1}"#
            )
            .is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn the_rare_band_counts_only_classes_outside_the_common_ones() {
        let spec = CascadeSpec {
            uncertain_boxes: 3,
            max_boxes: None,
            rare_low: Some(0.4),
            rare_high: Some(0.6),
            rare_boxes: Some(2),
            common_classes: vec!["person".into()],
            ..SPEC
        };
        assert!(spec.validate().is_ok());
        assert_eq!(spec.floor(), 0.3);
        // Two doubtful people: neither band has enough.
        let people = spec.signals(&[d(0.9), d(0.45), d(0.55)], &[]);
        assert_eq!((people.uncertain, people.rare), (1, 0));
        assert!(spec.confident(&people));
        // A horse and a dog in the second band (one under the answer threshold): offloaded.
        let animals = spec.signals(
            &[d(0.9), labelled(0.45, "horse")],
            &[labelled(0.41, "dog"), labelled(0.2, "dog")],
        );
        assert_eq!((animals.uncertain, animals.rare), (2, 2));
        assert!(!spec.confident(&animals));
        // The second band's top is excluded; one rare box is not enough.
        let one = spec.signals(&[labelled(0.6, "horse"), labelled(0.5, "cup")], &[]);
        assert_eq!(one.rare, 1);
        assert!(spec.confident(&one));
        // Without `rare_boxes` one box is enough.
        let any = CascadeSpec {
            rare_boxes: None,
            ..spec.clone()
        };
        assert!(!any.confident(&one));
        let rare_lower = CascadeSpec {
            rare_low: Some(0.1),
            ..spec
        };
        assert_eq!(rare_lower.floor(), 0.1);
    }
}
