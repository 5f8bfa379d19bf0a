//! Routing-threshold calibration (the loop's third step, flow 8 in ARCHITECTURE.md): from the
//! fleet's feedback, fit a model's threshold for a group of devices on the **calibration**
//! split for a stated objective, report it on the **test** split (never on the data it was
//! fitted on), keep both with the calibration, and make the threshold the group's desired
//! state, which the [`push`] loop brings the devices to (they keep it across restarts and
//! report it back). An operator's pin wins over any calibration.
//!
//! # Layout
//! - [`fit`]: the threshold for an objective (pure).
//! - [`sample`]: samples from the feedback store and how they are weighted.
//! - [`truth`]: teacher-labelled samples judged by what the operators' corrections show.
//! - [`store`]: the [`store::CalibrationStore`] trait and its sled implementation.
//! - [`desired`]: which desired threshold a device should use.
//! - [`push`]: desired thresholds to devices over MQTT (`set_threshold` with its source).
//! - [`http`]: the routes; [`cli`]: `tandem-hub calibrate`; [`config`]: `[calibrate]`.

pub mod cli;
pub mod config;
pub mod desired;
pub mod fit;
pub mod http;
pub mod push;
pub mod sample;
pub mod store;
pub mod truth;

pub use config::CalibrateConfig;
pub use desired::Desired;

use crate::feedback::Split;
use crate::fleet::link::now_ms;
use fit::{Figures, Objective};
use sample::{Counts, Weights};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use store::CalibrationStore;
use tandem_engine::settings::EngineSettings;
use tandem_shared::manifest::{Manifest, Signal, VariantRole};
use tandem_shared::mqtt::ThresholdSource;

/// Labels of devices (`group = "cams"`).
pub type Labels = BTreeMap<String, String>;

/// Why a calibration was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// The request names something that cannot be calibrated.
    #[error("{0}")]
    Invalid(String),
    /// Too few samples in a split to fit or to report honestly.
    #[error(
        "too few samples in the {split} split: {have} (need {need}; left out: {left_out:?}): collect more feedback (shadow samples, hard examples) or lower calibrate.min_{which}_samples"
    )]
    TooFew {
        /// `calibration` or `test`.
        split: &'static str,
        /// `fit` or `test`.
        which: &'static str,
        /// Samples there.
        have: u64,
        /// Samples needed.
        need: u64,
        /// Examples left out, by why.
        left_out: BTreeMap<String, u64>,
    },
    /// The feedback store.
    #[error(transparent)]
    Feedback(#[from] crate::feedback::FeedbackError),
    /// The calibration store.
    #[error(transparent)]
    Store(#[from] store::CalibrationStoreError),
}

/// What to calibrate (the body of `POST /v1/calibrations`, the flags of `tandem-hub calibrate
/// run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRequest {
    /// The model (a folder of `models.dir`).
    pub model: String,
    /// Only feedback from, and only pushed to, devices with all these labels (hub-assigned
    /// over their own); empty: every device.
    #[serde(default)]
    pub labels: Labels,
    /// The objective (default `keep_accuracy` with `calibrate.keep_accuracy_factor`).
    #[serde(default)]
    pub objective: Option<Objective>,
    /// The signal (default: the edge variant's `threshold_signal`, else `max_prob`).
    #[serde(default)]
    pub signal: Option<Signal>,
    /// Push the threshold to the devices as desired state (default true).
    #[serde(default = "yes")]
    pub apply: bool,
    /// Only examples the edge answered with this version (default: every version); after a
    /// rollout, the new version's own answers (its confidence differs from the old one's).
    #[serde(default)]
    pub version: Option<String>,
}

fn yes() -> bool {
    true
}

/// One split's part of a calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    /// `calibration` (fitted on) or `test` (reported on).
    pub split: Split,
    /// Its samples.
    pub counts: Counts,
    /// The cascade at the fitted threshold.
    pub at_fitted: Figures,
    /// The cascade at the manifest's threshold, when the model has one.
    pub at_manifest: Option<Figures>,
    /// The shares of the corrected samples that judged the teacher-labelled ones, when
    /// there were enough ([`truth`]; `calibrate.min_corrected_disagreements`); absent: the
    /// teacher's labels taken as the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_check: Option<truth::TeacherCheck>,
    /// The cascade at the fitted threshold on the corrected samples alone (the truth, fewer
    /// inputs), when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_only: Option<Figures>,
}

/// A calibration and its reports (what the store keeps and the API shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Unique, ordered by creation (`<created_ms, 13 digits>-<model>`).
    pub id: String,
    /// The model.
    pub model: String,
    /// The edge version it was fitted for: the request's, else the one its manifest names on
    /// the hub.
    pub version: String,
    /// The devices it is for.
    pub labels: Labels,
    /// When, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The objective.
    pub objective: Objective,
    /// The signal.
    pub signal: Signal,
    /// The strata's weights used.
    pub weights: Weights,
    /// The fitted threshold.
    pub threshold: f32,
    /// The manifest's threshold.
    pub manifest_threshold: Option<f32>,
    /// Fitted on (the objective holds here by construction).
    pub fit: SplitReport,
    /// Reported on: inputs the fit never saw.
    pub test: SplitReport,
    /// Whether it became the devices' desired threshold.
    pub applied: bool,
}

/// Runs calibrations and keeps them.
#[derive(Debug)]
pub struct Calibrator {
    /// Where the models' manifests are (`models.dir`).
    pub settings: EngineSettings,
    /// `[calibrate]`.
    pub cfg: CalibrateConfig,
    /// Calibrations and desired thresholds.
    pub store: Arc<dyn CalibrationStore>,
    /// The feedback store.
    pub feedback: Arc<crate::feedback::Store>,
}

impl Calibrator {
    fn manifest(&self, model: &str) -> Result<Manifest, CalibrateError> {
        if tandem_shared::mqtt::args::check_model_name(model).is_err() {
            return Err(CalibrateError::Invalid(format!(
                "model `{model}` is not a model name"
            )));
        }
        let path = self
            .settings
            .resolve(&self.settings.models.dir)
            .join(model)
            .join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CalibrateError::Invalid(format!("no model `{model}` ({}: {e})", path.display()))
        })?;
        Manifest::from_json(&text)
            .map_err(|e| CalibrateError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Fits, reports and keeps a calibration (blocking: the feedback store); `devices` are the
    /// fleet's devices with their labels (hub-assigned over their own). With `apply`, the
    /// threshold becomes the desired state of the devices the labels select.
    pub fn run(
        &self,
        req: &CalibrationRequest,
        devices: &BTreeMap<String, Labels>,
    ) -> Result<Calibration, CalibrateError> {
        let manifest = self.manifest(&req.model)?;
        let edge = manifest.variants.get(&VariantRole::Edge);
        let signal = req
            .signal
            .or(edge.and_then(|v| v.threshold_signal))
            .unwrap_or(Signal::MaxProb);
        if signal == Signal::Entropy {
            return Err(CalibrateError::Invalid(
                "entropy thresholds cannot be fitted from feedback: examples carry the top answers, not the whole distribution (use max_prob or margin)".into(),
            ));
        }
        let objective = req.objective.unwrap_or(Objective::KeepAccuracy {
            factor: self.cfg.keep_accuracy_factor,
        });
        if let Some(p) = objective.problem() {
            return Err(CalibrateError::Invalid(p));
        }
        let weights = Weights {
            shadow: self.cfg.shadow_weight,
            hard: self.cfg.hard_weight,
        };
        let selected = |d: &str| {
            req.labels.is_empty()
                || devices
                    .get(d)
                    .is_some_and(|l| req.labels.iter().all(|(k, v)| l.get(k) == Some(v)))
        };
        let draw = |split| {
            sample::draw(
                &self.feedback,
                &req.model,
                split,
                signal,
                weights,
                req.version.as_deref(),
                &selected,
            )
        };
        let (fit_set, test_set) = (draw(Split::Calibration)?, draw(Split::Test)?);
        for (set, split, which, need) in [
            (&fit_set, "calibration", "fit", self.cfg.min_fit_samples),
            (&test_set, "test", "test", self.cfg.min_test_samples),
        ] {
            if set.counts.samples < need {
                return Err(CalibrateError::TooFew {
                    split,
                    which,
                    have: set.counts.samples,
                    need,
                    left_out: set.counts.left_out.clone(),
                });
            }
        }
        // Each split judged by its own corrections: the test split's figures owe nothing to
        // the calibration split.
        let min = self.cfg.min_corrected_disagreements;
        let (fit_samples, fit_check) = truth::resolve(&fit_set.judged, min);
        let (test_samples, test_check) = truth::resolve(&test_set.judged, min);
        let fitted = fit::fit(&fit_samples, objective, 1.0)
            .map_err(|e| CalibrateError::Invalid(e.to_string()))?;
        let manifest_threshold = edge.and_then(|v| v.threshold);
        let report = |set: &sample::Drawn,
                      samples: &[fit::Sample],
                      teacher_check,
                      split|
         -> Result<SplitReport, CalibrateError> {
            // Figures count inputs, not the weighted outcomes a teacher label stands for.
            let n = set.counts.samples;
            let at = |t| fit::figures(samples, t).map(|f| Figures { n, ..f });
            let corrected: Vec<fit::Sample> = set
                .judged
                .iter()
                .filter(|j| j.corrected)
                .map(|j| j.sample)
                .collect();
            Ok(SplitReport {
                split,
                counts: set.counts.clone(),
                at_fitted: at(fitted.threshold)
                    .ok_or_else(|| CalibrateError::Invalid("no samples".into()))?,
                at_manifest: manifest_threshold.and_then(at),
                teacher_check,
                corrected_only: fit::figures(&corrected, fitted.threshold),
            })
        };
        let created_ms = now_ms();
        let calibration = Calibration {
            id: format!("{created_ms:013}-{}", req.model),
            model: req.model.clone(),
            version: req
                .version
                .clone()
                .unwrap_or_else(|| manifest.version.clone()),
            labels: req.labels.clone(),
            created_ms,
            objective,
            signal,
            weights,
            threshold: fitted.threshold,
            manifest_threshold,
            fit: report(&fit_set, &fit_samples, fit_check, Split::Calibration)?,
            test: report(&test_set, &test_samples, test_check, Split::Test)?,
            applied: req.apply,
        };
        self.store.put(&calibration)?;
        if req.apply {
            self.store.set_desired(&Desired {
                model: calibration.model.clone(),
                labels: calibration.labels.clone(),
                threshold: calibration.threshold,
                signal,
                source: ThresholdSource::HubCalibrated,
                calibration: Some(calibration.id.clone()),
                set_ms: created_ms,
            })?;
        }
        tracing::info!(id = %calibration.id, model = %calibration.model, threshold = calibration.threshold, fit_n = calibration.fit.counts.samples, test_n = calibration.test.counts.samples, test_accuracy_ratio = calibration.test.at_fitted.accuracy_ratio, test_offload = calibration.test.at_fitted.offload, applied = req.apply, "calibration stored");
        Ok(calibration)
    }
}
