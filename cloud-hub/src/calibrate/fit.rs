//! Fitting a routing threshold (pure: no IO). A sample is one input the edge answered with a
//! confidence signal, whether the edge's and the cloud model's answers were right against the
//! reference label, and a weight (how many inputs of the device's traffic it stands for). The
//! cascade at threshold `t` answers locally when the signal is at least `t` and asks the cloud
//! model otherwise, so its weighted accuracy and offload share follow for every `t`.
//!
//! Candidate thresholds are 0 (never offload) and the midpoints between consecutive distinct
//! signal values (each splits the sample the same way as any value between them, and the
//! midpoint is the choice least sensitive to where exactly the unseen inputs fall), plus one
//! above the largest (offload everything) when that still is a valid threshold.

use serde::{Deserialize, Serialize};

/// One judged input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The edge's confidence signal (max probability or margin: higher is surer).
    pub signal: f32,
    /// Whether the edge's answer matched the reference label.
    pub edge_right: bool,
    /// Whether the cloud model's answer matched the reference label.
    pub cloud_right: bool,
    /// How many inputs it stands for (> 0).
    pub weight: f64,
}

/// What the threshold is chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Objective {
    /// The least offload whose accuracy is at least `factor` × the cloud-only accuracy.
    KeepAccuracy {
        /// Share of cloud-only accuracy to keep, in (0, 1] (default 0.995).
        #[serde(default = "default_factor")]
        factor: f64,
    },
    /// The best accuracy whose offload share is at most `budget`.
    OffloadBudget {
        /// Largest share of inputs offloaded, in [0, 1].
        budget: f64,
    },
}

fn default_factor() -> f64 {
    0.995
}

impl Objective {
    /// What is wrong with its number, if anything.
    pub fn problem(&self) -> Option<String> {
        match *self {
            Self::KeepAccuracy { factor } if !(factor > 0.0 && factor <= 1.0) => {
                Some(format!("keep_accuracy factor {factor} must be in (0, 1]"))
            }
            Self::OffloadBudget { budget } if !(0.0..=1.0).contains(&budget) => {
                Some(format!("offload_budget budget {budget} must be in [0, 1]"))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KeepAccuracy { factor } => write!(f, "keep_accuracy({factor})"),
            Self::OffloadBudget { budget } => write!(f, "offload_budget({budget})"),
        }
    }
}

/// The cascade's figures at one threshold on one set of samples (weighted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Samples.
    pub n: u64,
    /// Their total weight.
    pub weight: f64,
    /// Accuracy of the cascade.
    pub accuracy: f64,
    /// Share of inputs offloaded.
    pub offload: f64,
    /// Accuracy of the edge alone.
    pub edge_accuracy: f64,
    /// Accuracy of the cloud model alone.
    pub cloud_accuracy: f64,
    /// `accuracy / cloud_accuracy` (1 when the cloud model never is right).
    pub accuracy_ratio: f64,
}

/// The cascade's figures at `threshold` on `samples`; `None` without samples.
pub fn figures(samples: &[Sample], threshold: f32) -> Option<Figures> {
    let weight: f64 = samples.iter().map(|s| s.weight).sum();
    if samples.is_empty() || weight <= 0.0 {
        return None;
    }
    let (mut right, mut off, mut edge, mut cloud) = (0.0, 0.0, 0.0, 0.0);
    for s in samples {
        let local = s.signal >= threshold;
        if !local {
            off += s.weight;
        }
        if (local && s.edge_right) || (!local && s.cloud_right) {
            right += s.weight;
        }
        edge += if s.edge_right { s.weight } else { 0.0 };
        cloud += if s.cloud_right { s.weight } else { 0.0 };
    }
    let accuracy = right / weight;
    let cloud_accuracy = cloud / weight;
    Some(Figures {
        n: samples.len() as u64,
        weight,
        accuracy,
        offload: off / weight,
        edge_accuracy: edge / weight,
        cloud_accuracy,
        accuracy_ratio: if cloud_accuracy > 0.0 {
            accuracy / cloud_accuracy
        } else {
            1.0
        },
    })
}

/// The fitted threshold and its figures on the samples it was fitted on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fitted {
    /// The threshold.
    pub threshold: f32,
    /// The figures there.
    pub figures: Figures,
}

/// Why nothing was fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// No sample.
    #[error("no sample to fit on")]
    Empty,
    /// No threshold meets the objective (only possible for a budget below what any threshold
    /// offloads, which cannot happen since 0 offloads nothing, or for rounding).
    #[error("no threshold meets {0}")]
    Unmet(Objective),
}

/// The threshold `samples` suggest for `objective`; `max` is the largest valid threshold of
/// the signal (1.0 for probabilities and margins).
///
/// Ties: `keep_accuracy` takes the least offload, then the higher accuracy; `offload_budget`
/// takes the best accuracy, then the least offload.
pub fn fit(samples: &[Sample], objective: Objective, max: f32) -> Result<Fitted, FitError> {
    let mut sorted: Vec<&Sample> = samples.iter().filter(|s| s.weight > 0.0).collect();
    if sorted.is_empty() {
        return Err(FitError::Empty);
    }
    sorted.sort_by(|a, b| a.signal.total_cmp(&b.signal));
    let total: f64 = sorted.iter().map(|s| s.weight).sum();
    let cloud_acc = sorted
        .iter()
        .filter(|s| s.cloud_right)
        .map(|s| s.weight)
        .sum::<f64>()
        / total;
    // At t = 0 every sample is local; raising t past a group of equal signals moves that group
    // to the cloud model.
    let mut right: f64 = sorted
        .iter()
        .filter(|s| s.edge_right)
        .map(|s| s.weight)
        .sum();
    let mut off = 0.0;
    let mut best: Option<(f32, f64, f64)> = None; // (t, accuracy, offload)
    let better = |cand: (f32, f64, f64), best: Option<(f32, f64, f64)>| -> bool {
        let eps = 1e-12;
        let ok = match objective {
            Objective::KeepAccuracy { factor } => cand.1 + eps >= factor * cloud_acc,
            Objective::OffloadBudget { budget } => cand.2 <= budget + eps,
        };
        ok && best.is_none_or(|b| match objective {
            Objective::KeepAccuracy { .. } => {
                cand.2 < b.2 - eps || ((cand.2 - b.2).abs() <= eps && cand.1 > b.1 + eps)
            }
            Objective::OffloadBudget { .. } => {
                cand.1 > b.1 + eps || ((cand.1 - b.1).abs() <= eps && cand.2 < b.2 - eps)
            }
        })
    };
    let first = (0.0_f32, right / total, 0.0);
    if better(first, best) {
        best = Some(first);
    }
    let mut i = 0;
    while i < sorted.len() {
        let v = sorted[i].signal;
        while i < sorted.len() && sorted[i].signal == v {
            let s = sorted[i];
            off += s.weight;
            right += f64::from(u8::from(s.cloud_right)) * s.weight
                - f64::from(u8::from(s.edge_right)) * s.weight;
            i += 1;
        }
        let t = match sorted.get(i) {
            Some(next) => v + (next.signal - v) / 2.0,
            None if v < max => v + (max - v) / 2.0,
            None => continue,
        };
        let cand = (t, right / total, off / total);
        if better(cand, best) {
            best = Some(cand);
        }
    }
    let (threshold, ..) = best.ok_or(FitError::Unmet(objective))?;
    let figures = figures(samples, threshold).ok_or(FitError::Empty)?;
    Ok(Fitted { threshold, figures })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(signal: f32, edge_right: bool, cloud_right: bool) -> Sample {
        Sample {
            signal,
            edge_right,
            cloud_right,
            weight: 1.0,
        }
    }

    #[test]
    fn keep_accuracy_takes_the_least_offload_that_keeps_the_share() {
        // Cloud always right; the edge wrong below 0.5.
        let v: Vec<Sample> = (0..10).map(|i| s(i as f32 / 10.0, i >= 5, true)).collect();
        let f = fit(&v, Objective::KeepAccuracy { factor: 1.0 }, 1.0).expect("fits");
        assert!(f.threshold > 0.4 && f.threshold <= 0.5, "{f:?}");
        assert_eq!(f.figures.accuracy, 1.0);
        assert!((f.figures.offload - 0.5).abs() < 1e-9);
        // Allowing 80% of cloud accuracy: two wrong local answers are fine.
        let f = fit(&v, Objective::KeepAccuracy { factor: 0.8 }, 1.0).expect("fits");
        assert!((f.figures.offload - 0.3).abs() < 1e-9, "{f:?}");
        assert!(f.figures.accuracy >= 0.8);
    }

    #[test]
    fn offload_budget_takes_the_best_accuracy_within_it() {
        let v: Vec<Sample> = (0..10).map(|i| s(i as f32 / 10.0, i >= 5, true)).collect();
        let f = fit(&v, Objective::OffloadBudget { budget: 0.2 }, 1.0).expect("fits");
        assert!((f.figures.offload - 0.2).abs() < 1e-9, "{f:?}");
        assert!((f.figures.accuracy - 0.7).abs() < 1e-9);
        let f = fit(&v, Objective::OffloadBudget { budget: 0.0 }, 1.0).expect("fits");
        assert_eq!(f.threshold, 0.0);
        assert_eq!(f.figures.offload, 0.0);
    }

    #[test]
    fn weights_count_as_copies_and_ties_move_together() {
        // One confident wrong sample weighing 100 must be offloaded for 99.5%.
        let v = vec![
            Sample {
                signal: 0.9,
                edge_right: false,
                cloud_right: true,
                weight: 100.0,
            },
            s(0.95, true, true),
            s(0.95, true, true),
        ];
        let f = fit(&v, Objective::KeepAccuracy { factor: 0.995 }, 1.0).expect("fits");
        assert!(f.threshold > 0.9 && f.threshold < 0.95, "{f:?}");
        let unweighted: Vec<Sample> = v.iter().map(|x| Sample { weight: 1.0, ..*x }).collect();
        let g = fit(&unweighted, Objective::KeepAccuracy { factor: 0.6 }, 1.0).expect("fits");
        assert_eq!(g.threshold, 0.0, "a third wrong is within 60%");
        assert_eq!(
            fit(&[], Objective::KeepAccuracy { factor: 0.9 }, 1.0),
            Err(FitError::Empty)
        );
        assert!(Objective::KeepAccuracy { factor: 1.5 }.problem().is_some());
        assert!(
            Objective::OffloadBudget { budget: -0.1 }
                .problem()
                .is_some()
        );
        assert!(Objective::OffloadBudget { budget: 0.3 }.problem().is_none());
    }

    #[test]
    fn offloading_everything_is_a_candidate_below_the_maximum() {
        let v = vec![s(0.5, false, true), s(0.6, false, true)];
        let f = fit(&v, Objective::KeepAccuracy { factor: 1.0 }, 1.0).expect("fits");
        assert!(f.threshold > 0.6 && f.threshold <= 1.0, "{f:?}");
        assert_eq!(f.figures.offload, 1.0);
    }
}
