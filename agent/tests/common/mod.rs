//! Shared helpers for the agent's integration tests: paths, configs, engines, a daemon process.
#![allow(dead_code)]

pub mod bundles;
pub mod camera;
pub mod mqtt;
pub mod old_hub;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use tandem_agent::config::Config;
use tandem_agent::inference::Engine;
use tandem_agent::runtime;
use tandem_agent::telemetry::Metrics;
use tandem_shared::oip::{InputTensor, TensorData};
use tandem_tests::process::Logged;

pub use tandem_tests::{models_dir, read_json, repo};

/// A fresh folder `tandem-{name}-XXXXXX` under the system's temporary directory and its path,
/// removed when the guard drops (whether the test passed or panicked). Keep the guard alive for
/// as long as anything uses the folder: bind it before the daemon, store or hub that writes
/// there, so that it drops after them.
pub fn tmp_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let guard = tempfile::Builder::new()
        .prefix(&format!("tandem-{name}-"))
        .tempdir()
        .expect("temporary folder");
    let path = guard.path().to_path_buf();
    (guard, path)
}

/// A config over the repository's models.
pub fn config(models: &[&str], variant: &str, eps: &[&str]) -> Config {
    let mut cfg = Config {
        base_dir: repo(),
        ..Default::default()
    };
    cfg.models.dir = PathBuf::from("models");
    cfg.models.enabled = models.iter().map(|s| s.to_string()).collect();
    cfg.models.variant = variant.to_string();
    cfg.runtime.execution_providers = eps.iter().map(|s| s.to_string()).collect();
    cfg.runtime.intra_op_threads = 2;
    // Thresholds set by commands stay in memory: the config's folder is the checkout.
    cfg.policy.thresholds_file = PathBuf::new();
    cfg
}

pub fn engine(models: &[&str], variant: &str) -> Engine {
    engine_with(&config(models, variant, &["cpu"]))
}

pub fn engine_with(cfg: &Config) -> Engine {
    let settings = cfg.engine_settings();
    let (_, env) = runtime::init(&settings).expect("ONNX Runtime loads (run `make setup`)");
    Engine::start(&settings, &env, Arc::new(Metrics::default())).expect("engine starts")
}

/// Whether a model variant's file is present (optional variants may be absent).
pub fn variant_present(model: &str, variant: &str) -> bool {
    let m = read_json(&models_dir().join(model).join("manifest.json"));
    match m["variants"][variant]["file"].as_str() {
        Some(f) => {
            let present = models_dir().join(model).join(f).is_file();
            let optional = m["variants"][variant]["optional"]
                .as_bool()
                .unwrap_or(false);
            assert!(
                present || optional,
                "{model}/{f} is missing and not optional (`make setup` builds text-sentiment/cloud.onnx)"
            );
            if !present {
                eprintln!(
                    "note: {model} {variant} variant absent (optional; `make setup` or `make models` builds it)"
                );
            }
            present
        }
        None => false,
    }
}

/// A model's reference input tensor (`testdata/reference.json` `inputs[i]`: raw little-endian
/// float32 or int64 in `file`).
pub fn read_tensor(model: &str, spec: &serde_json::Value) -> InputTensor {
    let path = models_dir()
        .join(model)
        .join(spec["file"].as_str().expect("file"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape: Vec<i64> = spec["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|v| v.as_i64().expect("dim"))
        .collect();
    let data = match spec["dtype"].as_str().expect("dtype") {
        "float32" => TensorData::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "int64" => TensorData::I64(
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        other => panic!("dtype {other}"),
    };
    InputTensor {
        name: spec["name"].as_str().expect("name").to_string(),
        shape,
        data,
    }
}

/// The cases of a `testdata/*.json` document for one variant.
pub fn variant_cases<'a>(doc: &'a serde_json::Value, variant: &str) -> Vec<&'a serde_json::Value> {
    doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["variant"] == variant)
        .collect()
}

/// Runs a `reference.json` case's input tensors through the engine.
pub fn infer_reference_case(
    e: &Engine,
    model: &str,
    case: &serde_json::Value,
) -> tandem_agent::inference::Inference {
    let inputs = case["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|s| read_tensor(model, s))
        .collect();
    e.infer_blocking(model, tandem_agent::inference::Input::tensors(inputs))
        .expect("inference runs")
}

/// Names of the classification models (a manifest whose task is not `detection`).
pub fn model_names() -> Vec<String> {
    models_where(|task| task != "detection")
}

/// Names of the detection models in the repository.
pub fn detector_names() -> Vec<String> {
    models_where(|task| task == "detection")
}

fn models_where(keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(models_dir())
        .expect("models/ exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("manifest.json").is_file())
        .filter(|e| {
            keep(
                read_json(&e.path().join("manifest.json"))["task"]
                    .as_str()
                    .unwrap_or(""),
            )
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// A running `tandem-agent run` process and the address it serves.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts the binary with a config written to `dir/agent.toml`; waits for its listen line.
    pub fn start(dir: &Path, config_text: &str) -> Daemon {
        let path = dir.join("agent.toml");
        std::fs::write(&path, config_text).expect("write config");
        let (Logged { child, log }, addr) = Logged::spawn(
            Command::new(env!("CARGO_BIN_EXE_tandem-agent"))
                .args(["run", "--config"])
                .arg(&path)
                .env("RUST_LOG", "info,ort=warn"),
            std::time::Duration::from_secs(60),
            |line| {
                let i = line.find("listen=")?;
                Some(
                    line[i + 7..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                )
            },
        );
        let Some(addr) = addr else {
            panic!(
                "agent did not start; log: {:?}",
                log.lock().expect("log").clone()
            )
        };
        Daemon { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config file for a daemon on a free loopback port.
pub fn daemon_config(models: &[&str], variant: &str, extra: &str) -> String {
    let list: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[models]\ndir = \"{}\"\nenabled = [{}]\nvariant = \"{variant}\"\n{extra}\n",
        models_dir().display(),
        list.join(", ")
    )
}

/// The hub's engine on the cloud variant of vision-fashion.
pub fn hub_engine() -> Arc<tandem_engine::Engine> {
    let mut s = tandem_engine::settings::EngineSettings {
        base_dir: repo(),
        ..Default::default()
    };
    s.models.enabled = vec!["vision-fashion".into()];
    s.models.variant = "cloud".into();
    s.engine.max_batch = 8;
    s.engine.max_batch_delay_us = 1000;
    let (_, engine) = tandem_engine::engine::start(&s, Default::default()).expect("hub engine");
    Arc::new(engine)
}

/// A real hub (QUIC + mTLS) on `addr`; stops when the sender is used or dropped.
pub fn start_hub(
    pki: &tandem_hub::pki::Pki,
    addr: std::net::SocketAddr,
    engine: Arc<tandem_engine::Engine>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let ingress = tandem_hub::ingress::quic::QuicIngress::bind(addr, pki.dir())
        .expect("bind hub")
        .with_engine(engine);
    let bound = ingress.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    (bound, tx, task)
}

/// A real hub (QUIC + mTLS) on a free loopback port with `engine` and a feedback `store`;
/// stops when the sender is used or dropped.
pub fn start_feedback_hub(
    pki: &tandem_hub::pki::Pki,
    engine: Arc<tandem_engine::Engine>,
    store: Arc<tandem_hub::feedback::Store>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let ingress = tandem_hub::ingress::quic::QuicIngress::bind(
        "127.0.0.1:0".parse().expect("addr"),
        pki.dir(),
    )
    .expect("bind hub")
    .with_engine(engine)
    .with_feedback(store);
    let bound = ingress.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    (bound, tx)
}

/// Serves the agent's API for `router` on a free loopback port; returns `http://IP:PORT`.
pub async fn serve_api(cfg: &Config, router: Arc<tandem_agent::hybrid::Router>) -> String {
    let state = Arc::new(tandem_agent::api::AppState::new(cfg, router));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, tandem_agent::api::router(state)).await });
    base
}

/// POSTs one image file to `/v2/models/{model}/infer` as a binary `BYTES` input, with the
/// `outputs` asked for when given; the status and the JSON answer.
pub async fn oip_image(
    c: &reqwest::Client,
    base: &str,
    model: &str,
    img: &[u8],
    outputs: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut doc = serde_json::json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
        "parameters": {"binary_data_size": img.len() + 4}}]});
    if let Some(o) = outputs {
        doc["outputs"] = o;
    }
    let header = serde_json::to_vec(&doc).expect("json");
    let mut body = header.clone();
    body.extend((img.len() as u32).to_le_bytes());
    body.extend(img);
    let r = c
        .post(format!("{base}/v2/models/{model}/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .expect("oip request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// True where OpenVINO's plugin can serve on this machine's CPU (an Intel CPU). On another
/// vendor's CPU the plugin offers no device (the engine's `execution_providers` tests check
/// that pass-over and the CPU serving instead): the caller's OpenVINO checks need an Intel CPU
/// and are not run.
#[allow(dead_code)]
pub fn openvino_serves_here() -> bool {
    use tandem_engine::provider::plugins;
    let here = plugins::openvino_offers_this_cpu();
    if !here {
        eprintln!(
            "CPU vendor {:?}: OpenVINO's plugin offers no device here; this test's OpenVINO \
             checks need an Intel CPU and did not run",
            plugins::cpu_vendor()
        );
    }
    here
}
