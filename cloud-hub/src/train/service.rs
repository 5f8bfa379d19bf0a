//! One turn of the loop after the data: train a candidate from the serving version, evaluate
//! both on the target set (held-out feedback: the test split) and on the original test set,
//! gate, then — per `train.promotion` — sign it into the registry and start its staged
//! rollout, or wait for an operator. Every decision is kept as JSON under
//! `train.dir/decisions/` with its checks and the ids of its four reports (the report store).

use super::gate::{self, Check};
use super::{Candidate, Promotion, TrainError, Trainer, features};
use crate::eval::dataset::{self, LabelledSet};
use crate::eval::run::{Plan, evaluate};
use crate::eval::store::ReportStore;
use crate::feedback::Split;
use crate::registry::Registry;
use crate::rollout::RolloutStore;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a decision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The gate refused the candidate (the failed checks say why).
    Refused,
    /// The gate passed it; `train.promotion = "operator"`: waiting for `promote`.
    AwaitingOperator,
    /// Signed into the registry and its rollout started.
    RolledOut,
}

/// A gate decision on one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The candidate's id.
    pub id: String,
    /// The candidate.
    pub candidate: Candidate,
    /// The version it was judged against (the serving one).
    pub serving_version: String,
    /// Where it stands.
    pub status: Status,
    /// Every check, passed or not.
    pub checks: Vec<Check>,
    /// Why it was refused (the failed checks' reasons).
    pub reasons: Vec<String>,
    /// Report ids: target serving, target candidate, original serving, original candidate.
    pub reports: Vec<String>,
    /// The rollout started for it.
    pub rollout: Option<String>,
    /// When it was decided, milliseconds since the Unix epoch.
    pub decided_ms: u64,
}

/// What `POST /v1/train` and `tandem-hub train run` ask for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// The model (a folder of `models.dir`).
    pub model: String,
    /// Training examples at most (0 or absent: `train.max_examples`).
    #[serde(default)]
    pub limit: usize,
}

/// The loop's training, gate and promotion on the hub's stores.
#[derive(Debug, Clone)]
pub struct TrainService {
    /// Fits and exports candidates.
    pub trainer: Trainer,
    /// `models.dir`, resolved (the shipped versions and their test sets).
    pub models_dir: PathBuf,
    /// Length of a time-window slice (`eval.window_ms`).
    pub window_ms: u64,
    /// Where the gate's reports go.
    pub reports: Arc<dyn ReportStore>,
    /// The feedback store (training and target sets), when this process holds it.
    pub feedback: Option<Arc<crate::feedback::Store>>,
    /// Signed versions.
    pub registry: Arc<Registry>,
    /// The PKI folder (the bundle-signing key).
    pub pki_dir: PathBuf,
    /// Rollouts, when this process holds them.
    pub rollouts: Option<RolloutStore>,
}

/// Removes a candidate's unsigned bundle once nothing needs it (refused, or copied into the
/// registry): a text candidate is ~23 MB. `candidate.json` stays, keeping its version taken.
fn drop_bundle(c: &Candidate) {
    if let Err(e) = std::fs::remove_dir_all(&c.bundle) {
        tracing::warn!(bundle = %c.bundle.display(), error = %e, "candidate bundle not removed");
    }
}

fn valid_name(model: &str) -> Result<(), TrainError> {
    let ok = !model.is_empty()
        && !model.starts_with('.')
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(TrainError::Invalid(format!(
            "`{model}` is not a model name"
        )))
    }
}

impl TrainService {
    /// The service on the stores of `cfg` (`train.dir`, `models.dir`, `registry_dir`,
    /// `pki_dir`); the report store, feedback store and rollouts are the caller's (one process
    /// holds each).
    pub fn from_config(
        cfg: &crate::config::Config,
        reports: Arc<dyn ReportStore>,
        feedback: Option<Arc<crate::feedback::Store>>,
        registry: Arc<Registry>,
        rollouts: Option<RolloutStore>,
    ) -> Self {
        let settings = cfg.engine_settings();
        Self {
            models_dir: settings.resolve(&settings.models.dir),
            trainer: Trainer {
                settings,
                cfg: cfg.train.clone(),
                dir: cfg.train_dir(),
            },
            window_ms: cfg.eval.window_ms,
            reports,
            feedback,
            registry,
            pki_dir: cfg.pki_dir(),
            rollouts,
        }
    }

    fn decisions_dir(&self) -> PathBuf {
        self.trainer.dir.join("decisions")
    }

    /// The serving version's folder: the last rolled-out candidate's signed bundle, else the
    /// model's folder in `models.dir`.
    pub fn serving_dir(&self, model: &str) -> Result<PathBuf, TrainError> {
        valid_name(model)?;
        let last = self
            .list(Some(model))?
            .into_iter()
            .rev()
            .find(|d| d.status == Status::RolledOut);
        if let Some(d) = last {
            let dir = self.registry.bundle_dir(model, &d.candidate.version);
            if dir.is_dir() {
                return Ok(dir);
            }
        }
        let dir = tandem_engine::model::serving_dir(&self.models_dir, model);
        if !dir.is_dir() {
            return Err(TrainError::NotFound(format!(
                "no model `{model}` in {}",
                self.models_dir.display()
            )));
        }
        Ok(dir)
    }

    fn feedback_set(
        &self,
        model: &str,
        split: Split,
        limit: usize,
    ) -> Result<LabelledSet, TrainError> {
        let store = self.feedback.as_ref().ok_or_else(|| {
            TrainError::Invalid(
                "the feedback store is held by the running hub: use POST /v1/train".into(),
            )
        })?;
        let (labels, _) = dataset::labels(&self.models_dir.join(model))?;
        Ok(crate::eval::feedback::from_feedback(
            store, model, &labels, split, limit,
        )?)
    }

    /// A turn on the fleet's feedback: trained on the train split, gated on the test split.
    pub fn run(&self, req: &TrainRequest) -> Result<Decision, TrainError> {
        self.serving_dir(&req.model)?;
        let limit = match req.limit {
            0 => self.trainer.cfg.max_examples,
            n => n.min(self.trainer.cfg.max_examples),
        };
        let train = self.feedback_set(&req.model, Split::Train, limit)?;
        let target = self.feedback_set(&req.model, Split::Test, 0)?;
        self.run_on(&req.model, &train, &target)
    }

    /// A turn on given sets (the benchmark's and tests' entry): trains on `train` plus
    /// `train.replay_share` of the model's replay set (its original training data), gates on
    /// `target` and the model's original test set, promotes per `train.promotion`.
    pub fn run_on(
        &self,
        model: &str,
        train: &LabelledSet,
        target: &LabelledSet,
    ) -> Result<Decision, TrainError> {
        let serving = self.serving_dir(model)?;
        let cfg = &self.trainer.cfg;
        // Replay counts on top: the feedback alone must reach `min_examples`.
        let have = train.items.len().min(cfg.max_examples);
        if have < cfg.min_examples {
            return Err(TrainError::TooFew {
                have,
                need: cfg.min_examples,
            });
        }
        let replay_set = if cfg.replay_share > 0.0 {
            let (_, n) = super::replay::counts(have, usize::MAX, cfg.replay_share, usize::MAX);
            dataset::replay(&self.models_dir.join(model), n)?
        } else {
            None
        };
        let mixed = super::replay::mix(
            train,
            replay_set.as_ref(),
            cfg.replay_share,
            cfg.max_examples,
        );
        let registry = self.registry.clone();
        let candidate = self.trainer.train(&serving, &mixed, |v| {
            registry.get(model, v).ok().flatten().is_some()
        })?;
        let original = dataset::shipped(
            &self.models_dir.join(model),
            self.trainer.cfg.original_items,
        )?;
        let ts = self.report(&serving, model, target)?;
        let tc = self.report(&candidate.bundle, model, target)?;
        let os = self.report(&serving, model, &original)?;
        let oc = self.report(&candidate.bundle, model, &original)?;
        let checks = gate::judge(&self.trainer.cfg, (&ts, &tc), (&os, &oc));
        let reasons: Vec<String> = checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.reason.clone())
            .collect();
        let mut d = Decision {
            id: candidate.id.clone(),
            serving_version: ts.version.clone(),
            candidate,
            status: if reasons.is_empty() {
                Status::AwaitingOperator
            } else {
                Status::Refused
            },
            checks,
            reasons,
            reports: vec![ts.id, tc.id, os.id, oc.id],
            rollout: None,
            decided_ms: crate::fleet::link::now_ms(),
        };
        self.save(&d)?;
        tracing::info!(id = %d.id, model, version = %d.candidate.version, status = ?d.status, reasons = ?d.reasons, "gate decision");
        if d.status == Status::Refused {
            drop_bundle(&d.candidate);
        }
        if d.status == Status::AwaitingOperator && self.trainer.cfg.promotion == Promotion::Auto {
            d = self.promote(&d.id)?;
        }
        Ok(d)
    }

    fn report(
        &self,
        dir: &std::path::Path,
        model: &str,
        set: &LabelledSet,
    ) -> Result<crate::eval::report::Report, TrainError> {
        let engine = features::engine_on(&self.trainer.settings, dir, model)?;
        let plan = Plan {
            model: model.to_string(),
            variant: "edge".into(),
            shifts: Vec::new(),
            window_ms: self.window_ms,
            device_labels: Default::default(),
        };
        let r = evaluate(
            &engine,
            &plan,
            set,
            self.trainer.settings.engine.max_rows_per_request,
        );
        engine.shutdown();
        let r = r.map_err(|e| TrainError::Eval(e.to_string()))?;
        self.reports
            .put(&r)
            .map_err(|e| TrainError::Eval(e.to_string()))?;
        Ok(r)
    }

    /// Signs a passed candidate into the registry and starts its staged rollout.
    pub fn promote(&self, id: &str) -> Result<Decision, TrainError> {
        let mut d = self
            .get(id)?
            .ok_or_else(|| TrainError::NotFound(format!("no decision {id}")))?;
        if d.status != Status::AwaitingOperator {
            return Err(TrainError::Phase(format!(
                "decision {id} is {:?}: only a passed candidate is promoted",
                d.status
            )));
        }
        let rollouts = self.rollouts.as_ref().ok_or_else(|| {
            TrainError::Invalid(
                "rollouts are held by the running hub: use POST /v1/train/decisions/{id}/promote"
                    .into(),
            )
        })?;
        let signer = crate::registry::load_signer(&self.pki_dir)
            .map_err(|e| TrainError::Promote(e.to_string()))?;
        self.registry
            .push(&d.candidate.bundle, &signer)
            .map_err(|e| TrainError::Promote(e.to_string()))?;
        let cfg = &self.trainer.cfg;
        let spec: crate::rollout::plan::Spec = serde_json::from_value(serde_json::json!({
            "model": d.candidate.model, "version": d.candidate.version,
            "canary_pct": cfg.canary_pct, "stages_pct": cfg.stages_pct,
        }))
        .map_err(|e| TrainError::Promote(e.to_string()))?;
        let r = rollouts
            .create(spec, true, crate::fleet::link::now_ms())
            .map_err(|e| TrainError::Promote(e.to_string()))?;
        d.status = Status::RolledOut;
        d.rollout = Some(r.id.clone());
        self.save(&d)?;
        drop_bundle(&d.candidate);
        tracing::info!(id = %d.id, rollout = %r.id, "candidate signed and rolling out");
        Ok(d)
    }

    fn save(&self, d: &Decision) -> Result<(), TrainError> {
        let json = serde_json::to_vec_pretty(d).map_err(|e| TrainError::Invalid(e.to_string()))?;
        tandem_engine::bundle::write_synced(
            &self.decisions_dir().join(format!("{}.json", d.id)),
            &json,
        )?;
        Ok(())
    }

    /// One decision.
    pub fn get(&self, id: &str) -> Result<Option<Decision>, TrainError> {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || id.starts_with('.')
        {
            return Ok(None);
        }
        let p = self.decisions_dir().join(format!("{id}.json"));
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| TrainError::Invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TrainError::Io { path: p, source }),
        }
    }

    /// Decisions, oldest first (one model's with `Some`).
    pub fn list(&self, model: Option<&str>) -> Result<Vec<Decision>, TrainError> {
        let dir = self.decisions_dir();
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(r) => r
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(String::from)
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(TrainError::Io { path: dir, source }),
        };
        names.sort();
        let mut out = Vec::new();
        for n in names {
            if let Some(d) = self.get(&n)?
                && model.is_none_or(|m| d.candidate.model == m)
            {
                out.push(d);
            }
        }
        Ok(out)
    }
}
