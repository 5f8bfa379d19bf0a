//! Classification metrics over one labelled set: accuracy, per-class precision, recall and
//! F1, macro-F1, expected calibration error and the confusion matrix. Pure: no IO.
//!
//! Conventions (the same as scikit-learn's defaults, so the numbers can be checked there):
//! - precision of a class never predicted, and recall of a class absent from the truth, are 0;
//!   F1 is 0 when precision + recall is 0;
//! - macro-F1 averages F1 over the classes that occur in the truth or in the predictions;
//! - ECE uses [`ECE_BINS`] equal-width bins over the confidence (the top-1 probability),
//!   bin `i` holding confidences in `(i/B, (i+1)/B]` (0 goes to the first bin):
//!   `Σ |bin| / n · |accuracy(bin) − mean confidence(bin)|`.

use serde::{Deserialize, Serialize};

/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 15;

/// One class's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The class label.
    pub label: String,
    /// Items whose truth is this class.
    pub support: u64,
    /// Items predicted as this class.
    pub predicted: u64,
    /// Correct predictions of this class over all its predictions.
    pub precision: f64,
    /// Correct predictions of this class over its support.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

/// The figures of one set (or one slice of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Items judged.
    pub n: u64,
    /// Share predicted right (0 for an empty set).
    pub accuracy: f64,
    /// Mean F1 over the classes present in the truth or the predictions.
    pub macro_f1: f64,
    /// Expected calibration error of the top-1 probability ([`ECE_BINS`] bins).
    pub ece: f64,
    /// Mean top-1 probability.
    pub mean_confidence: f64,
    /// Per class, in label order (classes with neither support nor predictions included, with
    /// zeros).
    pub classes: Vec<ClassMetrics>,
    /// `confusion[truth][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

/// One judged item: the true class, the predicted class, the predicted class's probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// True class index.
    pub truth: usize,
    /// Predicted class index.
    pub predicted: usize,
    /// Probability of the predicted class.
    pub confidence: f32,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The metrics of `items` over the classes `labels` (an index past the labels is counted in
/// the totals, accuracy and ECE, but has no class row).
pub fn compute(labels: &[String], items: &[Judged]) -> Metrics {
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    let (mut correct, mut conf_sum) = (0u64, 0.0f64);
    let mut bins = [(0u64, 0u64, 0.0f64); ECE_BINS];
    for j in items {
        let right = j.truth == j.predicted;
        correct += u64::from(right);
        let c = f64::from(j.confidence).clamp(0.0, 1.0);
        conf_sum += c;
        let bin = ((c * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        bins[bin].0 += 1;
        bins[bin].1 += u64::from(right);
        bins[bin].2 += c;
        if j.truth < k && j.predicted < k {
            confusion[j.truth][j.predicted] += 1;
        }
    }
    let n = items.len() as u64;
    let ece = bins
        .iter()
        .filter(|b| b.0 > 0)
        .map(|&(count, right, conf)| {
            let acc = right as f64 / count as f64;
            let mean = conf / count as f64;
            count as f64 / n as f64 * (acc - mean).abs()
        })
        .sum();
    let classes: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let support: u64 = confusion[c].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                label: labels[c].clone(),
                support,
                predicted,
                precision,
                recall,
                f1,
            }
        })
        .collect();
    let present: Vec<&ClassMetrics> = classes
        .iter()
        .filter(|c| c.support > 0 || c.predicted > 0)
        .collect();
    let macro_f1 = if present.is_empty() {
        0.0
    } else {
        present.iter().map(|c| c.f1).sum::<f64>() / present.len() as f64
    };
    Metrics {
        n,
        accuracy: ratio(correct, n),
        macro_f1,
        ece,
        mean_confidence: if n == 0 { 0.0 } else { conf_sum / n as f64 },
        classes,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(truth: usize, predicted: usize, confidence: f32) -> Judged {
        Judged {
            truth,
            predicted,
            confidence,
        }
    }

    /// Worked by hand: 3 classes, 6 items.
    /// truth      a a a b b c
    /// predicted  a a b b c c   (conf .9 .8 .6 .7 .55 1.0)
    /// a: tp 2, predicted 2, support 3 → P 1, R 2/3, F1 0.8
    /// b: tp 1, predicted 2, support 2 → P .5, R .5, F1 .5
    /// c: tp 1, predicted 2, support 1 → P .5, R 1, F1 2/3
    /// accuracy 4/6; macro-F1 (0.8 + 0.5 + 2/3) / 3.
    /// ECE (15 bins): bins (8/15,9/15] holds .55 and .6 (both wrong: acc 0, mean .575) → 2/6·.575;
    /// (10/15,11/15] holds .7 (right) → 1/6·.3; (11/15,12/15] holds .8 (right) → 1/6·.2;
    /// (13/15,14/15] holds .9 (right) → 1/6·.1; (14/15,1] holds 1.0 (right) → 0.
    #[test]
    fn a_hand_checked_example() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let m = compute(
            &labels,
            &[
                j(0, 0, 0.9),
                j(0, 0, 0.8),
                j(0, 1, 0.6),
                j(1, 1, 0.7),
                j(1, 2, 0.55),
                j(2, 2, 1.0),
            ],
        );
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert_eq!(m.n, 6);
        assert!(close(m.accuracy, 4.0 / 6.0));
        assert!(close(m.classes[0].precision, 1.0) && close(m.classes[0].recall, 2.0 / 3.0));
        assert!(close(m.classes[0].f1, 0.8));
        assert!(close(m.classes[1].f1, 0.5));
        assert!(close(m.classes[2].precision, 0.5) && close(m.classes[2].recall, 1.0));
        assert!(close(m.macro_f1, (0.8 + 0.5 + 2.0 / 3.0) / 3.0));
        let ece = 2.0 / 6.0 * 0.575 + 0.3 / 6.0 + 0.2 / 6.0 + 0.1 / 6.0;
        assert!(close(m.ece, ece), "{} vs {ece}", m.ece);
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert_eq!(m.classes[2].support, 1);
        assert_eq!(m.classes[2].predicted, 2);
    }

    #[test]
    fn empty_sets_and_absent_classes_are_zero_not_nan() {
        let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let m = compute(&labels, &[]);
        assert_eq!((m.n, m.accuracy, m.macro_f1, m.ece), (0, 0.0, 0.0, 0.0));
        let m = compute(&labels, &[j(0, 0, 0.5)]);
        assert_eq!(m.macro_f1, 1.0, "b is neither true nor predicted: left out");
        assert_eq!(m.classes[1].f1, 0.0);
    }
}
