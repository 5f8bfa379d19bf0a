//! Staged rollouts of a model version to the fleet (flow 5).
//!
//! # Layout
//! - [`plan`]: the rollout as a pure state machine (targets by label, canary then stages,
//!   success and failure shares, stage timeout, pause, resume, abort).
//! - [`store`]: rollouts in sled, created and changed by the API, stepped by the controller.
//! - [`cli`]: `tandem-hub rollout start|status|pause|resume|abort` over that API.
//! - [`controller`]: steps the rollouts against the fleet state and publishes `update_model`
//!   commands over MQTT.
//! - [`http`]: `/v1/rollouts` on the hub's API (the CLI's `tandem-hub rollout` talks to it).

pub mod cli;
pub mod controller;
pub mod http;
pub mod plan;
pub mod store;

#[cfg(test)]
mod plan_tests;

pub use cli::RolloutCmd;
pub use plan::{Action, DeviceView, Outcome, Phase, Rollout, Spec, Target};
pub use store::{Command, RolloutError, RolloutStore};
