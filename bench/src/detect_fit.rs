//! Fitting the detection cascade's frame policy (`tandem_shared::detect::cascade`) for
//! `tandem-bench detect`, and judging it on frames it was not fitted on: a grid of policies
//! (uncertain band, boxes in it, most boxes), the best on the fitting frames under an offload
//! cap, and k-fold cross-validation whose held-out decisions are pooled into one figure,
//! repeated over fixed fold assignments (the figure of a small set depends on which frames
//! share a fold).

use crate::detect_eval::{Pred, Scores, Truth, evaluate};
use std::collections::HashMap;
use tandem_shared::detect::Detection;
use tandem_shared::detect::cascade::CascadeSpec;

/// One labelled frame: the edge's answer and the boxes it kept under its threshold, the
/// cloud's answer, the labels.
pub struct Frame {
    /// Edge boxes as answered.
    pub edge: Vec<Detection>,
    /// Edge boxes under the answer threshold (down to the bench's decode floor).
    pub below: Vec<Detection>,
    /// Edge answer as scored.
    pub edge_preds: Vec<Pred>,
    /// Cloud answer as scored.
    pub cloud_preds: Vec<Pred>,
    /// Labels.
    pub truth: Vec<Truth>,
}

/// A fitted policy and how it did.
#[derive(Debug, Clone, Copy)]
pub struct Fitted {
    /// The policy.
    pub policy: CascadeSpec,
    /// Scores of the cascade's answers.
    pub scores: Scores,
    /// Share of frames offloaded.
    pub offload: f64,
    /// The offload cap it was fitted under (see [`fit_nested`]).
    pub cap: f64,
}

/// Fitting caps [`fit_nested`] tries, as shares of the offload bound, highest first. A finer
/// grid (steps of 5%) was measured and breaks the bound held out (31% on 42 frames): picking
/// the highest of more caps whose inner estimate passes picks the luckiest estimate, the same
/// winner's curse the nesting corrects one level down (docs/benchmarks/detect.md).
const CAPS: [f64; 5] = [1.0, 0.85, 0.7, 0.55, 0.4];

/// Every policy of the grid (bottoms from `floor`).
pub fn grid(floor: f32) -> Vec<CascadeSpec> {
    let steps = |from: f32, to: f32| {
        (0..=20)
            .map(move |i| from + 0.05 * i as f32)
            .take_while(move |v| *v <= to + 1e-6)
    };
    let mut out = Vec::new();
    for low in steps(floor, 0.45) {
        for high in steps(low + 0.05, 0.70) {
            for uncertain_boxes in [1, 2, 3, 4, 6] {
                for max_boxes in [None, Some(6), Some(10)] {
                    out.push(CascadeSpec {
                        uncertain_low: low,
                        uncertain_high: high,
                        uncertain_boxes,
                        max_boxes,
                    });
                }
            }
        }
    }
    out
}

/// Whether `policy` sends `f` to the hub (the agent's rule: `CascadeSpec::confident`).
pub fn offloads(policy: &CascadeSpec, f: &Frame) -> bool {
    !policy.confident(&policy.signals(&f.edge, &f.below))
}

/// The cascade's answers on `frames` under per-frame decisions `send`, scored.
pub fn score(frames: &[&Frame], send: &[bool]) -> (Scores, f64) {
    let truth: Vec<Vec<Truth>> = frames.iter().map(|f| f.truth.clone()).collect();
    let preds: Vec<Vec<Pred>> = frames
        .iter()
        .zip(send)
        .map(|(f, s)| {
            if *s {
                f.cloud_preds.clone()
            } else {
                f.edge_preds.clone()
            }
        })
        .collect();
    let sent = send.iter().filter(|s| **s).count() as f64 / send.len().max(1) as f64;
    (evaluate(&truth, &preds), sent)
}

/// Every policy of `grid` scored on `frames` (policies that send the same frames share one
/// evaluation): what [`best`] picks from under any cap.
pub fn table(frames: &[&Frame], grid: &[CascadeSpec]) -> Vec<Fitted> {
    let mut seen: HashMap<Vec<bool>, (Scores, f64)> = HashMap::new();
    grid.iter()
        .map(|policy| {
            let send: Vec<bool> = frames.iter().map(|f| offloads(policy, f)).collect();
            let (scores, offload) = *seen
                .entry(send)
                .or_insert_with_key(|send| score(frames, send));
            Fitted {
                policy: *policy,
                scores,
                offload,
                cap: 1.0,
            }
        })
        .collect()
}

/// The best row of `table` (highest mAP@0.5 with at most `max_offload` of the frames
/// offloaded; ties to the lower offload, then to the first in the grid).
pub fn best(table: &[Fitted], max_offload: f64) -> Option<Fitted> {
    let mut out: Option<Fitted> = None;
    for row in table {
        if row.offload > max_offload + 1e-9 {
            continue;
        }
        let better = out.as_ref().is_none_or(|b| {
            row.scores.map50 > b.scores.map50 + 1e-12
                || ((row.scores.map50 - b.scores.map50).abs() <= 1e-12 && row.offload < b.offload)
        });
        if better {
            out = Some(Fitted {
                cap: max_offload,
                ..*row
            });
        }
    }
    out
}

/// The grid's best policy on `frames` under `max_offload` ([`best`] of [`table`]).
pub fn fit(frames: &[&Frame], grid: &[CascadeSpec], max_offload: f64) -> Option<Fitted> {
    best(&table(frames, grid), max_offload)
}

/// [`fit`] under a cap tuned on `frames` alone (nested cross-validation), for the benchmark's
/// objective: the highest held-out mAP@0.5 with the held-out offload at most `max_offload`.
/// A policy that offloads `max_offload` of the frames it was picked on offloads more of new
/// frames (the best of many policies under a cap sits just under it there), so each cap of
/// `max_offload` x [`CAPS`] is judged by `inner`-fold cross-validation within `frames`, and
/// the highest whose held-out offload stays under `max_offload` wins (the lowest when none
/// does). More offload buys more mAP@0.5 in expectation, so the highest safe cap is the
/// objective's choice; picking the cap by its inner held-out mAP@0.5 instead was measured
/// and lost (the inner estimate on ~34 frames is noise: docs/benchmarks/detect.md).
/// `inner` < 2 is [`fit`].
pub fn fit_nested(
    frames: &[&Frame],
    grid: &[CascadeSpec],
    max_offload: f64,
    inner: usize,
) -> Option<Fitted> {
    if inner < 2 {
        return fit(frames, grid, max_offload);
    }
    // Inner fold `k`: frame j is held out when j % inner == k; one table per fitting set.
    let tables: Vec<Vec<Fitted>> = (0..inner)
        .map(|k| {
            let fitting: Vec<&Frame> = frames
                .iter()
                .enumerate()
                .filter(|(j, _)| j % inner != k)
                .map(|(_, f)| *f)
                .collect();
            table(&fitting, grid)
        })
        .collect();
    let safe = CAPS.iter().map(|share| max_offload * share).find(|cap| {
        let mut send = vec![false; frames.len()];
        for (k, t) in tables.iter().enumerate() {
            let Some(p) = best(t, *cap) else { continue };
            for (j, f) in frames.iter().enumerate().filter(|(j, _)| j % inner == k) {
                send[j] = offloads(&p.policy, f);
            }
        }
        send.iter().filter(|s| **s).count() as f64 / send.len().max(1) as f64 <= max_offload + 1e-9
    });
    let cap = safe.unwrap_or(max_offload * CAPS[CAPS.len() - 1]);
    fit(frames, grid, cap)
}

/// k-fold cross-validation: frame `order[j]` is in fold `j % k`; each fold's frames are
/// decided by the policy fitted on the other folds. Returns the pooled held-out scores and
/// offload share, and each fold's policy.
pub fn cross_validate(
    frames: &[Frame],
    order: &[usize],
    grid: &[CascadeSpec],
    max_offload: f64,
    k: usize,
    inner: usize,
) -> Option<Held> {
    let refs: Vec<&Frame> = frames.iter().collect();
    held_out(&refs, order, grid, max_offload, k, inner)
}

fn held_out(
    frames: &[&Frame],
    order: &[usize],
    grid: &[CascadeSpec],
    max_offload: f64,
    k: usize,
    inner: usize,
) -> Option<Held> {
    let mut send = vec![false; frames.len()];
    let mut policies = Vec::with_capacity(k);
    for fold in 0..k {
        let fitting: Vec<&Frame> = order
            .iter()
            .enumerate()
            .filter(|(j, _)| j % k != fold)
            .filter_map(|(_, i)| frames.get(*i).copied())
            .collect();
        let p = fit_nested(&fitting, grid, max_offload, inner)?;
        for (_, i) in order.iter().enumerate().filter(|(j, _)| j % k == fold) {
            if let (Some(s), Some(f)) = (send.get_mut(*i), frames.get(*i)) {
                *s = offloads(&p.policy, f);
            }
        }
        policies.push(p);
    }
    let (scores, offload) = score(frames, &send);
    Some(Held {
        scores,
        offload,
        policies,
    })
}

/// The pooled held-out result of one cross-validation.
#[derive(Debug, Clone)]
pub struct Held {
    /// Scores of the cascade's answers on every frame, each decided by a policy fitted
    /// without it.
    pub scores: Scores,
    /// Share of frames offloaded.
    pub offload: f64,
    /// Each fold's policy.
    pub policies: Vec<Fitted>,
}

/// The frame order of repeat `r` of a repeated cross-validation: repeat 0 is `0..n` (frame
/// `i` in fold `i % k`), the others a fixed pseudo-random permutation (SplitMix64 keys), so
/// every run assigns the same folds.
pub fn order(n: usize, r: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if r > 0 {
        idx.sort_by_key(|i| splitmix(r.wrapping_mul(0x1_0000_0000) ^ *i as u64));
    }
    idx
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_fixed_permutations() {
        assert_eq!(order(5, 0), vec![0, 1, 2, 3, 4]);
        for r in 1..4 {
            let o = order(40, r);
            assert_eq!(o, order(40, r), "same folds every run");
            assert_ne!(o, order(40, 0));
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..40).collect::<Vec<_>>(), "a permutation");
        }
        assert_ne!(order(40, 1), order(40, 2));
    }

    fn det(score: f32) -> Detection {
        Detection {
            bbox: [0.0, 0.0, 10.0, 10.0],
            class: 0,
            label: "a".into(),
            score,
        }
    }
    fn pred(score: f32, hit: bool) -> Pred {
        let x = if hit { 0.0 } else { 50.0 };
        Pred {
            label: "a".into(),
            bbox: [x, x, x + 10.0, x + 10.0],
            score,
        }
    }

    /// Frame `i` is unsure (a box at 0.3) exactly when the cloud finds its object and the edge
    /// does not: a good policy offloads the unsure frames, and only those.
    fn frames(n: usize) -> Vec<Frame> {
        (0..n)
            .map(|i| {
                let unsure = i % 4 == 0;
                Frame {
                    edge: vec![det(0.9)],
                    below: if unsure { vec![det(0.3)] } else { Vec::new() },
                    edge_preds: vec![pred(0.9, !unsure)],
                    cloud_preds: vec![pred(0.9, true)],
                    truth: vec![Truth {
                        label: "a".into(),
                        bbox: [0.0, 0.0, 10.0, 10.0],
                    }],
                }
            })
            .collect()
    }

    #[test]
    fn the_fitted_band_catches_the_unsure_frames_held_out() {
        let f = frames(20);
        let g = grid(0.1);
        assert!(g.iter().all(|p| p.validate().is_ok()));
        for (r, inner) in [(0, 0), (1, 0), (2, 0), (0, 4), (1, 4)] {
            let held = cross_validate(&f, &order(f.len(), r), &g, 0.3, 5, inner).expect("fits");
            assert_eq!(held.policies.len(), 5);
            assert_eq!(held.scores.map50, 1.0, "repeat {r}, inner {inner}");
            assert!((held.offload - 0.25).abs() < 1e-9, "{}", held.offload);
            // A quarter of the frames is unsure everywhere: the full cap holds held-out.
            assert!(held.policies.iter().all(|p| (p.cap - 0.3).abs() < 1e-9));
        }
        // An offload cap under the unsure share leaves some frames to the edge.
        let capped = fit(&f.iter().collect::<Vec<_>>(), &g, 0.1).expect("fits");
        assert!(capped.offload <= 0.1 && capped.scores.map50 < 1.0);
    }
}
