//! Staged rollouts of a model version to the fleet (flow 5).
//!
//! # Layout
//! - [`plan`]: the rollout as a pure state machine (targets by label, canary then stages,
//!   success and failure shares, stage timeout, pause, resume, abort).

pub mod plan;

#[cfg(test)]
mod plan_tests;

pub use plan::{Action, DeviceView, Outcome, Phase, Rollout, Spec, Target};
