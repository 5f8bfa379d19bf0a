//! Training the whole edge network rather than its head, when its graph is one
//! [`super::cnn_graph`] reads (vision-fashion's 24k-parameter CNN): the training inputs
//! pre-processed exactly as the engine does (its own decoder, resize and normalisation, from
//! the manifest), every layer trained from the serving weights ([`super::cnn`]), the network
//! written back as an FP32 graph with the same input and output, and exported and checked like
//! a head ([`super::export::export_graph`]).

use super::cnn::{Cnn, TrainOptions};
use super::cnn_fit::Target;
use super::export::{self, NewGraph};
use super::features::ModelFolder;
use super::head::FitStats;
use super::{TrainConfig, TrainError, cnn_graph};
use crate::eval::dataset::Payload;
use std::path::Path;
use tandem_engine::preprocess::image::{Limits, prepare_batch};
use tandem_engine::settings::EngineSettings;
use tandem_shared::manifest::{ImagePreprocess, Layout, Preprocess};

/// The edge variant's image pre-processing, when it has one in NCHW layout.
fn image_preprocess(base: &ModelFolder) -> Result<ImagePreprocess, TrainError> {
    let p: Preprocess =
        serde_json::from_value(base.manifest["variants"]["edge"]["preprocess"].clone())
            .map_err(|e| TrainError::Invalid(format!("the edge pre-processing: {e}")))?;
    match p {
        Preprocess::Image(i) if i.layout == Layout::NCHW => Ok(i),
        Preprocess::Image(_) => Err(TrainError::Invalid(
            "an NHWC image model: the whole-net trainer reads NCHW".into(),
        )),
        Preprocess::Text(_) => Err(TrainError::Invalid(
            "a text model: the whole-net trainer reads image networks".into(),
        )),
    }
}

/// The network of the edge graph in `base`, or why it is not one the trainer reads.
pub fn read(base: &ModelFolder) -> Result<Cnn, TrainError> {
    let p = image_preprocess(base)?;
    cnn_graph::read(
        &base.onnx,
        (p.color.channels(), p.height as usize, p.width as usize),
    )
}

/// `inputs` as the engine's input tensor (flat, one image after another).
pub fn tensors(
    settings: &EngineSettings,
    base: &ModelFolder,
    inputs: &[Payload],
) -> Result<Vec<f32>, TrainError> {
    let p = image_preprocess(base)?;
    let limits = Limits::from(&settings.image);
    let mut out = Vec::new();
    for chunk in inputs.chunks(256) {
        let images = chunk
            .iter()
            .map(|i| match i {
                Payload::Image(b) => Ok(b.as_ref()),
                Payload::Text(_) => Err(TrainError::Invalid(
                    "a text input for an image model".into(),
                )),
            })
            .collect::<Result<Vec<&[u8]>, _>>()?;
        let (_, data) =
            prepare_batch(&images, &p, &limits).map_err(|e| TrainError::Engine(e.to_string()))?;
        out.extend(data);
    }
    Ok(out)
}

/// Mean cross-entropy and accuracy of `net` on `x` with `labels`.
fn judge(net: &Cnn, x: &[f32], labels: &[usize]) -> Result<(f64, f64), TrainError> {
    let logits = net
        .logits(x)
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    let (mut loss, mut right) = (0.0f64, 0usize);
    for (l, y) in logits.iter().zip(labels) {
        let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = l.iter().map(|v| f64::from((v - m).exp())).sum();
        loss += sum.ln() - f64::from(l[*y] - m);
        let best = l
            .iter()
            .enumerate()
            .fold(0, |b, (i, v)| if *v > l[b] { i } else { b });
        right += usize::from(best == *y);
    }
    let n = labels.len().max(1) as f64;
    Ok((loss / n, right as f64 / n))
}

/// Trains every layer of `net` (read from `base`) on `inputs` with `labels` (those `replayed`
/// toward the serving network's own probabilities instead), exports it as
/// version `version` (bundle under `out`, scratch in `work`), checked on the first `checks`
/// inputs.
#[allow(clippy::too_many_arguments)]
pub fn train_and_export(
    settings: &EngineSettings,
    cfg: &TrainConfig,
    base: &ModelFolder,
    mut net: Cnn,
    inputs: &[Payload],
    labels: &[usize],
    replayed: &[bool],
    version: &str,
    checks: usize,
    work: &Path,
    out: &Path,
) -> Result<(FitStats, export::Exported), TrainError> {
    let x = tensors(settings, base, inputs)?;
    let (loss_before, acc_before) = judge(&net, &x, labels)?;
    let opts = TrainOptions {
        epochs: cfg.net_epochs,
        batch: cfg.net_batch,
        learning_rate: cfg.net_learning_rate as f32,
        weight_decay: 0.0,
        seed: inputs.len() as u64,
    };
    // Replayed original data is distilled from the serving network itself (its probabilities,
    // "learning without forgetting"), which keeps its answers there better than the labels.
    let per = x.len() / inputs.len().max(1);
    let mut targets = Vec::with_capacity(labels.len());
    for (i, (y, r)) in labels.iter().zip(replayed).enumerate() {
        targets.push(if *r {
            let mut l = net
                .logits(&x[i * per..(i + 1) * per])
                .map_err(|e| TrainError::Invalid(e.to_string()))?
                .remove(0);
            let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = l.iter().map(|v| (v - m).exp()).sum();
            l.iter_mut().for_each(|v| *v = (*v - m).exp() / sum);
            Target::Soft(l)
        } else {
            Target::Class(*y)
        });
    }
    let stats = net
        .train_towards(&x, &targets, &opts)
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    let (loss_after, acc_after) = judge(&net, &x, labels)?;
    let onnx = cnn_graph::write(&base.onnx, &net)?;
    let n = checks.min(inputs.len());
    let want = net
        .logits(&x[..n * per])
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    let expected: Vec<(Payload, Vec<f32>)> = inputs[..n].iter().cloned().zip(want).collect();
    let output = base.manifest["variants"]["edge"]["outputs"][0]["name"]
        .as_str()
        .unwrap_or("logits")
        .to_string();
    let graph = NewGraph {
        onnx: &onnx,
        output: &output,
        quantization: Some("none"),
    };
    let exported = export::export_graph(settings, base, &graph, version, &expected, work, out)?;
    tracing::info!(
        examples = labels.len(),
        parameters = net.parameters(),
        steps = stats.steps,
        first_epoch_loss = stats.first_epoch_loss,
        last_epoch_loss = stats.last_epoch_loss,
        "whole network trained"
    );
    Ok((
        FitStats {
            examples: labels.len(),
            steps: stats.steps,
            loss_before,
            loss_after,
            train_accuracy_before: acc_before,
            train_accuracy_after: acc_after,
        },
        exported,
    ))
}
