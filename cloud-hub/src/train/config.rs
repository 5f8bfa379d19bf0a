//! `[train]`: where candidates and decisions are kept, how a head is fitted, and the gate.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `train.l2_grid`'s default pulls.
/// Measured (README, "Retraining and promotion"): vision-fashion's held-out folds keep 0.01,
/// text-sentiment's move to 10.
pub const GRID_DEFAULT: [f64; 8] = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0];

/// Who starts the rollout of a candidate the gate passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// The hub signs it, stores it in the registry and starts the rollout at once.
    #[default]
    Auto,
    /// The decision waits for an operator (`tandem-hub train promote`, `POST
    /// /v1/train/decisions/{id}/promote`).
    Operator,
}

/// `[train]`: retraining a model's edge head from the fleet's feedback, and the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Folder of candidates (bundles, `candidate.json`) and decisions (default `train`,
    /// relative to the config file).
    pub dir: PathBuf,
    /// Fewest labelled training examples a training run accepts (default 20).
    pub min_examples: usize,
    /// Most training examples one run reads (default 20000).
    pub max_examples: usize,
    /// L2 pull of the head's weights and bias toward the serving head on standardised features,
    /// used as is when `l2_grid` is empty (default 0.01).
    pub l2: f64,
    /// Pulls the trainer chooses from on held-out folds of the training examples, ascending:
    /// the weakest one whose held-out accuracy is within `l2_slack` of the best is the pull
    /// of the final fit (on every example); empty: `l2` as is (default `[0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30]`).
    pub l2_grid: Vec<f64>,
    /// Folds of the training examples the grid is scored on, by input (default 4).
    pub l2_folds: usize,
    /// How far below the best pull's held-out accuracy a weaker pull may be and still be
    /// chosen: about one standard error of the difference between two pulls' accuracies on
    /// ~1000 held-out examples, so a weaker pull (more adaptation to the fleet) is given up
    /// only for a gain the folds can tell from noise (default 0.005).
    pub l2_slack: f64,
    /// Gradient steps at most (default 300).
    pub max_steps: usize,
    /// Train every layer of the edge network, not only its head, when its graph is one the
    /// whole-net trainer reads (a chain of 3×3 convolutions, ReLU, 2×2 max pooling, global
    /// average pooling and a linear layer: vision-fashion's); other models train their head
    /// (default false: measured by `make bench-loop`, docs/benchmarks/loop.md, the whole net
    /// gains little over the head there and loses more on the original set).
    pub whole_net: bool,
    /// Passes over the training set when training the whole network (default 8).
    pub net_epochs: usize,
    /// Adam's learning rate when training the whole network (default 0.001).
    pub net_learning_rate: f64,
    /// Examples per step when training the whole network (default 32).
    pub net_batch: usize,
    /// Share of a fit's examples drawn from the model's original training data (the replay
    /// set it ships, `models/<model>/data/replay-*`, never its test set), so that a head
    /// adapted to the fleet keeps its accuracy on the original data; 0 turns replay off
    /// (default 0.75: three replayed examples per feedback one, up to the replay set's size).
    pub replay_share: f64,
    /// The candidate must beat the serving version's accuracy on the target (feedback test)
    /// set by more than this (default 0.0: strictly better).
    pub min_gain: f64,
    /// Largest accuracy drop allowed on the original test set and on any slice of the target
    /// set (default 0.01).
    pub tolerance: f64,
    /// Slices with fewer items are reported but not gated (default 20).
    pub min_slice_items: u64,
    /// Fewest target items a gate decides on (default 20).
    pub min_target_items: u64,
    /// Items of the original (shipped) test set the gate judges on (default 2000).
    pub original_items: usize,
    /// Who starts the rollout of a passed candidate (default `auto`).
    pub promotion: Promotion,
    /// Canary percentage of a promotion's rollout (default 10).
    pub canary_pct: u8,
    /// Later stages of a promotion's rollout (default `[50, 100]`).
    pub stages_pct: Vec<u8>,
    /// Finished training jobs (`POST /v1/train`) the hub keeps for `GET /v1/train/jobs`, in
    /// memory; the oldest go first (default 50).
    pub job_history: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("train"),
            min_examples: 20,
            max_examples: 20_000,
            l2: 0.01,
            l2_grid: GRID_DEFAULT.to_vec(),
            l2_folds: 4,
            l2_slack: 0.005,
            max_steps: 300,
            whole_net: false,
            net_epochs: 8,
            net_learning_rate: 0.001,
            net_batch: 32,
            replay_share: 0.75,
            min_gain: 0.0,
            tolerance: 0.01,
            min_slice_items: 20,
            min_target_items: 20,
            original_items: 2000,
            promotion: Promotion::Auto,
            canary_pct: 10,
            stages_pct: vec![50, 100],
            job_history: 50,
        }
    }
}

impl TrainConfig {
    /// What is wrong with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.min_examples == 0 || self.max_examples < self.min_examples {
            p.push("train.min_examples must be > 0 and <= train.max_examples".into());
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            p.push("train.l2 must be a finite number >= 0".into());
        }
        if self.l2_grid.iter().any(|v| !(*v >= 0.0 && v.is_finite())) {
            p.push("train.l2_grid must hold finite numbers >= 0".into());
        } else if self.l2_grid.windows(2).any(|w| w[0] >= w[1]) {
            p.push("train.l2_grid must be ascending, without repeats".into());
        }
        if self.l2_folds < 2 {
            p.push("train.l2_folds must be >= 2".into());
        }
        if !(0.0..=1.0).contains(&self.l2_slack) {
            p.push("train.l2_slack must be between 0 and 1".into());
        }
        if !(0.0..1.0).contains(&self.replay_share) {
            p.push("train.replay_share must be >= 0 and < 1".into());
        }
        if self.net_epochs == 0 || self.net_batch == 0 {
            p.push("train.net_epochs and train.net_batch must be > 0".into());
        }
        if !(self.net_learning_rate > 0.0 && self.net_learning_rate.is_finite()) {
            p.push("train.net_learning_rate must be a finite number > 0".into());
        }
        if self.max_steps == 0 {
            p.push("train.max_steps must be > 0".into());
        }
        for (k, v) in [("min_gain", self.min_gain), ("tolerance", self.tolerance)] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("train.{k} must be between 0 and 1"));
            }
        }
        if self.job_history == 0 {
            p.push("train.job_history must be > 0".into());
        }
        if self.original_items == 0 {
            p.push("train.original_items must be > 0".into());
        }
        p
    }
}
