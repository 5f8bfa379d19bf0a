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
//! The shares depend on the edge's confidence (where the edge is sure and still disagrees, it
//! is right more often than where it hesitates), so they are taken **by confidence block**:
//! the corrected disagreements (and, apart, the corrected agreements) sorted by the edge's
//! signal are cut into blocks by isotonic regression (pool adjacent violators) of "the edge
//! is right" on the signal (the edge's chance of being right does not fall as its confidence
//! rises: the assumption of isotonic calibration), blocks of fewer than half
//! `min_disagreements` samples merged into a neighbour; a teacher-labelled sample takes the
//! shares (edge right, cloud right) of the block its signal falls in. A block's shares are
//! pooled toward the split's overall ones as if the overall shares were [`PRIOR_SAMPLES`]
//! more samples in it (`(n·block + m·overall) / (n + m)`, a shrinkage estimate), so a thin
//! block leans on the whole split. Unlike equal-width or equal-count bins, the blocks end
//! where the shares change, so a block does not average the two sides of a step. Last, the
//! disagreements' shares are moved [`PESSIMISM`] standard deviations of their estimate
//! against the edge (its share down, the cloud model's up): an unbiased estimate puts the
//! threshold where the objective holds on average, so on the next inputs it would miss about
//! half the time; the margin grows where the corrected samples are few.
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

/// Weight of the split's overall shares in a block's, in samples (the shrinkage prior).
pub const PRIOR_SAMPLES: f64 = 5.0;

/// Standard deviations a block's disagreement shares are moved against the edge.
pub const PESSIMISM: f64 = 1.0;

/// The pooled shares of the corrected samples in one confidence block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinShares {
    /// The block holds signals below this (the last block: every signal above the one before).
    pub below: Option<f32>,
    /// Corrected samples in it.
    pub n: u64,
    /// Share (pooled toward the overall one) where the edge was right.
    pub edge_right: f64,
    /// Share (pooled toward the overall one) where the cloud model was right.
    pub cloud_right: f64,
}

/// The shares the corrected samples of a split show, which the teacher-labelled ones stand
/// for (reported with the calibration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The disagreements' shares by the edge's confidence (blocks), lowest first.
    #[serde(default)]
    pub disagree_bins: Vec<BinShares>,
    /// The agreements' shares by the edge's confidence (both right: `edge_right`).
    #[serde(default)]
    pub agree_bins: Vec<BinShares>,
}

/// Corrected samples of one kind in a run of signals.
#[derive(Clone, Copy)]
struct Block {
    lo: f32,
    hi: f32,
    n: u64,
    w: f64,
    edge: f64,
    cloud: f64,
}

impl Block {
    fn mean(&self) -> f64 {
        if self.w > 0.0 {
            self.edge / self.w
        } else {
            0.0
        }
    }

    fn merge(&mut self, o: &Block) {
        self.lo = self.lo.min(o.lo);
        self.hi = self.hi.max(o.hi);
        self.n += o.n;
        self.w += o.w;
        self.edge += o.edge;
        self.cloud += o.cloud;
    }
}

/// `samples` (corrected, one kind) cut into blocks by signal (isotonic regression of "edge
/// right" on the signal, then blocks of fewer than `min_block` samples merged into a
/// neighbour; one block unless `by_confidence`), each block's weighted shares pooled toward
/// `overall` (edge right, cloud right) with [`PRIOR_SAMPLES`], then moved `pessimism`
/// standard deviations of that estimate against the edge (its share down, the cloud model's
/// up; 0 for the estimate itself).
pub fn bins(
    mut samples: Vec<Sample>,
    min_block: u64,
    by_confidence: bool,
    overall: (f64, f64),
    pessimism: f64,
) -> Vec<BinShares> {
    samples.sort_by(|a, b| a.signal.total_cmp(&b.signal));
    let mut blocks: Vec<Block> = Vec::new();
    for s in &samples {
        let one = Block {
            lo: s.signal,
            hi: s.signal,
            n: 1,
            w: s.weight,
            edge: if s.edge_right { s.weight } else { 0.0 },
            cloud: if s.cloud_right { s.weight } else { 0.0 },
        };
        match blocks.last_mut() {
            Some(last) if !by_confidence || last.hi == s.signal => last.merge(&one),
            _ => blocks.push(one),
        }
        // Pool adjacent violators: the edge's share must not fall as the signal rises (equal
        // neighbours are one level).
        while let [.., a, b] = blocks.as_slice()
            && a.mean() >= b.mean()
        {
            let b = *b;
            blocks.pop();
            if let Some(a) = blocks.last_mut() {
                a.merge(&b);
            }
        }
    }
    // Thin blocks join the neighbour with the closer share (merging neighbours keeps the
    // shares monotone).
    while blocks.len() > 1 {
        let Some((i, _)) = blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.n < min_block.max(1))
            .min_by_key(|(_, b)| b.n)
        else {
            break;
        };
        let j = match (i.checked_sub(1), blocks.get(i + 1)) {
            (Some(p), Some(next)) => {
                let m = blocks[i].mean();
                if (blocks[p].mean() - m).abs() <= (next.mean() - m).abs() {
                    p
                } else {
                    i + 1
                }
            }
            (Some(p), None) => p,
            _ => i + 1,
        };
        let (keep, gone) = (i.min(j), i.max(j));
        let g = blocks.remove(gone);
        blocks[keep].merge(&g);
    }
    let mut out = Vec::with_capacity(blocks.len());
    for (k, b) in blocks.iter().enumerate() {
        let n = b.n as f64;
        let pool = |right: f64, all: f64| {
            let share = if b.w > 0.0 { right / b.w } else { all };
            (n * share + PRIOR_SAMPLES * all) / (n + PRIOR_SAMPLES)
        };
        // The standard deviation of a share estimated from n + PRIOR_SAMPLES samples (a Beta
        // posterior's).
        let sd = |p: f64| (p * (1.0 - p) / (n + PRIOR_SAMPLES + 1.0)).sqrt();
        let (e, c) = (pool(b.edge, overall.0), pool(b.cloud, overall.1));
        let edge_right = (e - pessimism * sd(e)).max(0.0);
        out.push(BinShares {
            below: blocks.get(k + 1).map(|next| b.hi + (next.lo - b.hi) / 2.0),
            n: b.n,
            edge_right,
            // Within a disagreement at most one is right (the estimate keeps e + c <= 1).
            cloud_right: (c + pessimism * sd(c)).min((1.0 - edge_right).max(c)),
        });
    }
    out
}

/// The block of `signal` (the last when none holds it; `None` without blocks).
pub fn bin_of(bins: &[BinShares], signal: f32) -> Option<&BinShares> {
    bins.iter()
        .find(|b| b.below.is_none_or(|t| signal < t))
        .or(bins.last())
}

/// Count and weighted (total, edge right, cloud right) of `samples`.
fn shares(samples: &[Sample]) -> (u64, f64, f64, f64) {
    let of = |right: bool, s: &Sample| if right { s.weight } else { 0.0 };
    samples.iter().fold((0, 0.0, 0.0, 0.0), |(n, w, e, c), s| {
        (
            n + 1,
            w + s.weight,
            e + of(s.edge_right, s),
            c + of(s.cloud_right, s),
        )
    })
}

/// The corrected samples with `agree`.
fn corrected(judged: &[Judged], agree: bool) -> Vec<Sample> {
    judged
        .iter()
        .filter(|j| j.corrected && j.agree == agree)
        .map(|j| j.sample)
        .collect()
}

/// The samples to fit or report on: each corrected one as it is; each teacher-labelled one
/// split into weighted outcomes by the corrected ones' shares when at least
/// `min_disagreements` corrected samples disagree (with the shares used), else as it is.
pub fn resolve(judged: &[Judged], min_disagreements: u64) -> (Vec<Sample>, Option<TeacherCheck>) {
    resolve_in(judged, min_disagreements, true, PESSIMISM)
}

/// [`resolve`] with the shares taken by confidence block, or (`by_confidence` false) one
/// share for every confidence, and the disagreements' shares moved `pessimism` standard
/// deviations against the edge.
pub fn resolve_in(
    judged: &[Judged],
    min_disagreements: u64,
    by_confidence: bool,
    pessimism: f64,
) -> (Vec<Sample>, Option<TeacherCheck>) {
    let as_is = || judged.iter().map(|j| j.sample).collect::<Vec<_>>();
    let (disagreements, agreements) = (corrected(judged, false), corrected(judged, true));
    let (dn, dw, de, dc) = shares(&disagreements);
    let teacher = judged.iter().filter(|j| !j.corrected).count() as u64;
    if dn < min_disagreements.max(1) || dw <= 0.0 || teacher == 0 {
        return (as_is(), None);
    }
    let (an, aw, ae, _) = shares(&agreements);
    // No corrected agreement: the teacher's answer stands where the two agree.
    let agree_right = if aw > 0.0 { ae / aw } else { 1.0 };
    let check = TeacherCheck {
        corrected_agreements: an,
        agree_right,
        corrected_disagreements: dn,
        disagree_edge_right: de / dw,
        disagree_cloud_right: dc / dw,
        teacher_samples: teacher,
        disagree_bins: bins(
            disagreements,
            min_disagreements / 2,
            by_confidence,
            (de / dw, dc / dw),
            pessimism,
        ),
        agree_bins: bins(
            agreements,
            min_disagreements / 2,
            by_confidence,
            (agree_right, agree_right),
            0.0,
        ),
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
        let signal = j.sample.signal;
        let parts = if j.agree {
            let right =
                bin_of(&check.agree_bins, signal).map_or(check.agree_right, |b| b.edge_right);
            [
                part(true, true, right),
                part(false, false, 1.0 - right),
                part(false, false, 0.0),
            ]
        } else {
            let (edge, cloud) = bin_of(&check.disagree_bins, signal).map_or(
                (check.disagree_edge_right, check.disagree_cloud_right),
                |b| (b.edge_right, b.cloud_right),
            );
            let neither = 1.0 - edge - cloud;
            [
                part(true, false, edge),
                part(false, true, cloud),
                part(false, false, neither.max(0.0)),
            ]
        };
        out.extend(parts.into_iter().filter(|s| s.weight > 0.0));
    }
    (out, Some(check))
}

#[cfg(test)]
#[path = "truth_tests.rs"]
mod tests;
