//! The measured `auto` choice's cache (`runtime.ep_choice_cache`) on the real engine with the
//! OpenVINO plugin (`make setup`): unchanged inputs take every measurement from the cache (not
//! run again: the numbers are the first start's, bit for bit), a model folder moved elsewhere
//! too (the key is the model's digest, not its path), while other provider options or a model
//! with another digest are measured again. The hardware part of the key is unit-tested in
//! `provider/choice_tests.rs` (this machine's inventory cannot change under a test).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_engine::metrics::Metrics;
use tandem_engine::provider::Measure;
use tandem_engine::settings::EngineSettings;
use tandem_engine::{Engine, Input};
use tandem_shared::provider::ExecutionProvider;

const MODEL: &str = "vision-fashion";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn settings(models: &Path, cache: &Path) -> EngineSettings {
    let mut s = EngineSettings {
        base_dir: repo(),
        ..Default::default()
    };
    s.models.dir = models.to_path_buf();
    s.models.enabled = vec![MODEL.into()];
    s.models.variant = "edge".into();
    s.runtime.execution_providers = vec!["auto".into()];
    s.runtime.ep_choice_cache = cache.display().to_string();
    s.runtime.intra_op_threads = 2;
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    s
}

/// Starts the engine and returns what it measured (checking that it serves).
fn measured(s: &EngineSettings) -> Vec<Measure> {
    let (_, env) = tandem_engine::runtime::init(s).expect("ONNX Runtime loads (run `make setup`)");
    let e = Engine::start(s, &env, Arc::new(Metrics::default())).expect("engine starts");
    let h = e.model(MODEL).expect("loaded");
    assert!(h.ep_auto);
    let sample =
        std::fs::read(repo().join("models").join(MODEL).join("samples/0_9.png")).expect("sample");
    e.infer_blocking(MODEL, Input::Images(vec![sample.into()]))
        .expect("it serves");
    h.ep_measured.clone()
}

fn all_cached(m: &[Measure]) -> bool {
    m.iter().all(|m| m.cached)
}

fn none_cached(m: &[Measure]) -> bool {
    m.iter().all(|m| !m.cached)
}

/// The measurement without its `cached` flag.
fn numbers(m: &[Measure]) -> Vec<Measure> {
    m.iter()
        .map(|m| Measure {
            cached: false,
            ..m.clone()
        })
        .collect()
}

/// `MODEL`'s files the engine reads for the edge variant, copied to `to/MODEL`.
fn copy_model(to: &Path) -> PathBuf {
    let from = repo().join("models").join(MODEL);
    let dir = to.join(MODEL);
    for rel in [
        "manifest.json",
        "edge.onnx",
        "labels.txt",
        "testdata/reference.json",
    ]
    .into_iter()
    .map(PathBuf::from)
    .chain((0..5).map(|i| PathBuf::from(format!("testdata/ref/edge-{i}-input.bin"))))
    {
        let dest = dir.join(&rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from.join(&rel), &dest).expect("copy");
    }
    dir
}

/// A new version of the same network: the ONNX file with a `doc_string` appended (protobuf
/// field 6 of ModelProto), so another digest, and the manifest's sha256 updated.
fn new_digest(dir: &Path) {
    let onnx = dir.join("edge.onnx");
    let mut bytes = std::fs::read(&onnx).expect("onnx");
    let doc = b"rebuilt";
    bytes.extend_from_slice(&[0x32, doc.len() as u8]);
    bytes.extend_from_slice(doc);
    std::fs::write(&onnx, &bytes).expect("write onnx");
    let sha = tandem_engine::model::sha256_file(&onnx).expect("sha256");
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("json");
    m["files"]["edge.onnx"] = sha.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("manifest");
}

#[test]
fn the_choice_cache_is_hit_on_unchanged_inputs_and_missed_on_a_new_digest_or_options() {
    assert!(
        repo()
            .join(".ort/ep/openvino/libonnxruntime_providers_openvino_plugin.so")
            .is_file(),
        "the OpenVINO plugin is missing: run `make setup`"
    );
    if !tandem_engine::provider::plugins::openvino_offers_this_cpu() {
        // The pass-over on such a CPU is checked by execution_providers.rs.
        eprintln!("this CPU is not Intel's: OpenVINO offers no device, the cache test needs it");
        return;
    }
    let guard = tempfile::Builder::new()
        .prefix("tandem-ep-cache-")
        .tempdir()
        .expect("tmp");
    let tmp = guard.path();
    let cache = tmp.join("state/ep-choice.json");
    let s = settings(&repo().join("models"), &cache);

    let first = measured(&s);
    assert!(none_cached(&first), "{first:?}");
    let usable: Vec<_> = first.iter().filter(|m| m.accurate).map(|m| m.ep).collect();
    assert!(
        usable.contains(&ExecutionProvider::Openvino) && usable.contains(&ExecutionProvider::Cpu),
        "{first:?}"
    );
    assert!(
        cache.is_file(),
        "the measurements are written to {}",
        cache.display()
    );

    // Unchanged: every measurement from the cache, none run again.
    let again = measured(&s);
    assert!(all_cached(&again), "{again:?}");
    assert_eq!(numbers(&again), numbers(&first), "re-measured");

    // The same model in another folder: same digest, same key.
    let moved = copy_model(&tmp.join("models"));
    let s_moved = settings(&tmp.join("models"), &cache);
    let from_copy = measured(&s_moved);
    assert!(all_cached(&from_copy), "{from_copy:?}");

    // Other provider options: measured again (every provider: the key holds them all).
    let mut s_opts = s.clone();
    s_opts.runtime.ep.cuda.device_id = 1;
    let opts = measured(&s_opts);
    assert!(none_cached(&opts), "{opts:?}");
    assert_ne!(numbers(&opts), numbers(&first));

    // A model with another digest: measured again.
    new_digest(&moved);
    let rebuilt = measured(&s_moved);
    assert!(none_cached(&rebuilt), "{rebuilt:?}");
    // ... and from then on cached under its own key, as the first one still is.
    assert!(all_cached(&measured(&s_moved)));
    assert!(all_cached(&measured(&s)));
}
