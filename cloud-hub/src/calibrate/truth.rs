//! What the samples of one split say against the truth when only some carry an operator's
//! correction (pure: no IO). The rest are labelled by the cloud model as teacher, which
//! makes the cloud right on every one of them by definition and counts every input where the
//! edge answers otherwise as an edge error, even where the edge is right and the cloud model
//! wrong: under a shift the teacher itself is wrong often (~25% on the loop benchmark's
//! stream), and a threshold fitted against it offloads what the edge answers better.
//!
//! # The estimate
//! A corrected sample is judged against its correction. A teacher-labelled one is judged by
//! what the corrected samples of the same split show:
//! - the edge and the cloud model **agree**: both are right or both wrong, so the cascade
//!   gets it right or wrong wherever it routes it; it stands for "both right" with the share
//!   of corrected agreements that were right, "both wrong" with the rest (this only moves
//!   cloud-only accuracy, the objective's reference);
//! - they **disagree**: it stands for "edge right", "cloud right" and "neither" with the
//!   shares the corrected disagreements show (weighted like the samples).
//!
//! The corrections must be a review of a share of the feedback that does not depend on
//! whether the edge or the cloud model was right (an operator reviewing a random share, or
//! all, of the examples); corrections chosen because the answer looked wrong skew the shares.
//! With fewer than `min_disagreements` corrected disagreements the teacher is taken as the
//! truth, as without corrections.

use super::fit::Sample;
use serde::{Deserialize, Serialize};

/// One sample with what its label is and whether the two answers agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// The sample against its label (a correction, else the teacher's answer).
    pub sample: Sample,
    /// Labelled by an operator's correction.
    pub corrected: bool,
    /// The edge's answer is the cloud model's.
    pub agree: bool,
}

/// The shares the corrected samples of a split show, which the teacher-labelled ones stand
/// for (reported with the calibration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TeacherCheck {
    /// Corrected samples where the edge and the cloud model agreed.
    pub corrected_agreements: u64,
    /// Of them (weighted), the share where both were right.
    pub agree_right: f64,
    /// Corrected samples where they disagreed.
    pub corrected_disagreements: u64,
    /// Of them (weighted), the share where the edge was right.
    pub disagree_edge_right: f64,
    /// Of them (weighted), the share where the cloud model was right.
    pub disagree_cloud_right: f64,
    /// Teacher-labelled samples judged by these shares.
    pub teacher_samples: u64,
}

/// Weighted (right, total) among the corrected samples with `agree`.
fn shares(judged: &[Judged], agree: bool) -> (u64, f64, f64, f64) {
    let (mut n, mut total, mut edge, mut cloud) = (0, 0.0, 0.0, 0.0);
    for j in judged.iter().filter(|j| j.corrected && j.agree == agree) {
        n += 1;
        total += j.sample.weight;
        edge += if j.sample.edge_right {
            j.sample.weight
        } else {
            0.0
        };
        cloud += if j.sample.cloud_right {
            j.sample.weight
        } else {
            0.0
        };
    }
    (n, total, edge, cloud)
}

/// The samples to fit or report on: each corrected one as it is; each teacher-labelled one
/// split into weighted outcomes by the corrected ones' shares when at least
/// `min_disagreements` corrected samples disagree (with the shares used), else as it is.
pub fn resolve(judged: &[Judged], min_disagreements: u64) -> (Vec<Sample>, Option<TeacherCheck>) {
    let as_is = || judged.iter().map(|j| j.sample).collect::<Vec<_>>();
    let (dn, dw, de, dc) = shares(judged, false);
    let teacher = judged.iter().filter(|j| !j.corrected).count() as u64;
    if dn < min_disagreements.max(1) || dw <= 0.0 || teacher == 0 {
        return (as_is(), None);
    }
    let (an, aw, ae, _) = shares(judged, true);
    // No corrected agreement: the teacher's answer stands where the two agree.
    let agree_right = if aw > 0.0 { ae / aw } else { 1.0 };
    let check = TeacherCheck {
        corrected_agreements: an,
        agree_right,
        corrected_disagreements: dn,
        disagree_edge_right: de / dw,
        disagree_cloud_right: dc / dw,
        teacher_samples: teacher,
    };
    let mut out = Vec::with_capacity(judged.len() + 2 * teacher as usize);
    for j in judged {
        if j.corrected {
            out.push(j.sample);
            continue;
        }
        let part = |edge_right, cloud_right, share: f64| Sample {
            edge_right,
            cloud_right,
            weight: j.sample.weight * share,
            ..j.sample
        };
        let parts = if j.agree {
            [
                part(true, true, check.agree_right),
                part(false, false, 1.0 - check.agree_right),
                part(false, false, 0.0),
            ]
        } else {
            let neither = 1.0 - check.disagree_edge_right - check.disagree_cloud_right;
            [
                part(true, false, check.disagree_edge_right),
                part(false, true, check.disagree_cloud_right),
                part(false, false, neither.max(0.0)),
            ]
        };
        out.extend(parts.into_iter().filter(|s| s.weight > 0.0));
    }
    (out, Some(check))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::fit::figures;

    fn judged(signal: f32, edge_right: bool, cloud_right: bool, corrected: bool) -> Judged {
        let agree = if corrected {
            // Both right or both wrong here means the same answer.
            edge_right == cloud_right
        } else {
            edge_right
        };
        Judged {
            sample: Sample {
                signal,
                edge_right,
                cloud_right,
                weight: 1.0,
            },
            corrected,
            agree,
        }
    }

    #[test]
    fn teacher_disagreements_take_the_corrected_shares() {
        // Corrected: 4 disagreements (edge right in 3, cloud in 1), 2 agreements (1 right).
        let mut all = vec![
            judged(0.9, true, false, true),
            judged(0.8, true, false, true),
            judged(0.7, true, false, true),
            judged(0.6, false, true, true),
            judged(0.95, true, true, true),
            judged(0.5, false, false, true),
        ];
        // Teacher-labelled: one disagreement, one agreement.
        all.push(judged(0.85, false, true, false));
        all.push(judged(0.99, true, true, false));
        let (samples, check) = resolve(&all, 4);
        let check = check.expect("enough corrected disagreements");
        assert_eq!(check.corrected_disagreements, 4);
        assert_eq!(check.teacher_samples, 2);
        assert!((check.disagree_edge_right - 0.75).abs() < 1e-12);
        assert!((check.disagree_cloud_right - 0.25).abs() < 1e-12);
        assert!((check.agree_right - 0.5).abs() < 1e-12);
        // Weight is kept: 8 inputs.
        let w: f64 = samples.iter().map(|s| s.weight).sum();
        assert!((w - 8.0).abs() < 1e-12);
        // Everything local: the edge is right on 3 + 0.5 + 0.75 + 0.5 (the agreement).
        let f = figures(&samples, 0.0).expect("figures");
        assert!(
            (f.accuracy - (3.0 + 1.0 + 0.75 + 0.5) / 8.0).abs() < 1e-12,
            "{f:?}"
        );
        assert!((f.cloud_accuracy - (1.0 + 1.0 + 0.25 + 0.5) / 8.0).abs() < 1e-12);
        // One fewer corrected disagreement than asked: the teacher stands.
        let (as_is, none) = resolve(&all, 5);
        assert!(none.is_none());
        assert_eq!(as_is, all.iter().map(|j| j.sample).collect::<Vec<_>>());
    }
}
