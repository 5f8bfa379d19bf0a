//! The measured `auto` choice: every candidate provider that loads the model and passes the
//! accuracy gate is timed on the reference cases (at most [`BUDGET_MS`] each), and the fastest
//! serves. Measurements are cached by model digest, provider, options and hardware: per
//! process, and in `runtime.ep_choice_cache` when set ([`super::choice_store`]), so a
//! re-stage or an agent restart skips them.

use super::{Built, NoProvider, Selector, plugins};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use tandem_shared::provider::{EpMeasurement, ExecutionProvider};

/// Candidates of `auto`, in the order of preference used on a tie or without reference cases.
pub const AUTO_ORDER: [ExecutionProvider; 7] = [
    ExecutionProvider::TensorrtRtx,
    ExecutionProvider::Tensorrt,
    ExecutionProvider::Cuda,
    ExecutionProvider::Openvino,
    ExecutionProvider::Qnn,
    ExecutionProvider::Webgpu,
    ExecutionProvider::Cpu,
];

/// Longest the timing of one provider on one model takes, in milliseconds.
pub const BUDGET_MS: u64 = 150;
/// Timed runs wanted per provider (fewer when the budget runs out).
const RUNS: usize = 20;

/// What was measured of one provider on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// The provider.
    pub ep: ExecutionProvider,
    /// Whether it loaded the model and reproduced the reference outputs.
    pub accurate: bool,
    /// Largest |output - reference| (absent when it did not run).
    pub max_abs_diff: Option<f64>,
    /// Median run time of one reference case, microseconds.
    pub median_us: Option<f64>,
    /// Time to build the session, milliseconds.
    pub build_ms: f64,
    /// Why it is not used (absent when it could be).
    pub error: Option<String>,
    /// Taken from the cache of an earlier measurement.
    #[serde(default)]
    pub cached: bool,
}

impl Measure {
    pub(super) fn new(ep: ExecutionProvider, build_ms: f64) -> Self {
        Self {
            ep,
            accurate: false,
            max_abs_diff: None,
            median_us: None,
            build_ms,
            error: None,
            cached: false,
        }
    }

    /// The contract form (status, telemetry, HTTP).
    pub fn to_contract(&self) -> EpMeasurement {
        EpMeasurement {
            ep: self.ep.to_string(),
            accurate: self.accurate,
            max_abs_diff: self.max_abs_diff,
            median_us: self.median_us,
            build_ms: self.build_ms,
            error: self.error.clone(),
            cached: self.cached,
        }
    }

    /// Why this provider was not used, if it was not usable.
    pub fn why_not(&self) -> Option<String> {
        self.error.clone()
    }
}

static CACHE: Mutex<Option<HashMap<String, Measure>>> = Mutex::new(None);

/// What a measurement depends on: the cache key is a hash of all of it, so a change in any
/// part (a new model, other options, other hardware, another runtime) measures again.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct KeyParts {
    /// The model file's sha256.
    digest: String,
    ep: ExecutionProvider,
    /// `[runtime.ep]`, as JSON.
    options: String,
    intra_threads: usize,
    /// `engine.max_rows_per_run` (QNN serves only at 1).
    rows_per_run: usize,
    tolerance: f64,
    /// Each plugin library: path and size.
    plugins: Vec<String>,
    /// The device inventory ([`plugins::inventory`]), as JSON.
    hardware: String,
    /// The ONNX Runtime library loaded.
    ort: String,
}

impl KeyParts {
    fn of(sel: &Selector<'_>, e: ExecutionProvider) -> Self {
        Self {
            digest: sel.digest.clone(),
            ep: e,
            options: serde_json::to_string(sel.params.options).unwrap_or_default(),
            intra_threads: sel.params.intra_threads,
            rows_per_run: sel.params.rows_per_run,
            tolerance: sel.tolerance.0,
            plugins: sel
                .params
                .plugins
                .iter()
                .map(|p| {
                    let len = std::fs::metadata(&p.path).map_or(0, |m| m.len());
                    format!("{}:{len}", p.path.display())
                })
                .collect(),
            hardware: serde_json::to_string(&plugins::inventory(sel.params.env))
                .unwrap_or_default(),
            ort: crate::runtime::loaded_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }

    fn key(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

fn key(sel: &Selector<'_>, e: ExecutionProvider) -> String {
    KeyParts::of(sel, e).key()
}

/// Measures every candidate (or takes the cached measurement) and builds the fastest accurate.
pub(super) fn measured(sel: &Selector<'_>) -> Result<Built, NoProvider> {
    let mut measured = Vec::new();
    let mut best: Option<(ExecutionProvider, f64, Option<ort::session::Session>)> = None;
    for &e in &sel.order {
        let k = key(sel, e);
        let store = sel
            .cache_file
            .as_deref()
            .map(super::choice_store::Store::new);
        let cached = CACHE
            .lock()
            .ok()
            .and_then(|c| c.as_ref().and_then(|c| c.get(&k).cloned()))
            .or_else(|| store.as_ref().and_then(|s| s.get(&k)));
        let (session, m) = match cached {
            Some(mut m) => {
                m.cached = true;
                (None, m)
            }
            None => {
                let (s, m) = sel.try_ep(e, RUNS, BUDGET_MS);
                if let Some(s) = &store {
                    s.put(&k, &m);
                }
                if let Ok(mut c) = CACHE.lock() {
                    c.get_or_insert_with(HashMap::new).insert(k, m.clone());
                }
                (s, m)
            }
        };
        if let (true, Some(t)) = (m.accurate, m.median_us)
            && best.as_ref().is_none_or(|(_, b, _)| t < *b)
        {
            best = Some((e, t, session));
        }
        measured.push(m);
    }
    let skipped: Vec<(ExecutionProvider, String)> = measured
        .iter()
        .filter_map(|m| m.why_not().map(|w| (m.ep, w)))
        .collect();
    let Some((ep, _, session)) = best else {
        return Err(NoProvider {
            path: sel.params.path.display().to_string(),
            reasons: skipped,
        });
    };
    let session = match session {
        Some(s) => s,
        // Chosen from the cache: build it, and check it again (one pass, no timing).
        None => match sel.try_ep(ep, 1, 0) {
            (Some(s), _) => s,
            (None, m) => {
                return Err(NoProvider {
                    path: sel.params.path.display().to_string(),
                    reasons: vec![(ep, m.why_not().unwrap_or_default())],
                });
            }
        },
    };
    let table: Vec<String> = measured
        .iter()
        .map(|m| match (m.accurate, m.median_us) {
            (true, Some(t)) => format!("{}={t:.0}us", m.ep),
            _ => format!("{}=unusable", m.ep),
        })
        .collect();
    tracing::info!(model = %sel.params.path.display(), ep = %ep, measured = %table.join(" "), "execution provider chosen by measurement");
    Ok(Built {
        session,
        ep,
        skipped,
        measured,
    })
}

#[cfg(test)]
#[path = "choice_tests.rs"]
mod tests;
