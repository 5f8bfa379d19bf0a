//! The text teacher on the hub out of the box: a hub on its default model settings (every model
//! folder discovered, cloud variants) serves text-sentiment with MPNet (`cloud.onnx`, built by
//! `make setup`), and a sentence the agent's MiniLM is unsure of goes there through the real
//! agent (HTTP API, cascade, QUIC + mTLS) and comes back with MPNet's answer: the label and score
//! Python onnxruntime gives with `cloud.onnx` (testdata/expected.json), not the edge's.

mod common;

use common::{models_dir, read_json, start_hub};
use serde_json::Value;
use std::sync::Arc;
use tandem_agent::app;
use tandem_hub::pki::Pki;

const MODEL: &str = "text-sentiment";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsure_sentence_is_answered_by_mpnet_on_the_hub() {
    // The hub's own defaults: nothing enabled by name, so every model folder is served.
    let hub_cfg = tandem_hub::config::Config {
        base_dir: common::repo(),
        ..Default::default()
    };
    assert!(
        hub_cfg.models.enabled.is_empty(),
        "the default discovers every model"
    );
    let (_, engine) = tandem_engine::engine::start(&hub_cfg.engine_settings(), Default::default())
        .expect("hub engine on its defaults");
    let served = engine
        .model(MODEL)
        .expect("the hub serves text-sentiment by default (run `make setup` for cloud.onnx)");
    assert_eq!(served.files.role.as_str(), "cloud");
    assert_eq!(served.files.variant.file, "cloud.onnx");
    let manifest = read_json(&models_dir().join(MODEL).join("manifest.json"));
    assert_eq!(
        manifest["variants"]["cloud"]["architecture"],
        "all-mpnet-base-v2"
    );

    let (_tmp, dir) = common::tmp_dir("text-teacher");
    let pki = Pki::init(&dir).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let (hub_addr, _stop, _task) =
        start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), Arc::new(engine));
    let mut cfg = common::config(&[MODEL], "edge", &["cpu"]);
    cfg.hub.address = hub_addr.to_string();
    cfg.hub.ca = dir.join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.hub.timeout_ms = 30_000;
    let router =
        app::start_router(&cfg, app::start_engine(&cfg).expect("agent engine")).expect("router");
    let base = common::serve_api(&cfg, router).await;
    let c = reqwest::Client::new();

    let threshold = manifest["variants"]["edge"]["threshold"]
        .as_f64()
        .expect("threshold");
    let expected = read_json(&models_dir().join(MODEL).join("testdata/expected.json"));
    let cases = expected["cases"].as_array().expect("cases");
    let cloud_case = |line: &Value| {
        cases
            .iter()
            .find(|k| k["variant"] == "cloud" && &k["line"] == line)
            .expect("a cloud case for every sample")
    };
    let mut offloaded = 0;
    for edge in cases.iter().filter(|k| k["variant"] == "edge") {
        let edge_score = edge["score"].as_f64().expect("score");
        if edge_score >= threshold {
            continue;
        }
        let text = edge["text"].as_str().expect("text");
        let r = c
            .post(format!("{base}/v1/classify/{MODEL}"))
            .body(text.to_string())
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 200, "{text}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["route"], "cloud", "{text}: {v}");
        assert_eq!(v["reason"], "low_confidence", "{v}");
        assert_eq!(v["degraded"], false, "{v}");
        let want = cloud_case(&edge["line"]);
        assert_eq!(v["label"], want["top1"], "{text}: MPNet's label: {v}");
        let score = v["score"].as_f64().expect("score");
        let want_score = want["score"].as_f64().expect("score");
        assert!(
            (score - want_score).abs() <= 1e-4,
            "{text}: hub score {score}, Python onnxruntime on cloud.onnx {want_score}"
        );
        assert!(
            (score - edge_score).abs() > 1e-3,
            "{text}: the answer is not the edge's ({edge_score})"
        );
        let local = v["local"]["score"].as_f64().expect("local score");
        assert!((local - edge_score).abs() <= 0.01, "{v}");
        eprintln!(
            "{text:.60}: edge {} {edge_score:.3} -> hub MPNet {} {score:.3} (true {})",
            edge["top1"], v["label"], edge["true_label"]
        );
        offloaded += 1;
    }
    assert!(
        offloaded >= 1,
        "no sample sentence under the edge threshold {threshold}"
    );
}
