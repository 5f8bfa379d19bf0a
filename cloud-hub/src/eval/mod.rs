//! Evaluation of a model version on a labelled set (the learning loop's first step, flow 7 in
//! ARCHITECTURE.md): accuracy, per-class precision/recall/F1, macro-F1, expected calibration
//! error and the confusion matrix, overall, by slice (device, device label, time window, label
//! source) and on declared shifted variants of the set; run by the real engine; each report
//! kept with the version it judged (`tandem-hub eval`, `POST /v1/eval`, `GET /v1/eval/reports`).
//!
//! # Layout
//! - [`metrics`]: the figures (pure).
//! - [`dataset`]: shipped test sets; [`feedback`]: sets from the fleet's feedback.
//! - [`shift`]: declared image shifts (brightness, contrast, blur, noise, JPEG quality).
//! - [`run`]: the engine over a set and its shifts → [`report::Report`].
//! - [`store`]: the [`store::ReportStore`] trait and its sled implementation.
//! - [`http`]: the routes; [`cli`]: `tandem-hub eval`; [`config`]: `[eval]`.

pub mod cli;
pub mod config;
pub mod dataset;
pub mod feedback;
pub mod http;
pub mod metrics;
pub mod report;
pub mod run;
pub mod shift;
pub mod store;

pub use config::EvalConfig;

use crate::feedback::Split;
use report::Report;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use store::ReportStore;
use tandem_engine::settings::EngineSettings;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The request names something that cannot be evaluated.
    #[error("{0}")]
    Invalid(String),
    /// The labelled set.
    #[error(transparent)]
    Dataset(#[from] dataset::DatasetError),
    /// A shift.
    #[error(transparent)]
    Shift(#[from] shift::ShiftError),
    /// The feedback store.
    #[error(transparent)]
    Feedback(#[from] crate::feedback::FeedbackError),
    /// The engine did not start (ONNX Runtime, the model's files).
    #[error("engine: {0}")]
    Engine(String),
    /// A request to the engine failed.
    #[error("inference: {0}")]
    Inference(String),
    /// Nothing to judge.
    #[error("the set {0} has no labelled item")]
    EmptySet(String),
    /// The report store.
    #[error(transparent)]
    Store(#[from] store::ReportStoreError),
}

/// Which set to judge on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    /// The model's shipped test set.
    #[default]
    Shipped,
    /// The fleet's feedback (one split).
    Feedback,
}

/// What to evaluate (the body of `POST /v1/eval`, the flags of `tandem-hub eval`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    /// The model (a folder of `models.dir`).
    pub model: String,
    /// Its variant (default `edge`: the version the loop improves).
    #[serde(default = "edge")]
    pub variant: String,
    /// The set (default `shipped`).
    #[serde(default)]
    pub set: SetKind,
    /// The feedback split (default `test`).
    #[serde(default)]
    pub split: Option<Split>,
    /// Items at most (0 or absent: `eval.max_items`).
    #[serde(default)]
    pub limit: usize,
    /// Declared shifts (`blur:1.0`); absent: [`shift::DEFAULT_SHIFTS`] for images, none for
    /// text; `[]`: none.
    #[serde(default)]
    pub shifts: Option<Vec<String>>,
}

fn edge() -> String {
    "edge".into()
}

/// Runs evaluations and keeps their reports.
#[derive(Debug)]
pub struct Evaluator {
    /// The engine settings models load with (`models.dir`, runtime).
    pub settings: EngineSettings,
    /// `[eval]`.
    pub cfg: EvalConfig,
    /// Where reports go.
    pub reports: Arc<dyn ReportStore>,
    /// The feedback store, when this process holds it.
    pub feedback: Option<Arc<crate::feedback::Store>>,
}

impl Evaluator {
    /// Runs `req` (blocking: the engine, the files), stores and returns the report;
    /// `device_labels` name each device's labels for the device-label slices.
    pub fn run(
        &self,
        req: &EvalRequest,
        device_labels: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Report, EvalError> {
        let name_ok = !req.model.is_empty()
            && req
                .model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !req.model.starts_with('.');
        if !name_ok {
            return Err(EvalError::Invalid(format!(
                "model `{}` is not a model name",
                req.model
            )));
        }
        let model_dir = self
            .settings
            .resolve(&self.settings.models.dir)
            .join(&req.model);
        if !model_dir.join("manifest.json").is_file() {
            return Err(EvalError::Invalid(format!(
                "no model `{}` in {}",
                req.model,
                model_dir.display()
            )));
        }
        let limit = match req.limit {
            0 => self.cfg.max_items,
            n => n.min(self.cfg.max_items),
        };
        let set = match req.set {
            SetKind::Shipped => dataset::shipped(&model_dir, limit)?,
            SetKind::Feedback => {
                let store = self.feedback.as_ref().ok_or_else(|| {
                    EvalError::Invalid(
                        "the feedback store is held by the running hub: use POST /v1/eval".into(),
                    )
                })?;
                let (labels, _) = dataset::labels(&model_dir)?;
                let split = req.split.unwrap_or(Split::Test);
                feedback::from_feedback(store, &req.model, &labels, split, limit)?
            }
        };
        let images = matches!(
            set.items.first().map(|i| &i.input),
            Some(dataset::Payload::Image(_))
        );
        let shifts = match &req.shifts {
            Some(s) => s.clone(),
            None if images => shift::DEFAULT_SHIFTS.map(String::from).to_vec(),
            None => Vec::new(),
        };
        let shifts = shifts
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<shift::Shift>, _>>()?;
        if !images && let Some(s) = shifts.first() {
            return Err(shift::ShiftError::NotForText(s.to_string()).into());
        }
        if set.items.is_empty() {
            return Err(EvalError::EmptySet(set.name));
        }
        let engine = run::start_engine(&self.settings, &req.model, &req.variant)?;
        let plan = run::Plan {
            model: req.model.clone(),
            variant: req.variant.clone(),
            shifts,
            window_ms: self.cfg.window_ms,
            device_labels,
        };
        let rows = self.settings.engine.max_rows_per_request;
        let report = run::evaluate(&engine, &plan, &set, rows);
        engine.shutdown();
        let report = report?;
        self.reports.put(&report)?;
        tracing::info!(id = %report.id, model = %report.model, version = %report.version, variant = %report.variant, set = %report.set.name, n = report.overall.n, accuracy = report.overall.accuracy, "evaluation report stored");
        Ok(report)
    }
}
