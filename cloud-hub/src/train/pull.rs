//! Choosing the head's L2 pull toward the serving head on held-out folds (`train.l2_grid`):
//! the training examples are cut into `train.l2_folds` folds by input (every copy of one input
//! in one fold, the same folds for the same inputs on every run), each pull of the grid is
//! fitted on all folds but one and scored on that one, and the **weakest** pull whose held-out
//! accuracy (pooled over the folds) is within `train.l2_slack` of the best is chosen: a weak
//! pull adapts most to the fleet's data, so it is kept unless a stronger one is clearly better
//! on inputs its fit never saw. Pure: no IO.

use super::TrainError;
use super::head::{self, FitOptions, LinearHead};
use crate::eval::dataset::Payload;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Salt of the fold order (independent of the feedback splits' own salt).
const SALT: &[u8] = b"tandem-l2-folds/1";

/// One pull of the grid and how it did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PullScore {
    /// The L2 pull.
    pub l2: f64,
    /// Accuracy on the held-out folds, pooled (right answers over held-out examples).
    pub held_out_accuracy: f64,
}

/// The pull a head was fitted with, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullChoice {
    /// The pull of the final fit (on every training example).
    pub l2: f64,
    /// Folds the grid was scored on (0: no grid, `train.l2` as configured).
    pub folds: usize,
    /// `train.l2_slack` at the time.
    pub slack: f64,
    /// Each pull of the grid, weakest first (empty without a grid).
    pub scores: Vec<PullScore>,
    /// Wall-clock milliseconds the grid's fits took (set by the caller; 0 without a grid).
    #[serde(default)]
    pub grid_ms: u64,
}

/// The fold order key of an input: a salted sha256 of its bytes.
pub fn key(p: &Payload) -> u64 {
    let bytes: &[u8] = match p {
        Payload::Image(b) => b,
        Payload::Text(t) => t.as_bytes(),
    };
    let h = Sha256::new()
        .chain_update(SALT)
        .chain_update(bytes)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    u64::from_be_bytes(first)
}

/// The fold (`0..k`) of each example with order key `keys[i]`: the distinct keys in sorted
/// order are dealt round-robin, so equal inputs share a fold, the folds differ in size by one
/// input at most, and the same inputs always get the same folds.
pub fn folds(keys: &[u64], k: usize) -> Vec<usize> {
    let mut distinct: Vec<u64> = keys.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let k = k.max(1);
    keys.iter()
        .map(|key| distinct.binary_search(key).map_or(0, |i| i % k))
        .collect()
}

/// The weakest (smallest) pull whose held-out accuracy is within `slack` of the best one's;
/// `None` for an empty list.
pub fn weakest_within(scores: &[PullScore], slack: f64) -> Option<f64> {
    let best = scores
        .iter()
        .map(|s| s.held_out_accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    scores
        .iter()
        .filter(|s| s.held_out_accuracy >= best - slack)
        .map(|s| s.l2)
        .min_by(f64::total_cmp)
}

/// Scores each pull of `grid` (sorted, finite, >= 0) on `k` folds of (`xs`, `ys`), fits
/// starting from `start` with at most `max_steps` steps, and picks the weakest within `slack`.
/// With fewer distinct inputs than folds (or `k < 2`, or an empty grid) it scores nothing and
/// keeps `fallback`.
#[allow(clippy::too_many_arguments)]
pub fn choose(
    start: &LinearHead,
    xs: &[Vec<f32>],
    ys: &[usize],
    keys: &[u64],
    grid: &[f64],
    k: usize,
    slack: f64,
    max_steps: usize,
    fallback: f64,
) -> Result<PullChoice, TrainError> {
    let of = folds(keys, k);
    let filled = (0..k).filter(|f| of.contains(f)).count();
    if grid.is_empty() || k < 2 || filled < k {
        return Ok(PullChoice {
            l2: fallback,
            folds: 0,
            slack,
            scores: Vec::new(),
            grid_ms: 0,
        });
    }
    // One thread per fold (each fits the whole grid): the fits are independent, and the sum
    // below does not depend on which thread ends first.
    let per_fold: Vec<Result<Vec<usize>, TrainError>> = std::thread::scope(|s| {
        let tasks: Vec<_> = (0..k)
            .map(|f| {
                let of = &of;
                s.spawn(move || fold_rights(start, xs, ys, of, f, grid, max_steps))
            })
            .collect();
        tasks
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(TrainError::Aborted("a fold's fit panicked".into())))
            })
            .collect()
    });
    let mut right = vec![0usize; grid.len()];
    for r in per_fold {
        for (sum, n) in right.iter_mut().zip(r?) {
            *sum += n;
        }
    }
    let scores: Vec<PullScore> = grid
        .iter()
        .zip(right)
        .map(|(&l2, r)| PullScore {
            l2,
            held_out_accuracy: r as f64 / xs.len() as f64,
        })
        .collect();
    Ok(PullChoice {
        l2: weakest_within(&scores, slack).unwrap_or(fallback),
        folds: k,
        slack,
        scores,
        grid_ms: 0,
    })
}

/// Right answers on fold `f` of each pull of `grid`, fitted on the other folds.
fn fold_rights(
    start: &LinearHead,
    xs: &[Vec<f32>],
    ys: &[usize],
    of: &[usize],
    f: usize,
    grid: &[f64],
    max_steps: usize,
) -> Result<Vec<usize>, TrainError> {
    let (mut fx, mut fy) = (Vec::new(), Vec::new());
    for ((x, y), _) in xs.iter().zip(ys).zip(of).filter(|(_, g)| **g != f) {
        fx.push(x.clone());
        fy.push(*y);
    }
    grid.iter()
        .map(|&l2| {
            let (h, _) = head::fit(start, &fx, &fy, &FitOptions { l2, max_steps })?;
            Ok(xs
                .iter()
                .zip(ys)
                .zip(of)
                .filter(|(_, g)| **g == f)
                .filter(|((x, y), _)| h.predict(x) == **y)
                .count())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_keep_an_input_in_one_fold_and_are_deterministic() {
        let inputs: Vec<Payload> = (0..103)
            .map(|i| Payload::Text(format!("sentence {}", i % 97)))
            .collect();
        let keys: Vec<u64> = inputs.iter().map(key).collect();
        let of = folds(&keys, 4);
        assert_eq!(of, folds(&keys, 4), "deterministic");
        assert_eq!(keys, inputs.iter().map(key).collect::<Vec<_>>());
        // The six repeated sentences sit in their first copy's fold.
        for i in 97..103 {
            assert_eq!(of[i], of[i - 97], "input {i} in two folds");
        }
        // 97 distinct inputs dealt over 4 folds: 25, 24, 24, 24.
        let mut sizes = [0usize; 4];
        for i in 0..97 {
            sizes[of[i]] += 1;
        }
        sizes.sort_unstable();
        assert_eq!(sizes, [24, 24, 24, 25]);
        // Not the input order: the folds are shuffled by digest.
        assert_ne!(of[..8], [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn the_weakest_pull_within_the_slack_wins() {
        let s = |l2, held_out_accuracy| PullScore {
            l2,
            held_out_accuracy,
        };
        // 0.01 is about as good as the best: kept.
        let close = [s(0.01, 0.871), s(0.1, 0.874), s(1.0, 0.862)];
        assert_eq!(weakest_within(&close, 0.005), Some(0.01));
        // 0.01 is clearly worse: the weakest pull within the slack of the best, 1.0.
        let far = [s(0.01, 0.75), s(0.1, 0.79), s(1.0, 0.804), s(3.0, 0.806)];
        assert_eq!(weakest_within(&far, 0.005), Some(1.0));
        assert_eq!(weakest_within(&far, 0.0), Some(3.0), "no slack: the best");
        assert_eq!(weakest_within(&[], 0.005), None);
    }

    /// Labels the start head gets right and a tiny training set cannot improve on: pulls are
    /// scored on every fold and a choice is made from them.
    #[test]
    fn choose_scores_every_pull_and_falls_back_without_enough_inputs() {
        let xs: Vec<Vec<f32>> = (0..40u8)
            .map(|i| vec![f32::from(i % 10) - 4.5, f32::from(i % 3)])
            .collect();
        let ys: Vec<usize> = xs.iter().map(|x| usize::from(x[0] > 0.0)).collect();
        let keys: Vec<u64> = (0..40u64).map(|i| i * 7919 % 41).collect();
        let start = LinearHead {
            dim: 2,
            classes: 2,
            weights: vec![-1.0, 1.0, 0.0, 0.0],
            bias: vec![0.0, 0.0],
        };
        let grid = [0.01, 1.0, 100.0];
        let c = choose(&start, &xs, &ys, &keys, &grid, 4, 0.005, 50, 0.5).expect("scores");
        assert_eq!(c.folds, 4);
        assert_eq!(
            c.scores.iter().map(|s| s.l2).collect::<Vec<_>>(),
            grid.to_vec()
        );
        assert!(c.scores.iter().all(|s| s.held_out_accuracy == 1.0), "{c:?}");
        assert_eq!(c.l2, 0.01, "all equal: the weakest");
        let few = choose(
            &start,
            &xs[..3],
            &ys[..3],
            &keys[..3],
            &grid,
            4,
            0.005,
            50,
            0.5,
        )
        .expect("falls back");
        assert_eq!((few.l2, few.folds, few.scores.len()), (0.5, 0, 0));
    }
}
