//! Desired thresholds: what a group of devices should route a model with, set by a calibration
//! (`hub-calibrated`) or pinned by an operator (`operator`), and which one a device uses (pure).
//!
//! A device uses, among the desired thresholds of the model whose labels it has: an operator's
//! pin before any calibration (a pin is never overridden by calibrating), then the one with
//! the most labels (the narrowest group), then the newest.

use super::Labels;
use serde::{Deserialize, Serialize};
use tandem_shared::manifest::Signal;
use tandem_shared::mqtt::ThresholdSource;

/// A threshold a group of devices should use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    /// The model.
    pub model: String,
    /// The devices: those with all these labels (empty: every device).
    pub labels: Labels,
    /// The threshold.
    pub threshold: f32,
    /// Its signal.
    pub signal: Signal,
    /// `hub-calibrated` or `operator` (a pin).
    pub source: ThresholdSource,
    /// The calibration it comes from (`hub-calibrated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// When it was set, milliseconds since the Unix epoch.
    pub set_ms: u64,
}

/// The labels as one key: `k=v,k=v` in key order (empty: every device).
pub fn selector_key(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Desired {
    /// Its labels as one key.
    pub fn selector_key(&self) -> String {
        selector_key(&self.labels)
    }

    /// Whether a device with `labels` is one it is for.
    pub fn selects(&self, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// The desired threshold of `model` a device with `labels` should use, if any.
pub fn resolve<'a>(all: &'a [Desired], model: &str, labels: &Labels) -> Option<&'a Desired> {
    all.iter()
        .filter(|d| d.model == model && d.selects(labels))
        .max_by_key(|d| {
            (
                d.source == ThresholdSource::Operator,
                d.labels.len(),
                d.set_ms,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(labels: &[(&str, &str)], t: f32, source: ThresholdSource, set_ms: u64) -> Desired {
        Desired {
            model: "m".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            threshold: t,
            signal: Signal::MaxProb,
            source,
            calibration: None,
            set_ms,
        }
    }

    #[test]
    fn a_pin_wins_then_the_narrowest_group_then_the_newest() {
        use ThresholdSource::{HubCalibrated, Operator};
        let cams: Labels = [("group".to_string(), "cams".to_string())].into();
        let all = vec![
            d(&[], 0.6, HubCalibrated, 1),
            d(&[("group", "cams")], 0.7, HubCalibrated, 2),
            d(&[("group", "cams")], 0.75, HubCalibrated, 3),
        ];
        assert_eq!(resolve(&all, "m", &cams).map(|d| d.threshold), Some(0.75));
        assert_eq!(
            resolve(&all, "m", &Labels::new()).map(|d| d.threshold),
            Some(0.6)
        );
        assert_eq!(resolve(&all, "other", &cams), None);
        let mut pinned = all.clone();
        pinned.push(d(&[], 0.9, Operator, 0));
        assert_eq!(
            resolve(&pinned, "m", &cams).map(|d| d.threshold),
            Some(0.9),
            "an older, wider pin still wins over calibration"
        );
        assert_eq!(selector_key(&cams), "group=cams");
    }
}
