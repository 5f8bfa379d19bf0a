//! `tandem-bench eps` (make bench-eps): every shipped model variant on every execution provider
//! available here (the CPU EP, the plugins `make setup` provisioned, CUDA/TensorRT with the GPU
//! runtime): p50/p99 latency at batch 1, throughput at concurrency 8, the first session's build
//! time, and the largest difference from the CPU EP's reference outputs (whether it passes the
//! accuracy gate at the variant's tolerance: `runtime.accuracy_max_abs_diff`, or the manifest's
//! `ep_max_abs_diff`). Last line:
//! `eps: best=<ep> speedup_vs_cpu=X` for vision-imagenet's edge variant, among the providers that
//! pass the gate and run on real hardware.
//!
//! QNN is measured as it must be configured (`engine.max_rows_per_run = 1`; its sessions fix the
//! batch at 1 with the CPU fallback off), the other providers with the defaults. A model QNN
//! cannot take whole gets a row with the reason, and QNN stays on the list for the next model.
//! On x86_64 QNN is the onnxruntime-qnn wheel's HTP *simulator*: its rows are labelled
//! `qnn(htp-sim)`, their timings are no NPU's, and a simulator is never `best`.

use crate::procs;
use crate::stats::{Stats, summarise};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_engine::metrics::Metrics;
use tandem_engine::settings::EngineSettings;
use tandem_engine::{Engine, Input};
use tandem_shared::oip::{InputTensor, TensorData};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per measurement (batch-1 latency, then concurrency 8).
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Providers to try (unavailable ones are reported and skipped).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cpu,openvino,cuda,tensorrt,webgpu,qnn,tensorrt_rtx"
    )]
    eps: Vec<String>,
    /// Models to run (all shipped ones by default); the last line needs vision-imagenet.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
}

const VARIANTS: [(&str, &str); 9] = [
    ("vision-fashion", "edge"),
    ("vision-fashion", "cloud"),
    ("vision-imagenet", "edge"),
    ("vision-imagenet", "cloud"),
    ("text-sentiment", "edge"),
    ("detect-coco", "edge"),
    ("detect-coco", "cloud"),
    ("detect-face", "edge"),
    ("detect-face", "cloud"),
];

/// The model variant's first reference case as prepared tensors: the bench times the
/// providers, not image decoding.
fn input(repo: &std::path::Path, model: &str, variant: &str) -> anyhow::Result<Input> {
    let dir = repo.join("models").join(model);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("testdata/reference.json"))?)?;
    let case = doc["cases"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["variant"] == variant))
        .ok_or_else(|| anyhow::anyhow!("{model}: no {variant} reference case"))?;
    let mut tensors = Vec::new();
    for i in case["inputs"].as_array().into_iter().flatten() {
        let bytes = std::fs::read(dir.join(i["file"].as_str().unwrap_or_default()))?;
        let data = match i["dtype"].as_str() {
            Some("int64") => TensorData::I64(
                bytes
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            _ => TensorData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
                    .collect(),
            ),
        };
        tensors.push(InputTensor {
            name: i["name"].as_str().unwrap_or_default().to_string(),
            shape: serde_json::from_value(i["shape"].clone())?,
            data,
        });
    }
    Ok(Input::tensors(tensors))
}

struct Row {
    model: String,
    ep: String,
    /// A simulator on this machine (QNN's HTP on x86_64): no speed claim.
    simulated: bool,
    build_ms: f64,
    diff: f64,
    gate: bool,
    single: Stats,
    conc8_rps: f64,
}

fn measure(engine: &Arc<Engine>, model: &str, input: &Input, secs: u64) -> (Stats, f64) {
    let window = Duration::from_secs(secs);
    let mut lat = Vec::new();
    let mut errors = 0;
    let start = Instant::now();
    while start.elapsed() < window {
        let t = Instant::now();
        match engine.infer_blocking(model, input.clone()) {
            Ok(_) => lat.push(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    let single = summarise(lat, start.elapsed(), errors);
    let start = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0usize;
                    while start.elapsed() < window {
                        if engine.infer_blocking(model, input.clone()).is_ok() {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    (single, done as f64 / start.elapsed().as_secs_f64())
}

/// Runs the table.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let repo = procs::repo()?;
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    println!(
        "{:<24} {:<13} {:>9} {:>10} {:>6} {:>9} {:>9} {:>6} {:>10}",
        "model", "ep", "build_ms", "max_diff", "gate", "p50_us", "p99_us", "n", "c8_rps"
    );
    let mut rows = Vec::new();
    let mut unavailable = std::collections::BTreeSet::new();
    let selected = VARIANTS
        .into_iter()
        .filter(|(m, _)| a.models.is_empty() || a.models.iter().any(|x| x == m));
    for (model, variant) in selected {
        let input = input(&repo, model, variant)?;
        for ep in &a.eps {
            if unavailable.contains(ep) {
                continue;
            }
            let mut s = EngineSettings {
                base_dir: repo.clone(),
                ..Default::default()
            };
            s.models.enabled = vec![model.into()];
            s.models.variant = variant.into();
            s.runtime.execution_providers = vec![ep.clone()];
            let simulated = simulated(ep);
            let label = if simulated {
                format!("{ep}(htp-sim)")
            } else {
                ep.clone()
            };
            if ep == "qnn" {
                // QNN runs with the batch fixed at 1: it is skipped at any other setting.
                s.engine.max_rows_per_run = 1;
            }
            s.runtime.intra_op_threads = threads;
            s.engine.workers = 2;
            s.engine.queue_capacity = 64;
            // Measure every provider, also one the gate would refuse (reported in `gate`).
            let manifest = tandem_shared::manifest::Manifest::from_json(&std::fs::read_to_string(
                repo.join("models").join(model).join("manifest.json"),
            )?)?;
            let stated = variant
                .parse()
                .ok()
                .and_then(|r| manifest.variants.get(&r))
                .and_then(|v| v.ep_max_abs_diff);
            let gate_at = s.runtime.accuracy_tolerance(stated).0;
            s.runtime.accuracy_max_abs_diff = f64::MAX;
            let (_, env) = tandem_engine::runtime::init(&s)?;
            let engine = match Engine::start(&s, &env, Arc::new(Metrics::default())) {
                Ok(e) => Arc::new(e),
                Err(e) => {
                    let e = e.to_string();
                    let why = e
                        .split_once(&format!("{ep}: "))
                        .map_or(e.as_str(), |(_, w)| w);
                    if provider_missing(why) {
                        println!("{:<24} {label:<13} unavailable here: {why}", "(any)");
                        unavailable.insert(ep.clone());
                    } else {
                        let name = format!("{model}/{variant}");
                        println!("{name:<24} {label:<13} cannot run: {why}");
                    }
                    continue;
                }
            };
            let Some(h) = engine.model(model) else {
                continue;
            };
            let m = h.ep_measured.last().cloned();
            let diff = m.as_ref().and_then(|m| m.max_abs_diff).unwrap_or(f64::NAN);
            let build_ms = m.as_ref().map_or(f64::NAN, |m| m.build_ms);
            let (single, conc8_rps) = measure(&engine, model, &input, a.seconds);
            let row = Row {
                model: format!("{model}/{variant}"),
                ep: ep.clone(),
                simulated,
                build_ms,
                diff,
                gate: diff <= gate_at,
                single,
                conc8_rps,
            };
            println!(
                "{:<24} {:<13} {:>9.1} {:>10.2e} {:>6} {:>9.0} {:>9.0} {:>6} {:>10.1}",
                row.model,
                label,
                row.build_ms,
                row.diff,
                if row.gate { "pass" } else { "FAIL" },
                row.single.p50_us,
                row.single.p99_us,
                row.single.n,
                row.conc8_rps
            );
            rows.push(row);
        }
    }
    let imagenet: Vec<&Row> = rows
        .iter()
        .filter(|r| r.model == "vision-imagenet/edge")
        .collect();
    let cpu = imagenet
        .iter()
        .find(|r| r.ep == "cpu")
        .map(|r| r.single.p50_us)
        .ok_or_else(|| anyhow::anyhow!("vision-imagenet/edge did not run on the CPU EP"))?;
    if rows.iter().any(|r| r.simulated) {
        println!(
            "note: (htp-sim) rows ran on the onnxruntime-qnn wheel's HTP simulator on this {} CPU: \
             accuracy and what QNN takes are real, timings are no NPU's, and a simulator is never best",
            std::env::consts::ARCH
        );
    }
    let best = imagenet
        .iter()
        .filter(|r| r.gate && !r.simulated)
        .min_by(|a, b| a.single.p50_us.total_cmp(&b.single.p50_us))
        .ok_or_else(|| anyhow::anyhow!("no accurate provider for vision-imagenet/edge"))?;
    println!(
        "eps: best={} speedup_vs_cpu={:.2}",
        best.ep,
        cpu / best.single.p50_us
    );
    Ok(())
}

/// Whether `ep` runs on a simulator here: the QNN wheel's HTP backend off a Snapdragon (x86_64).
fn simulated(ep: &str) -> bool {
    ep == "qnn" && std::env::consts::ARCH == "x86_64"
}

/// Whether a start failure says the provider is missing on this machine (skip it for every
/// model), not that it cannot run this model (a row, and the next model tries it again).
fn provider_missing(why: &str) -> bool {
    ["plugin library", "not enabled in this build"]
        .iter()
        .any(|m| why.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_provider_is_told_from_a_model_it_cannot_run() {
        for missing in [
            "no qnn plugin library (provision it with `scripts/provision-ep.sh`, or list it in runtime.ep_plugins)",
            "CUDA execution provider is not enabled in this build.",
        ] {
            assert!(provider_missing(missing), "{missing}");
        }
        assert!(!provider_missing(
            "QNN cannot run the whole model with the batch dimension fixed at 1 (another dynamic dimension, or an operator it lacks), and the CPU fallback is off: ..."
        ));
        assert_eq!(
            simulated("qnn"),
            std::env::consts::ARCH == "x86_64",
            "QNN's HTP backend is the simulator off a Snapdragon"
        );
        assert!(!simulated("openvino"));
    }
}
