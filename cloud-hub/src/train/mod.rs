//! Retraining a model's edge classifier head from the fleet's feedback (the learning loop's
//! training step, flow 8 in ARCHITECTURE.md): the training split's examples, labelled by
//! their correction else by the cloud model as teacher; their features computed by the
//! serving edge model; a softmax-regression head fitted in plain Rust; the serving graph with
//! that head exported as a new version and packed as a bundle with self-tests.
//!
//! # Layout
//! - [`wire`]: the protobuf wire format, as far as editing an ONNX file needs it.
//! - [`graph`]: the head of an ONNX graph: read, exposed as an output, replaced.
//! - [`head`]: the linear head and its fit (pure).
//! - [`cnn`]: a small CNN, its gradients and (`cnn_fit`) its training (pure); [`cnn_graph`]:
//!   an ONNX graph as one and back.
//! - [`net`]: whole-net training of an edge graph `cnn_graph` reads (else the head alone).
//! - [`pull`]: the head's L2 pull chosen on held-out folds (pure).
//! - [`replay`]: a share of the original training data mixed into a fit (pure).
//! - [`features`]: the head's features of a set, computed by the real engine.
//! - [`export`]: the fitted head as a bundle, checked against the engine.
//! - [`gate`]: the promotion rule over evaluation reports (pure).
//! - [`service`]: a turn: train, evaluate, gate, sign and roll out; decisions kept.
//! - [`jobs`]: training turns as jobs, a bounded table (pure).
//! - [`http`]: `/v1/train`; [`cli`]: `tandem-hub train`; [`config`]: the `[train]` section.

pub mod cli;
pub mod cnn;
pub mod cnn_fit;
pub mod cnn_graph;
pub mod config;
pub mod export;
pub mod features;
pub mod gate;
pub mod graph;
pub mod head;
pub mod http;
pub mod jobs;
pub mod net;
pub mod pull;
pub mod replay;
pub mod service;
pub mod wire;

pub use config::{Promotion, TrainConfig};

use crate::eval::dataset::{LabelledSet, Payload};
use features::ModelFolder;
use head::{FitOptions, FitStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tandem_engine::settings::EngineSettings;
use tandem_shared::bundle::ModelVersion;

/// Why training, export or a gate decision failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The request names something that cannot be trained.
    #[error("{0}")]
    Invalid(String),
    /// Too few labelled examples to train on.
    #[error("{have} labelled training examples, fewer than the {need} needed")]
    TooFew {
        /// Examples found.
        have: usize,
        /// Examples needed (`train.min_examples`).
        need: usize,
    },
    /// The ONNX file cannot be read or rewritten.
    #[error("onnx: {0}")]
    Onnx(String),
    /// The engine did not start or refused an input.
    #[error("engine: {0}")]
    Engine(String),
    /// Packing or checking the exported model failed.
    #[error("export: {0}")]
    Export(String),
    /// A file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// A bundle folder.
    #[error(transparent)]
    Folder(#[from] tandem_engine::bundle::FolderError),
    /// The feedback store.
    #[error(transparent)]
    Feedback(#[from] crate::feedback::FeedbackError),
    /// The labelled set.
    #[error(transparent)]
    Dataset(#[from] crate::eval::dataset::DatasetError),
    /// Evaluating the candidate or the serving version failed.
    #[error("evaluation: {0}")]
    Eval(String),
    /// No such model or decision.
    #[error("{0}")]
    NotFound(String),
    /// The decision's state does not allow the step.
    #[error("{0}")]
    Phase(String),
    /// Signing into the registry or starting the rollout failed.
    #[error("promotion: {0}")]
    Promote(String),
    /// A training job's task stopped before the turn ended.
    #[error("the training task stopped: {0}")]
    Aborted(String),
}

/// A trained, exported candidate version (kept as `candidate.json` beside its bundle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// `<created_ms>-<model>-<version>`.
    pub id: String,
    /// The model.
    pub model: String,
    /// The version it was trained from (the serving one).
    pub base_version: String,
    /// Its own version.
    pub version: String,
    /// When it was made, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The training set's name (`feedback:train`, or the caller's).
    pub set: String,
    /// Training examples by label source (`correction`, `teacher`, `dataset`, `replay`).
    pub label_sources: BTreeMap<String, u64>,
    /// What was trained: `net` (every layer) or `head` (the classifier head alone).
    #[serde(default = "head_scope")]
    pub scope: String,
    /// The tensor the head reads, and its width.
    pub feature: String,
    /// Feature width.
    pub dim: usize,
    /// The fit.
    pub fit: FitStats,
    /// The head's L2 pull and the held-out accuracies it was chosen on (`None`: the whole net
    /// was trained).
    #[serde(default)]
    pub pull: Option<pull::PullChoice>,
    /// Largest |exported model − fitted head| on the checked inputs.
    pub export_max_abs_diff: f32,
    /// The packed (unsigned) bundle folder.
    pub bundle: PathBuf,
}

/// Trains candidates from a base model folder.
#[derive(Debug, Clone)]
pub struct Trainer {
    /// The engine settings models run with (runtime, providers, limits).
    pub settings: EngineSettings,
    /// `[train]`.
    pub cfg: TrainConfig,
    /// `train.dir`, resolved.
    pub dir: PathBuf,
}

/// Inputs checked through the exported model.
const EXPORT_CHECKS: usize = 32;

fn head_scope() -> String {
    "head".into()
}

fn now_ms() -> u64 {
    crate::fleet::link::now_ms()
}

/// The next free version after `base`: its last number plus one (more while `taken`).
pub fn next_version(base: &str, taken: impl Fn(&str) -> bool) -> Result<String, TrainError> {
    if ModelVersion::parse(base).is_none() {
        return Err(TrainError::Invalid(format!(
            "version `{base}` is not dotted numbers"
        )));
    }
    let mut parts: Vec<u64> = base.split('.').filter_map(|p| p.parse().ok()).collect();
    loop {
        if let Some(last) = parts.last_mut() {
            *last += 1;
        }
        let v = parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
        if !taken(&v) {
            return Ok(v);
        }
    }
}

impl Trainer {
    /// The candidates' folder.
    pub fn candidates_dir(&self) -> PathBuf {
        self.dir.join("candidates")
    }

    /// Trains a new edge head for the model in `base_dir` on `set` (its labels index the
    /// model's classes), exports it as the next version not `taken`, packs it and records it.
    pub fn train(
        &self,
        base_dir: &Path,
        set: &LabelledSet,
        taken: impl Fn(&str) -> bool,
    ) -> Result<Candidate, TrainError> {
        let base = features::read_folder(base_dir)?;
        let model = base.manifest["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let base_version = base.manifest["version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let head = graph::head(&base.onnx)?;
        if set.labels.len() != head.classes {
            return Err(TrainError::Invalid(format!(
                "the set has {} classes, the head {}",
                set.labels.len(),
                head.classes
            )));
        }
        let items: Vec<_> = set.items.iter().take(self.cfg.max_examples).collect();
        if items.len() < self.cfg.min_examples {
            return Err(TrainError::TooFew {
                have: items.len(),
                need: self.cfg.min_examples,
            });
        }
        let created_ms = now_ms();
        let cands = self.candidates_dir();
        let version = next_version(&base_version, |v| {
            taken(v)
                || std::fs::read_dir(&cands)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .ends_with(&format!("-{model}-{v}"))
                    })
        })?;
        let id = format!("{created_ms:013}-{model}-{version}");
        let work = self.dir.join("work").join(&id);
        let result = self.train_into(&base, &head, &items, &version, &work, &cands.join(&id));
        let _ = std::fs::remove_dir_all(&work);
        let (fit, exported, scope, pull) = result?;
        let mut label_sources = BTreeMap::new();
        for i in &items {
            *label_sources
                .entry(i.source.as_str().to_string())
                .or_insert(0) += 1;
        }
        let c = Candidate {
            id,
            model,
            base_version,
            version,
            created_ms,
            set: set.name.clone(),
            label_sources,
            scope: scope.into(),
            feature: head.feature.clone(),
            dim: head.dim,
            fit,
            pull,
            export_max_abs_diff: exported.max_abs_diff,
            bundle: exported.bundle,
        };
        let json = serde_json::to_vec_pretty(&c).map_err(|e| TrainError::Invalid(e.to_string()))?;
        tandem_engine::bundle::write_synced(&cands.join(&c.id).join("candidate.json"), &json)?;
        tracing::info!(id = %c.id, model = %c.model, version = %c.version, examples = c.fit.examples, train_accuracy = c.fit.train_accuracy_after, "candidate trained and packed");
        Ok(c)
    }

    fn train_into(
        &self,
        base: &ModelFolder,
        head: &graph::Head,
        items: &[&crate::eval::dataset::Item],
        version: &str,
        work: &Path,
        out: &Path,
    ) -> Result<
        (
            FitStats,
            export::Exported,
            &'static str,
            Option<pull::PullChoice>,
        ),
        TrainError,
    > {
        let inputs: Vec<Payload> = items.iter().map(|i| i.input.clone()).collect();
        if self.cfg.whole_net {
            match net::read(base) {
                Ok(cnn) => {
                    let ys: Vec<usize> = items.iter().map(|i| i.truth).collect();
                    let replayed: Vec<bool> = items
                        .iter()
                        .map(|i| i.source.as_str() == "replay")
                        .collect();
                    let (stats, exported) = net::train_and_export(
                        &self.settings,
                        &self.cfg,
                        base,
                        cnn,
                        &inputs,
                        &ys,
                        &replayed,
                        version,
                        EXPORT_CHECKS,
                        work,
                        out,
                    )?;
                    return Ok((stats, exported, "net", None));
                }
                Err(e) => {
                    tracing::info!(error = %e, "not a network the whole-net trainer reads: training the head")
                }
            }
        }
        let xs = features::extract(&self.settings, base, head, &inputs, work)?;
        let ys: Vec<usize> = items.iter().map(|i| i.truth).collect();
        let start = head.linear();
        let keys: Vec<u64> = inputs.iter().map(pull::key).collect();
        let cfg = &self.cfg;
        let t0 = std::time::Instant::now();
        let mut choice = pull::choose(
            &start,
            &xs,
            &ys,
            &keys,
            &cfg.l2_grid,
            cfg.l2_folds,
            cfg.l2_slack,
            cfg.max_steps,
            cfg.l2,
        )?;
        choice.grid_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(l2 = choice.l2, scores = ?choice.scores, grid_ms = choice.grid_ms, "head pull chosen on held-out folds");
        let opts = FitOptions {
            l2: choice.l2,
            max_steps: cfg.max_steps,
        };
        let (fitted, stats) = head::fit(&start, &xs, &ys, &opts)?;
        let check: Vec<(Payload, Vec<f32>)> =
            inputs.into_iter().zip(xs).take(EXPORT_CHECKS).collect();
        let exported = export::export(
            &self.settings,
            base,
            head,
            &fitted,
            version,
            &check,
            work,
            out,
        )?;
        Ok((stats, exported, "head", Some(choice)))
    }
}
