//! A fitted head as a new edge version: the serving graph with its head replaced
//! ([`super::graph::replace`]), written as a model folder (same inputs, outputs and
//! preprocessing, a new version), packed as a bundle whose self-tests are recorded by the
//! engine on the new graph (`registry::pack`), then checked: the bundle's model, run by the
//! engine, must give the fitted head's answers on sample inputs. [`export_graph`] does the same
//! for any new graph (the whole-net trainer's).

use super::TrainError;
use super::features::{self, ModelFolder};
use super::graph::{self, Head};
use super::head::LinearHead;
use crate::eval::dataset::Payload;
use crate::registry::pack::{PackOptions, pack};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tandem_engine::settings::EngineSettings;

/// Largest difference allowed between the exported model's output and the fitted head's (the
/// graph computes the same FP32 product; only summation order differs).
pub const MAX_EXPORT_DIFF: f32 = 1e-3;

/// An exported candidate.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The packed (unsigned) bundle folder, named as the model.
    pub bundle: PathBuf,
    /// Largest |exported − fitted| over the checked outputs.
    pub max_abs_diff: f32,
}

/// Softmax in place.
fn softmax(v: &mut [f32]) {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The self-test cases of the base folder as `testdata/expected.json` cases (from its own
/// `testdata/expected.json`, or a registry bundle's `selftests`), and the input files they name.
fn base_cases(base: &ModelFolder) -> Result<(Vec<Value>, Vec<String>), TrainError> {
    let expected = base.dir.join("testdata/expected.json");
    let cases: Vec<Value> = if expected.is_file() {
        let doc: Value =
            serde_json::from_slice(&std::fs::read(&expected).map_err(|source| TrainError::Io {
                path: expected.clone(),
                source,
            })?)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", expected.display())))?;
        doc["cases"].as_array().cloned().unwrap_or_default()
    } else {
        let p = base.dir.join(tandem_shared::bundle::BUNDLE_FILE);
        let doc: Value =
            serde_json::from_slice(&std::fs::read(&p).map_err(|source| TrainError::Io {
                path: p.clone(),
                source,
            })?)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", p.display())))?;
        doc["selftests"].as_array().cloned().unwrap_or_default()
    };
    let cases: Vec<Value> = cases
        .into_iter()
        .filter(|c| c["variant"] == "edge")
        .collect();
    let inputs = cases
        .iter()
        .filter_map(|c| c["input"].as_str().map(String::from))
        .collect();
    Ok((cases, inputs))
}

/// Exports `fitted` as version `version` of the model in `base`: the bundle goes to
/// `out/<model>/`; `work` is scratch. `check` are inputs with their features, run through the
/// exported model and compared with the fitted head.
#[allow(clippy::too_many_arguments)]
pub fn export(
    settings: &EngineSettings,
    base: &ModelFolder,
    head: &Head,
    fitted: &LinearHead,
    version: &str,
    check: &[(Payload, Vec<f32>)],
    work: &Path,
    out: &Path,
) -> Result<Exported, TrainError> {
    let probs = base.manifest["variants"]["edge"]["outputs"][0]["kind"] == "probabilities";
    let onnx = graph::replace(&base.onnx, head, &fitted.weights, &fitted.bias, probs)?;
    let expected: Vec<(Payload, Vec<f32>)> = check
        .iter()
        .map(|(p, x)| {
            let mut want = fitted.logits(x);
            if probs {
                softmax(&mut want);
            }
            (p.clone(), want)
        })
        .collect();
    let graph = NewGraph {
        onnx: &onnx,
        output: &head.output,
        quantization: None,
    };
    export_graph(settings, base, &graph, version, &expected, work, out)
}

/// A new edge graph for [`export_graph`].
#[derive(Debug, Clone, Copy)]
pub struct NewGraph<'a> {
    /// The ONNX file.
    pub onnx: &'a [u8],
    /// The output its check compares.
    pub output: &'a str,
    /// The edge variant's `quantization` in the new manifest, when it changed.
    pub quantization: Option<&'a str>,
}

/// Exports `graph` as version `version` of the model in `base` (the bundle goes to
/// `out/<model>/`; `work` is scratch), then runs `expected`'s inputs through the packed
/// bundle: each must give its output row within [`MAX_EXPORT_DIFF`].
pub fn export_graph(
    settings: &EngineSettings,
    base: &ModelFolder,
    graph: &NewGraph<'_>,
    version: &str,
    expected: &[(Payload, Vec<f32>)],
    work: &Path,
    out: &Path,
) -> Result<Exported, TrainError> {
    let name = base.manifest["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let src = work.join("src").join(&name);
    if src.exists() {
        std::fs::remove_dir_all(&src).map_err(|source| TrainError::Io {
            path: src.clone(),
            source,
        })?;
    }
    features::copy_support_files(&base.manifest, &base.dir, &src)?;
    let (cases, inputs) = base_cases(base)?;
    for rel in &inputs {
        tandem_engine::bundle::copy_file(&base.dir, &src, rel)?;
    }
    let cases_json = serde_json::to_vec_pretty(&json!({ "cases": cases }))
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    tandem_engine::bundle::write_synced(&src.join("testdata/expected.json"), &cases_json)?;
    let mut manifest = base.manifest.clone();
    if let Some(q) = graph.quantization {
        manifest["variants"]["edge"]["quantization"] = json!(q);
    }
    features::write_model(&src, &manifest, version, graph.onnx, None)?;
    let bundle = out.join(&name);
    let opts = PackOptions {
        version: Some(version.to_string()),
        record: Some(settings.clone()),
        ..PackOptions::default()
    };
    pack(&src, &bundle, &opts).map_err(|e| TrainError::Export(e.to_string()))?;
    let _ = std::fs::remove_dir_all(work.join("src"));

    // The exported graph must give the trained model's answers.
    let engine = features::engine_on(settings, &bundle, &name)?;
    let inputs: Vec<Payload> = expected.iter().map(|(p, _)| p.clone()).collect();
    let got = features::output_rows(
        &engine,
        &name,
        &inputs,
        graph.output,
        settings.engine.max_rows_per_request,
    );
    engine.shutdown();
    let got = got?;
    let mut max_abs_diff = 0.0f32;
    for ((_, want), row) in expected.iter().zip(&got) {
        for (a, b) in want.iter().zip(row) {
            max_abs_diff = max_abs_diff.max((a - b).abs());
        }
    }
    if max_abs_diff > MAX_EXPORT_DIFF {
        return Err(TrainError::Export(format!(
            "the exported model differs from the trained one by {max_abs_diff} (> {MAX_EXPORT_DIFF})"
        )));
    }
    Ok(Exported {
        bundle,
        max_abs_diff,
    })
}
