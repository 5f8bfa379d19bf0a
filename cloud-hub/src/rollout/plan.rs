//! A rollout as a pure state machine: which devices get the new version at each stage, and
//! when a stage succeeds, fails or times out. No IO and no clock: the controller hands in what
//! the fleet reports and the time, and carries out the returned commands.
//!
//! - Targets: the devices whose labels match the rollout's (all when it names none), in an
//!   order fixed by a hash of the rollout id and the device name (a stable, spread-out canary).
//! - Stages: the canary percentage, then each further percentage up to 100, of the targets
//!   known when the stage starts. A stage's devices are commanded once each (again after
//!   `resend_after_ms` while they have not answered, e.g. offline).
//! - A stage succeeds when at least `success_share` of its devices run the version; it fails
//!   (the rollout halts on its own) when more than `failure_share` of them refused it or rolled
//!   it back, or when `stage_timeout_ms` passes first.
//! - After success the version stays desired: devices that missed the rollout (offline, new)
//!   are commanded when they show up ([`Rollout::reconcile`]).
//! - A rollback (`rollback: true`) puts an older version back: its targets are the matching
//!   devices that serve a newer version than it (a device already on it, or older, has nothing
//!   to roll back), and their command carries `rollback: true`, without which an agent refuses
//!   a version older than the one it serves (`not_newer`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tandem_shared::bundle::ModelVersion;

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Model name.
    pub model: String,
    /// The version to roll out (in the registry).
    pub version: String,
    /// Percentage of the targets in the first (canary) stage, 1..=100.
    pub canary_pct: u8,
    /// Percentages of the later stages, increasing, the last 100 (default: `[100]`).
    #[serde(default = "default_stages")]
    pub stages_pct: Vec<u8>,
    /// Only devices with these labels (`group = "cameras-north"`); empty: the whole fleet.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Share of a stage's devices that must run the version for it to succeed (0..1; default
    /// 0.9).
    #[serde(default = "default_success")]
    pub success_share: f64,
    /// Share of a stage's devices that may refuse or roll back the version; more halts the
    /// rollout (0..1; default 0.2).
    #[serde(default = "default_failure")]
    pub failure_share: f64,
    /// Longest a stage may take, in milliseconds; then it halts (default 1 800 000: 30 min).
    #[serde(default = "default_timeout")]
    pub stage_timeout_ms: u64,
    /// Command again a device that has not answered after this long, in milliseconds (default
    /// 300 000: 5 min).
    #[serde(default = "default_resend")]
    pub resend_after_ms: u64,
    /// An ordered rollback to this (older) version: only devices serving a newer version are
    /// targeted, and the command lets them accept an older one (default: false).
    #[serde(default)]
    pub rollback: bool,
}

fn default_stages() -> Vec<u8> {
    vec![100]
}
fn default_success() -> f64 {
    0.9
}
fn default_failure() -> f64 {
    0.2
}
fn default_timeout() -> u64 {
    30 * 60 * 1000
}
fn default_resend() -> u64 {
    5 * 60 * 1000
}

impl Spec {
    /// Every problem with the values.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=100).contains(&self.canary_pct) {
            p.push("canary_pct must be between 1 and 100".into());
        }
        let mut last = self.canary_pct;
        for s in &self.stages_pct {
            // A canary of 100% with the default stages ([100]) is one stage.
            if *s == 100 && last == 100 {
                continue;
            }
            if *s <= last || *s > 100 {
                p.push(format!(
                    "stages_pct must increase from canary_pct ({}) up to 100: {:?}",
                    self.canary_pct, self.stages_pct
                ));
                break;
            }
            last = *s;
        }
        if last != 100 {
            p.push("the last stage must be 100 (%)".into());
        }
        for (k, v) in [
            ("success_share", self.success_share),
            ("failure_share", self.failure_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("{k} must be between 0 and 1"));
            }
        }
        if self.stage_timeout_ms == 0 {
            p.push("stage_timeout_ms must be > 0".into());
        }
        if self.rollback && ModelVersion::parse(&self.version).is_none() {
            p.push(format!(
                "a rollback needs a comparable version (1.0.1), not `{}`",
                self.version
            ));
        }
        p
    }

    /// The stage percentages, canary first.
    pub fn stages(&self) -> Vec<u8> {
        std::iter::once(self.canary_pct)
            .chain(
                self.stages_pct
                    .iter()
                    .copied()
                    .filter(|s| *s > self.canary_pct),
            )
            .collect()
    }
}

/// What the fleet says about one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceView {
    /// Device name (certificate CN).
    pub device: String,
    /// Its labels, as it reported them.
    pub labels: BTreeMap<String, String>,
    /// Connected now.
    pub online: bool,
    /// The version of the model it serves.
    pub version: Option<String>,
    /// Its last update report for each recent version of this model, oldest first:
    /// (version, state, reason); states as the agent reports them (`downloading`, `verifying`,
    /// `testing`, `watching`, `active`, `rejected`, `rolled_back`).
    pub updates: Vec<(String, String, Option<String>)>,
    /// When the hub took in the telemetry that carried `updates` (hub clock, ms). A refusal
    /// counts only when taken in after the device was commanded: one left from an earlier
    /// attempt at the same version is stale (the device tries again when commanded).
    pub reported_ms: u64,
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// Commanding and watching stage `stage` (0: the canary).
    Running {
        /// Stage index.
        stage: usize,
    },
    /// Stopped by the operator; resumes where it was.
    Paused {
        /// Stage index.
        stage: usize,
    },
    /// Every stage succeeded.
    Succeeded,
    /// Stopped on its own.
    Halted {
        /// Why, in words.
        reason: String,
    },
    /// Stopped by the operator for good.
    Aborted,
}

/// One device of the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The stage that took it.
    pub stage: usize,
    /// When it was last commanded (ms), if it was.
    pub commanded_ms: Option<u64>,
    /// `pending`, `active` or `failed`.
    pub outcome: Outcome,
}

/// A target's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// No verdict yet.
    Pending,
    /// Runs the version.
    Active,
    /// Refused or rolled it back.
    Failed {
        /// The device's reason.
        reason: String,
    },
}

/// A rollout and its progress (what the store keeps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Id (`<model>-<version>-<n>`).
    pub id: String,
    /// What was asked.
    pub spec: Spec,
    /// Where it stands.
    pub phase: Phase,
    /// When it was created (ms).
    pub created_ms: u64,
    /// When the current stage started (ms).
    pub stage_started_ms: u64,
    /// Every device taken so far.
    pub targets: BTreeMap<String, Target>,
}

/// What the controller must do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the update command (model, version) to this device.
    Command(String),
}

/// FNV-1a: a stable, spread-out order of devices per rollout.
fn order_key(id: &str, device: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain([0]).chain(device.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Rollout {
    /// A new rollout, running its canary stage from `now_ms`.
    pub fn new(id: String, spec: Spec, now_ms: u64) -> Self {
        Self {
            id,
            spec,
            phase: Phase::Running { stage: 0 },
            created_ms: now_ms,
            stage_started_ms: now_ms,
            targets: BTreeMap::new(),
        }
    }

    /// Whether it is finished (succeeded, halted or aborted).
    pub fn finished(&self) -> bool {
        matches!(
            self.phase,
            Phase::Succeeded | Phase::Halted { .. } | Phase::Aborted
        )
    }

    /// Pauses a running rollout.
    pub fn pause(&mut self) -> Result<(), String> {
        match self.phase {
            Phase::Running { stage } => {
                self.phase = Phase::Paused { stage };
                Ok(())
            }
            ref p => Err(format!("cannot pause a rollout that is {p:?}")),
        }
    }

    /// Resumes a paused rollout; its stage's clock starts again.
    pub fn resume(&mut self, now_ms: u64) -> Result<(), String> {
        match self.phase {
            Phase::Paused { stage } => {
                self.phase = Phase::Running { stage };
                self.stage_started_ms = now_ms;
                Ok(())
            }
            ref p => Err(format!("cannot resume a rollout that is {p:?}")),
        }
    }

    /// Aborts an unfinished rollout.
    pub fn abort(&mut self) -> Result<(), String> {
        if self.finished() {
            return Err(format!("the rollout is already {:?}", self.phase));
        }
        self.phase = Phase::Aborted;
        Ok(())
    }

    fn matches(&self, d: &DeviceView) -> bool {
        self.spec
            .labels
            .iter()
            .all(|(k, v)| d.labels.get(k) == Some(v))
    }

    /// Whether `d` serves a newer version than the rollout's (what a rollback targets).
    fn runs_newer(&self, d: &DeviceView) -> bool {
        match (
            d.version.as_deref().and_then(ModelVersion::parse),
            ModelVersion::parse(&self.spec.version),
        ) {
            (Some(has), Some(wanted)) => has > wanted,
            _ => false,
        }
    }

    /// Whether `d` is one of this rollout's targets: it matches the labels and, for a rollback,
    /// serves a newer version (or was already taken: it keeps counting once rolled back).
    fn eligible(&self, d: &DeviceView) -> bool {
        self.matches(d)
            && (!self.spec.rollback || self.targets.contains_key(&d.device) || self.runs_newer(d))
    }

    /// One step: records what the devices report, decides the stage, and says which devices
    /// to command now.
    pub fn step(&mut self, devices: &[DeviceView], now_ms: u64) -> Vec<Action> {
        let Phase::Running { stage } = self.phase else {
            return Vec::new();
        };
        let by_name: BTreeMap<&str, &DeviceView> =
            devices.iter().map(|d| (d.device.as_str(), d)).collect();
        self.record(&by_name);
        // Take devices for this stage up to its share of the targets.
        let mut eligible: Vec<&DeviceView> = devices.iter().filter(|d| self.eligible(d)).collect();
        eligible.sort_by_key(|d| order_key(&self.id, &d.device));
        let stages = self.spec.stages();
        let pct = u64::from(stages.get(stage).copied().unwrap_or(100));
        let want = (eligible.len() as u64 * pct).div_ceil(100) as usize;
        for d in eligible {
            if self.targets.len() >= want {
                break;
            }
            self.targets.entry(d.device.clone()).or_insert(Target {
                stage,
                commanded_ms: None,
                outcome: Outcome::Pending,
            });
        }
        self.record(&by_name);
        if let Some(next) = self.judge(stage, now_ms, stages.len()) {
            self.phase = next;
            if let Phase::Running { stage: s } = self.phase
                && s != stage
            {
                self.stage_started_ms = now_ms;
                return self.step(devices, now_ms);
            }
            if self.finished() {
                return Vec::new();
            }
        }
        // Command the stage's devices that are online and not yet (or not lately) told.
        let mut actions = Vec::new();
        for (name, t) in &mut self.targets {
            let online = by_name.get(name.as_str()).is_some_and(|d| d.online);
            let due = t
                .commanded_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= self.spec.resend_after_ms);
            if t.outcome == Outcome::Pending && online && due {
                t.commanded_ms = Some(now_ms);
                actions.push(Action::Command(name.clone()));
            }
        }
        actions
    }

    /// After success, the rollout's version stays the fleet's desired one: a matching device
    /// that does not run it (offline during the rollout, or new) is commanded when it is
    /// online (again after `resend_after_ms`); one that refused or rolled it back is left alone.
    pub fn reconcile(&mut self, devices: &[DeviceView], now_ms: u64) -> Vec<Action> {
        if self.phase != Phase::Succeeded {
            return Vec::new();
        }
        let by_name: BTreeMap<&str, &DeviceView> =
            devices.iter().map(|d| (d.device.as_str(), d)).collect();
        self.record(&by_name);
        let stage = self.spec.stages().len().saturating_sub(1);
        let mut actions = Vec::new();
        let wanted: Vec<&DeviceView> = devices
            .iter()
            .filter(|d| self.matches(d) && d.online)
            .collect();
        for d in wanted {
            if d.version.as_deref() == Some(self.spec.version.as_str()) {
                continue;
            }
            let t = self.targets.entry(d.device.clone()).or_insert(Target {
                stage,
                commanded_ms: None,
                outcome: Outcome::Pending,
            });
            let due = t
                .commanded_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= self.spec.resend_after_ms);
            if t.outcome == Outcome::Pending && due {
                t.commanded_ms = Some(now_ms);
                actions.push(Action::Command(d.device.clone()));
            }
        }
        actions
    }

    /// A finished rollout that no step or reconciliation moves any more (aborted, halted, or
    /// succeeded and followed by a newer rollout of its model) commands nothing, but its
    /// counts keep following its devices: a device commanded before the abort that installs
    /// the version afterwards counts as active, one that refuses it as failed, and one that
    /// moved off the version (a rollback) no longer counts as active.
    pub fn follow(&mut self, devices: &[DeviceView]) {
        if !self.finished() {
            return;
        }
        let by_name: BTreeMap<&str, &DeviceView> =
            devices.iter().map(|d| (d.device.as_str(), d)).collect();
        self.record(&by_name);
    }

    /// Updates each target's outcome from what its device reports.
    fn record(&mut self, devices: &BTreeMap<&str, &DeviceView>) {
        let version = self.spec.version.clone();
        for (name, t) in &mut self.targets {
            let Some(d) = devices.get(name.as_str()) else {
                continue;
            };
            let report = d.updates.iter().rev().find(|(v, _, _)| *v == version);
            let fresh = t.commanded_ms.is_some_and(|at| d.reported_ms >= at);
            t.outcome = match report.map(|(_, s, r)| (s.as_str(), r)) {
                Some(("rejected" | "rolled_back", reason)) if fresh => Outcome::Failed {
                    reason: reason.clone().unwrap_or_else(|| "refused".into()),
                },
                _ if d.version.as_deref() == Some(version.as_str()) => Outcome::Active,
                _ if matches!(t.outcome, Outcome::Failed { .. }) => t.outcome.clone(),
                _ => Outcome::Pending,
            };
        }
    }

    /// The next phase, if the stage is decided.
    fn judge(&self, stage: usize, now_ms: u64, stages: usize) -> Option<Phase> {
        let mine: Vec<&Target> = self.targets.values().filter(|t| t.stage <= stage).collect();
        if mine.is_empty() {
            let none = if self.spec.rollback {
                "no device matching the rollout's labels serves a newer version"
            } else {
                "no device matches the rollout's labels"
            };
            return (now_ms.saturating_sub(self.stage_started_ms) > self.spec.stage_timeout_ms)
                .then(|| Phase::Halted {
                    reason: format!("stage {stage}: {none}"),
                });
        }
        let n = mine.len() as f64;
        let active = mine.iter().filter(|t| t.outcome == Outcome::Active).count();
        let failed: Vec<&String> = mine
            .iter()
            .filter_map(|t| match &t.outcome {
                Outcome::Failed { reason } => Some(reason),
                _ => None,
            })
            .collect();
        if failed.len() as f64 > self.spec.failure_share * n {
            let mut reasons: Vec<&str> = failed.iter().map(|r| r.as_str()).collect();
            reasons.sort_unstable();
            reasons.dedup();
            return Some(Phase::Halted {
                reason: format!(
                    "stage {stage}: {} of {} devices failed ({})",
                    failed.len(),
                    mine.len(),
                    reasons.join(", ")
                ),
            });
        }
        if active as f64 >= self.spec.success_share * n {
            return Some(if stage + 1 >= stages {
                Phase::Succeeded
            } else {
                Phase::Running { stage: stage + 1 }
            });
        }
        if now_ms.saturating_sub(self.stage_started_ms) > self.spec.stage_timeout_ms {
            return Some(Phase::Halted {
                reason: format!(
                    "stage {stage}: timed out with {active} of {} devices active",
                    mine.len()
                ),
            });
        }
        None
    }
}
