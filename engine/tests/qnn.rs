//! The QNN plugin EP for real: `onnxruntime-qnn`'s provider library, provisioned flat with its
//! bundled libc++ by `scripts/provision-ep.sh qnn` into `.ort/ep/qnn/`, runs here on x86_64
//! through QNN's HTP (Hexagon NPU) simulator. It serves a shipped FP32 model with the CPU
//! EP's outputs (batch fixed at 1, no CPU fallback); the accuracy gate refuses the INT8 model
//! where the HTP's integer arithmetic drifts; a model QNN cannot take whole fails to build
//! (it never runs on the CPU while reported as `qnn`); and QNN is skipped, with the reason,
//! unless `engine.max_rows_per_run` is 1.

use bytes::Bytes;
use tandem_engine::settings::EngineSettings;
use tandem_engine::{Engine, Input};
use tandem_shared::provider::ExecutionProvider;

mod common;
use common::{max_abs_diff, repo, top1, try_start as start};

/// `model`/`variant` on `eps`, one row per run (QNN's condition), the QNN plugin listed.
fn settings(model: &str, variant: &str, eps: &[&str]) -> EngineSettings {
    let mut s = common::settings(model, variant, eps);
    let qnn = common::plugin(".ort/ep/qnn/libonnxruntime_providers_qnn.so", "qnn");
    s.runtime.ep_plugins = vec![qnn.display().to_string()];
    s.engine.max_rows_per_run = 1;
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    s
}

/// Every sample image of vision-fashion.
fn samples() -> Vec<Bytes> {
    common::sample_files("vision-fashion")
        .iter()
        .map(|f| Bytes::from(std::fs::read(f).expect("sample")))
        .collect()
}

/// The logits of one sample, and the provider that ran it.
fn logits(e: &Engine, img: &Bytes) -> (Vec<f32>, ExecutionProvider) {
    common::first_output(e, "vision-fashion", Input::Images(vec![img.clone()]))
}

/// `model` of `e` is served by the CPU with QNN passed over first: why it was.
fn qnn_passed_over(e: &Engine, model: &str) -> String {
    let h = e.model(model).expect("loaded");
    assert_eq!(h.ep, ExecutionProvider::Cpu);
    let (ep, why) = &h.skipped_eps[0];
    assert_eq!(*ep, ExecutionProvider::Qnn);
    why.clone()
}

/// vision-fashion's FP32 model on QNN alone (no CPU in the list, no CPU fallback): it passes
/// the gate and every sample's logits equal the CPU EP's within the tolerance, same class.
#[test]
fn qnn_serves_the_fp32_model_with_the_cpu_eps_outputs() {
    let qnn = start(&settings("vision-fashion", "cloud", &["qnn"])).expect("serves on QNN");
    let h = qnn.model("vision-fashion").expect("loaded");
    assert_eq!(h.ep, ExecutionProvider::Qnn, "{:?}", h.skipped_eps);
    let tol = 0.01; // runtime.accuracy_max_abs_diff; the manifest sets none for this variant
    let gate = h.ep_measured[0].max_abs_diff.expect("measured");
    eprintln!("vision-fashion cloud: QNN (HTP simulator) vs the reference {gate:.2e}");
    assert!(gate <= tol, "{gate}");
    let cpu = start(&settings("vision-fashion", "cloud", &["cpu"])).expect("CPU");
    let imgs = samples();
    assert!(imgs.len() >= 4, "{} samples", imgs.len());
    for img in &imgs {
        let (got, ep) = logits(&qnn, img);
        let (want, _) = logits(&cpu, img);
        assert_eq!(ep, ExecutionProvider::Qnn);
        assert_eq!(got.len(), want.len());
        let worst = f64::from(max_abs_diff(&got, &want));
        assert!(worst <= tol, "QNN vs CPU {worst}");
        assert_eq!(top1(&got), top1(&want));
    }
}

/// vision-fashion's INT8 model: the HTP's integer arithmetic drifts past the tolerance (0.01),
/// so the gate refuses QNN with the measured difference and the CPU serves.
#[test]
fn the_gate_refuses_qnn_where_the_int8_model_drifts() {
    let e = start(&settings("vision-fashion", "edge", &["qnn", "cpu"])).expect("starts");
    let why = qnn_passed_over(&e, "vision-fashion");
    assert!(
        why.contains("outputs differ from the reference by"),
        "{why}"
    );
    let h = e.model("vision-fashion").expect("loaded");
    let diff = h.ep_measured[0].max_abs_diff.expect("QNN ran the cases");
    eprintln!("vision-fashion edge: QNN vs the reference {diff:.3}");
    assert!(diff > 0.01, "{diff}");
}

/// text-sentiment's sequence dimension stays dynamic: QNN cannot take the model whole, and
/// with the CPU fallback off the build fails (reported), instead of running on the CPU.
#[test]
fn a_model_qnn_cannot_take_whole_fails_instead_of_running_on_the_cpu() {
    let e = start(&settings("text-sentiment", "edge", &["qnn", "cpu"])).expect("starts");
    let why = qnn_passed_over(&e, "text-sentiment");
    assert!(why.contains("the CPU fallback is off"), "{why}");
    let Err(err) = start(&settings("text-sentiment", "edge", &["qnn"])) else {
        panic!("QNN alone served text-sentiment");
    };
    assert!(err.contains("qnn: QNN cannot run the whole model"), "{err}");
}

/// With more than one row per run QNN is skipped, the setting named, before any session.
#[test]
fn qnn_is_skipped_unless_runs_carry_one_row() {
    let mut s = settings("vision-fashion", "cloud", &["qnn", "cpu"]);
    s.engine.max_rows_per_run = 16;
    let e = start(&s).expect("starts");
    let why = qnn_passed_over(&e, "vision-fashion");
    let h = e.model("vision-fashion").expect("loaded");
    assert_eq!(h.skipped_eps.len(), 1, "{:?}", h.skipped_eps);
    assert!(why.contains("engine.max_rows_per_run = 1"), "{why}");
}

/// `scripts/provision-ep.sh qnn` into a fresh folder: the wheel's bundled libraries
/// (`onnxruntime_qnn.libs/`: libc++, libc++abi, libunwind) lie flat beside the provider
/// library, where its backends' `$ORIGIN` run path finds them; a second run leaves it alone.
#[test]
fn provisioning_puts_the_bundled_libraries_beside_the_provider_library() {
    let tmp = tempfile::Builder::new()
        .prefix("tandem-qnn-layout-")
        .tempdir()
        .expect("tmp");
    let root = tmp.path().join("ort");
    let provision = || {
        let out = std::process::Command::new(repo().join("scripts/provision-ep.sh"))
            .arg("qnn")
            .env("ORT_DIR", &root)
            .output()
            .expect("provision-ep.sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let first = provision();
    assert!(first.contains("unpacking onnxruntime-qnn"), "{first}");
    let dir = root.join("ep/qnn");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("ep/qnn")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .collect();
    for want in [
        "libonnxruntime_providers_qnn.so",
        "libQnnHtp.so",
        "libc++-",
        "libc++abi-",
        "libunwind-",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} not in {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".libs") || n.ends_with(".py")),
        "{names:?}"
    );
    let second = provision();
    assert!(!second.contains("unpacking"), "{second}");
    tmp.close().expect("clean up");
}
