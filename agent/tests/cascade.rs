//! The hybrid cascade end to end on loopback, with the real hub (QUIC + mTLS, cloud variant):
//! exactly the low-confidence inputs go to the hub and come back with the hub's label; with the
//! hub gone every request still succeeds with the local answer marked degraded; when the hub
//! returns, offloading resumes.

mod common;

use common::{hub_engine, models_dir, read_json, start_hub};
use serde_json::Value;
use tandem_agent::app;
use tandem_hub::pki::Pki;

async fn classify(c: &reqwest::Client, base: &str, file: &str) -> Value {
    let body = std::fs::read(models_dir().join("vision-fashion").join(file)).expect("sample");
    let r = c
        .post(format!("{base}/v1/classify/vision-fashion"))
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status().as_u16(),
        200,
        "{file}: the caller never sees the cloud fail"
    );
    r.json().await.expect("json")
}

/// The `k` best classes (index, label) the hub's engine decodes for a fashion sample.
async fn hub_decodes(engine: &tandem_engine::Engine, file: &str, k: usize) -> Vec<(u64, String)> {
    let bytes = std::fs::read(models_dir().join("vision-fashion").join(file)).expect("sample");
    let inf = engine
        .infer(
            "vision-fashion",
            tandem_engine::Input::Images(vec![bytes.into()]),
        )
        .await
        .expect("hub engine");
    let h = engine.model("vision-fashion").expect("hub model");
    let o = &inf.outputs[0];
    let c = tandem_engine::postprocess::classify_rows(
        &h.files.variant.outputs[0],
        &o.shape,
        &o.data,
        &h.files.labels,
        k,
    );
    c[0].top_k
        .iter()
        .map(|s| (s.index as u64, s.label.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_offloads_the_unsure_and_degrades_gracefully() {
    let (_tmp, dir) = common::tmp_dir("cascade");
    let pki = Pki::init(&dir).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let engine = hub_engine();
    let (hub_addr, stop, task) =
        start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), engine.clone());

    let mut cfg = common::config(&["vision-fashion"], "edge", &["cpu"]);
    cfg.hub.address = hub_addr.to_string();
    cfg.hub.ca = dir.join("ca.pem");
    let (cert, key) = pki.device_files("cam-01");
    (cfg.hub.cert, cfg.hub.key) = (cert, key);
    let agent_engine = app::start_engine(&cfg).expect("agent engine");
    let router = app::start_router(&cfg, agent_engine).expect("router");
    let base = common::serve_api(&cfg, router).await;
    let c = reqwest::Client::new();

    let manifest = read_json(&models_dir().join("vision-fashion/manifest.json"));
    let threshold = manifest["variants"]["edge"]["threshold"]
        .as_f64()
        .expect("threshold");
    let expected = read_json(&models_dir().join("vision-fashion/testdata/expected.json"));
    let cases = expected["cases"].as_array().expect("cases");
    let cloud_top1 = |file: &str| {
        cases
            .iter()
            .find(|k| k["variant"] == "cloud" && k["input"] == file)
            .expect("cloud case")["top1"]
            .clone()
    };
    let edge: Vec<&Value> = cases.iter().filter(|k| k["variant"] == "edge").collect();
    let mut offloaded = Vec::new();
    for case in &edge {
        let file = case["input"].as_str().expect("input");
        let v = classify(&c, &base, file).await;
        let unsure = case["score"].as_f64().expect("score") < threshold;
        if unsure {
            assert_eq!(v["route"], "cloud", "{file}: {v}");
            assert_eq!(v["reason"], "low_confidence");
            assert_eq!(
                v["label"],
                cloud_top1(file),
                "{file}: the hub's label is returned"
            );
            assert_eq!(
                v["local"]["label"], case["top1"],
                "{file}: both answers are reported"
            );
            assert_eq!(v["cloud"]["version"], "1.0.0");
            // Typed, as a client reads it: the edge model's version beside its answer.
            let typed: tandem_shared::answer::ClassifyAnswer =
                serde_json::from_value(v.clone()).expect("a ClassifyAnswer");
            let local = typed.local.expect("the local side");
            assert_eq!(local.version.as_deref(), Some("1.0.0"), "{v}");
            offloaded.push(file.to_string());
        } else {
            assert_eq!(v["route"], "local", "{file}: {v}");
            assert_eq!(v["reason"], "confident");
            assert_eq!(v["label"], case["top1"]);
        }
        assert_eq!(v["degraded"], false);
    }
    assert!(!offloaded.is_empty(), "no sample was under the threshold");

    // The classes of an offloaded answer are the hub engine's own decoding, with the
    // request's k: /v1/classify asks the agent's `engine.top_k` (5), OIP v2's classification
    // extension its own (3).
    let classes = |v: &Value| {
        v.as_array()
            .expect("top_k")
            .iter()
            .map(|s| {
                let label = s["label"].as_str().expect("label").to_string();
                (s["index"].as_u64().expect("index"), label)
            })
            .collect::<Vec<_>>()
    };
    let file = offloaded[0].as_str();
    let v = classify(&c, &base, file).await;
    assert_eq!(v["route"], "cloud", "{v}");
    assert_eq!(
        classes(&v["top_k"]),
        hub_decodes(&engine, file, 5).await,
        "{v}"
    );
    let img = std::fs::read(models_dir().join("vision-fashion").join(file)).expect("sample");
    let outputs = serde_json::json!([{"name": "logits", "parameters": {"classification": 3}}]);
    let (status, v) = common::oip_image(&c, &base, "vision-fashion", &img, Some(outputs)).await;
    assert_eq!(status, 200, "{v}");
    let p = &v["parameters"];
    assert_eq!(p["route"], "cloud", "{v}");
    assert_eq!(
        classes(&p["top_k"]),
        hub_decodes(&engine, file, 3).await,
        "{v}"
    );
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([1, 3]), "{v}");

    // The CLI routes the same way.
    let conf = dir.join("agent.toml");
    let (cert, key) = pki.device_files("cam-01");
    std::fs::write(
        &conf,
        format!(
            "[models]\ndir = \"{}\"\n[hub]\naddress = \"{hub_addr}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            models_dir().display(),
            dir.join("ca.pem").display(),
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let sample = models_dir().join("vision-fashion").join(&offloaded[0]);
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-agent"));
    cli.args(["infer", "--json", "--model", "vision-fashion", "--config"])
        .arg(&conf)
        .arg(&sample);
    let out = tandem_tests::process::output_ok(cli).await;
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(line["route"], "cloud", "{line}");
    assert_eq!(line["label"], cloud_top1(&offloaded[0]));

    // The hub goes away: every request still succeeds, locally, marked degraded.
    let _ = stop.send(());
    let _ = task.await;
    for file in &offloaded {
        let v = classify(&c, &base, file).await;
        assert_eq!(v["route"], "local", "{v}");
        assert_eq!(v["degraded"], true);
        assert_eq!(v["reason"], "hub_unreachable");
    }

    // It comes back on the same address: offloading resumes once the backoff has passed.
    let (_addr, _stop2, _task2) = start_hub(&pki, hub_addr, engine);
    let mut resumed = false;
    for _ in 0..100 {
        let v = classify(&c, &base, &offloaded[0]).await;
        if v["route"] == "cloud" {
            resumed = true;
            break;
        }
        assert_eq!(v["degraded"], true);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(resumed, "offloading did not resume after the hub returned");
}
