//! What the engine's integration tests share: the checkout, a provisioned plugin library,
//! settings for one model on given providers, an engine started on them, a model's samples
//! and the outputs it gives them.

use std::path::PathBuf;
use std::sync::Arc;
use tandem_engine::metrics::Metrics;
use tandem_engine::settings::EngineSettings;
use tandem_engine::{Engine, Input};
use tandem_shared::oip::TensorData;
use tandem_shared::provider::ExecutionProvider;

/// The checkout's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A plugin library `make setup` provisions (`scripts/provision-ep.sh <ep>`), at `rel`.
pub fn plugin(rel: &str, ep: &str) -> PathBuf {
    let p = repo().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run `make setup` (scripts/provision-ep.sh {ep})",
        p.display()
    );
    p
}

/// `model`'s `variant` on `eps`, everything else at its default.
pub fn settings(model: &str, variant: &str, eps: &[&str]) -> EngineSettings {
    let mut s = EngineSettings {
        base_dir: repo(),
        ..Default::default()
    };
    s.models.enabled = vec![model.into()];
    s.models.variant = variant.into();
    s.runtime.execution_providers = eps.iter().map(|e| e.to_string()).collect();
    s
}

/// An engine on `s` (ONNX Runtime from `make setup`), or why it did not start.
pub fn try_start(s: &EngineSettings) -> Result<Engine, String> {
    let (_, env) = tandem_engine::runtime::init(s).expect("ONNX Runtime loads (run `make setup`)");
    Engine::start(s, &env, Arc::new(Metrics::default())).map_err(|e| e.to_string())
}

/// The model's sample files (`models/<model>/samples/`), sorted.
pub fn sample_files(model: &str) -> Vec<PathBuf> {
    let dir = repo().join("models").join(model).join("samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
}

/// The first output of one inference (F32), and the provider that ran it.
pub fn first_output(e: &Engine, model: &str, input: Input) -> (Vec<f32>, ExecutionProvider) {
    let inf = e.infer_blocking(model, input).expect("inference");
    match &inf.outputs[0].data {
        TensorData::F32(d) => (d.clone(), inf.ep),
        other => panic!("unexpected output {other:?}"),
    }
}

/// The largest |a - b| over the pairs of `a` and `b`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The index of the largest value.
pub fn top1(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// True where OpenVINO's plugin can serve on this machine's CPU (an Intel CPU). On another
/// vendor's CPU the plugin offers no device; there this checks what the engine must report
/// instead (the CPU serves vision-fashion, OpenVINO passed over with the plugin's reason) and
/// answers false: the caller's OpenVINO checks need an Intel CPU and are not run.
#[allow(dead_code)]
pub fn openvino_serves_here() -> bool {
    use tandem_engine::provider::plugins;
    if plugins::openvino_offers_this_cpu() {
        return true;
    }
    let e = try_start(&settings("vision-fashion", "edge", &["openvino", "cpu"]))
        .expect("engine starts");
    let h = e.model("vision-fashion").expect("loaded");
    assert_eq!(h.ep, ExecutionProvider::Cpu, "{:?}", h.skipped_eps);
    assert!(
        h.skipped_eps
            .iter()
            .any(|(ep, why)| *ep == ExecutionProvider::Openvino
                && why.contains("offers no cpu device on this machine")),
        "{:?}",
        h.skipped_eps
    );
    eprintln!(
        "CPU vendor {:?}: OpenVINO's plugin offers no device here and was passed over as it \
         must be; this test's OpenVINO checks need an Intel CPU and did not run",
        plugins::cpu_vendor()
    );
    false
}
