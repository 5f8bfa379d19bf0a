//! Helpers for the hub's HTTP API tests: configs over the repository's models, an in-process
//! hub API on a free loopback port, OIP requests.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tandem_engine::{Engine, metrics::Metrics};
use tandem_hub::api::{HttpServer, HubApi};
use tandem_hub::config::Config;

pub const TOKEN: &str = "tok-0123456789abcdef-ops";

#[allow(unused_imports)] // not every test binary uses every helper
pub use tandem_tests::{read_json, repo, scratch};

/// A hub config over the repository's models on a free loopback port.
pub fn config(models: &[&str]) -> Config {
    let mut cfg = Config {
        base_dir: repo(),
        ..Config::default()
    };
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.http.max_body_bytes = 16 * 1024 * 1024;
    cfg.models.enabled = models.iter().map(|m| m.to_string()).collect();
    cfg
}

/// Starts the engine and the HTTP API of `cfg`; serves until the returned sender is dropped.
pub async fn serve(cfg: &Config) -> (SocketAddr, Arc<Engine>, tokio::sync::oneshot::Sender<()>) {
    let settings = cfg.engine_settings();
    let engine = tokio::task::block_in_place(|| {
        tandem_engine::engine::start(&settings, Arc::new(Metrics::default())).map(|(_, e)| e)
    })
    .expect("hub engine (run `make setup`)");
    let engine = Arc::new(engine);
    let api = Arc::new(HubApi::new(cfg, engine.clone(), None));
    let server = HttpServer::bind(cfg, api).await.expect("bind");
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (addr, engine, tx)
}

/// Serves `api` on `cfg`'s address until the returned sender is dropped; its base URL.
pub async fn serve_hub_api(
    cfg: &Config,
    api: HubApi,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let server = HttpServer::bind(cfg, Arc::new(api)).await.expect("bind");
    let base = format!("http://{}", server.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (base, tx)
}

/// `(model, sample file, expected top-1 label)` of the cloud variant.
fn image_request(file: &[u8]) -> (Vec<u8>, usize) {
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": file.len() + 4}}], "outputs": [{"name": "logits", "parameters": {"classification": 1}}]})).expect("json");
    let header_len = header.len();
    let mut body = header;
    body.extend((file.len() as u32).to_le_bytes());
    body.extend(file);
    (body, header_len)
}

pub fn infer_request(
    c: &reqwest::Client,
    base: &str,
    model: &str,
    file: &[u8],
) -> reqwest::RequestBuilder {
    let (body, header_len) = image_request(file);
    c.post(format!("{base}/v2/models/{model}/infer"))
        .header("Inference-Header-Content-Length", header_len)
        .body(body)
}

pub async fn classify(c: &reqwest::Client, base: &str, model: &str, file: &[u8]) -> (u16, Value) {
    let r = infer_request(c, base, model, file)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `/metrics`, with a bearer token when given.
pub async fn scrape(c: &reqwest::Client, base: &str, token: Option<&str>) -> String {
    let mut req = c.get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("scrape");
    assert_eq!(r.status().as_u16(), 200, "/metrics");
    r.text().await.expect("text")
}

/// The engine settings of a default hub config over the repository's models.
pub fn engine_settings() -> tandem_engine::settings::EngineSettings {
    Config {
        base_dir: repo(),
        ..Default::default()
    }
    .engine_settings()
}

/// The shipped vision-fashion model folder.
pub fn fashion() -> std::path::PathBuf {
    repo().join("models/vision-fashion")
}

/// Items `from..to` of the shipped Fashion-MNIST test set under `shift`.
pub fn shifted(from: usize, to: usize, shift: &str) -> tandem_hub::eval::dataset::LabelledSet {
    let mut set = tandem_hub::eval::dataset::shipped(&fashion(), to).expect("shipped set");
    let shift: tandem_hub::eval::shift::Shift = shift.parse().expect("shift");
    set.items.drain(..from);
    for (i, item) in set.items.iter_mut().enumerate() {
        item.input = shift.apply(&item.input, i as u64).expect("shift applies");
    }
    set.name = format!("shipped[{from}..{to}]+{shift}");
    set
}

/// Share of `set` the model folder `dir` (named as its model, as shipped folders and trained
/// bundles are) gets right, by the engine, 16 inputs a call (a dynamically quantised model
/// scales its activations per call, so the call size is part of what is measured).
pub fn accuracy(dir: &std::path::Path, set: &tandem_hub::eval::dataset::LabelledSet) -> f64 {
    use tandem_hub::eval::dataset;
    let name = dir.file_name().and_then(|n| n.to_str()).expect("name");
    let engine =
        tandem_hub::train::features::engine_on(&engine_settings(), dir, name).expect("engine");
    let inputs: Vec<dataset::Payload> = set.items.iter().map(|i| i.input.clone()).collect();
    let mut right = 0;
    for (chunk, items) in inputs.chunks(16).zip(set.items.chunks(16)) {
        let inf = engine
            .infer_blocking(name, dataset::engine_input(chunk))
            .expect("infers");
        right += inf
            .predictions
            .iter()
            .zip(items)
            .filter(|(p, i)| p.index == i.truth)
            .count();
    }
    engine.shutdown();
    right as f64 / set.items.len() as f64
}
