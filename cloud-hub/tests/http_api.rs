//! The hub's HTTP API on real loopback sockets over the real cloud variants: OIP v2 answers
//! that match the reference outputs and labels, the real Triton client, a full queue, and the
//! batch-size histogram after load.

mod common;

use common::{classify, config, infer_request, read_json, repo, scrape, serve};
use serde_json::{Value, json};

fn expected_labels(model: &str) -> Vec<(String, String)> {
    let e = read_json(
        &repo()
            .join("models")
            .join(model)
            .join("testdata/expected.json"),
    );
    e["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["variant"] == "cloud")
        .map(|c| {
            let input = c["input"].as_str().expect("input").to_string();
            (input, c["top1"].as_str().expect("top1").to_string())
        })
        .collect()
}

/// An OIP request (binary extension) with one BYTES input holding an image file, asking for
/// the top class; and the length of its JSON part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oip_v2_answers_match_the_reference_and_the_expected_labels() {
    let (addr, _engine, _stop) = serve(&config(&["vision-fashion", "vision-imagenet"])).await;
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{base}{path}");
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.expect("get");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let ready = "/v2/models/vision-fashion/versions/1.0.0/ready";
    for path in ["/v2/health/live", "/v2/health/ready", ready] {
        assert_eq!(get(path).await.0, 200, "{path}");
    }
    let (_, server) = get("/v2").await;
    assert_eq!(server["name"], "tandem-hub", "{server}");
    let (_, meta) = get("/v2/models/vision-imagenet/versions/1.0.0").await;
    assert_eq!(meta["parameters"]["variant"], "cloud", "{meta}");
    assert_eq!(
        meta["inputs"][0]["shape"],
        json!([-1, 3, 260, 260]),
        "{meta}"
    );

    // JSON tensors against the Python reference logits of every cloud case.
    let refs = read_json(&repo().join("models/vision-fashion/testdata/reference.json"));
    let cloud = refs["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|k| k["variant"] == "cloud");
    for (i, case) in cloud.enumerate() {
        let spec = &case["inputs"][0];
        let file = spec["file"].as_str().expect("file");
        let bytes = std::fs::read(repo().join("models/vision-fashion").join(file)).expect("bin");
        let input: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let body = json!({"id": format!("hub-ref-{i}"), "inputs": [{"name": "input", "shape": spec["shape"], "datatype": "FP32", "data": input}]});
        let url = format!("{base}/v2/models/vision-fashion/versions/1.0.0/infer");
        let r = c.post(url).json(&body).send().await.expect("post");
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["id"], format!("hub-ref-{i}"), "{v}");
        assert_eq!(v["parameters"]["variant"], "cloud", "{v}");
        assert_eq!(v["parameters"]["batch_size"], 1, "{v}");
        let want = case["outputs"][0]["data"].as_array().expect("data");
        let got = v["outputs"][0]["data"].as_array().expect("data");
        assert_eq!(got.len(), want.len(), "{file}");
        for (g, w) in got.iter().zip(want) {
            let (g, w) = (g.as_f64().expect("f"), w.as_f64().expect("f"));
            assert!((g - w).abs() <= 1e-4, "{file}: logits {got:?} vs {want:?}");
        }
    }
    assert!(
        refs["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .any(|k| k["variant"] == "cloud"),
        "no cloud reference case"
    );

    // Image files as BYTES inputs: the expected top-1 labels of the cloud variants.
    for (model, take) in [("vision-fashion", usize::MAX), ("vision-imagenet", 3)] {
        for (file, label) in expected_labels(model).into_iter().take(take) {
            let bytes =
                std::fs::read(repo().join("models").join(model).join(&file)).expect("sample");
            let (s, v) = classify(&c, &base, model, &bytes).await;
            assert_eq!(s, 200, "{model} {file}: {v}");
            let top = v["outputs"][0]["data"][0].as_str().expect("classification");
            assert!(
                top.ends_with(&format!(":{label}")),
                "{model} {file}: `{top}`, expected {label}"
            );
            assert_eq!(v["parameters"]["label"], label.as_str(), "{v}");
        }
    }

    // Precise errors.
    let zeros = |shape: Value, n: usize| {
        serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": vec![0.0; n]}]})).expect("json")
    };
    let infer = |path: &str, body: Vec<u8>| c.post(format!("{base}{path}")).body(body);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "unknown model",
            infer(
                "/v2/models/no-such-model/infer",
                zeros(json!([1, 1, 28, 28]), 784),
            ),
            404,
            "no-such-model",
        ),
        (
            "unknown version",
            infer(
                "/v2/models/vision-fashion/versions/9.9.9/infer",
                zeros(json!([1, 1, 28, 28]), 784),
            ),
            404,
            "no version",
        ),
        (
            "wrong shape",
            infer(
                "/v2/models/vision-fashion/infer",
                zeros(json!([1, 1, 27, 28]), 27 * 28),
            ),
            400,
            "has shape",
        ),
        (
            "malformed JSON",
            infer(
                "/v2/models/vision-fashion/infer",
                b"{\"inputs\": [".to_vec(),
            ),
            400,
            "JSON",
        ),
        (
            "not an image",
            infer_request(&c, &base, "vision-fashion", b"not an image at all"),
            400,
            "not a JPEG or PNG",
        ),
        (
            "body over the limit",
            infer(
                "/v2/models/vision-fashion/infer",
                vec![b' '; 16 * 1024 * 1024 + 1],
            ),
            413,
            "http.max_body_bytes",
        ),
    ];
    for (what, req, want, needle) in cases {
        let r = req.send().await.expect("post");
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            status == want && msg.contains(needle),
            "{what}: {status} {v}, expected {want} and `{needle}`"
        );
    }
    // (Outside /v2 an unknown route is an operator's: 401 without the operator token.)
    let (status, v) = get("/v2/no/such/route").await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].is_string(), "JSON error body: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_drives_the_hub() {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `make setup`",
        python.display()
    );
    let (addr, _engine, _stop) = serve(&config(&["vision-fashion"])).await;
    let mut check = std::process::Command::new(&python);
    check
        .arg(repo().join("tests/python/triton_client_check.py"))
        .arg(addr.to_string())
        .arg(repo())
        .args(["cloud", "vision-fashion"]);
    let out = tandem_tests::process::output_ok(check).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_fills_the_batch_size_histogram_and_a_full_queue_answers_503() {
    let mut cfg = config(&["vision-fashion"]);
    cfg.engine.max_batch = 8;
    cfg.engine.max_batch_delay_us = 20_000;
    let (addr, _engine, _stop) = serve(&cfg).await;
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();
    let png = std::fs::read(repo().join("models/vision-fashion/samples/0_9.png")).expect("sample");
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (c, base, png) = (c.clone(), base.clone(), png.clone());
            tokio::spawn(async move { classify(&c, &base, "vision-fashion", &png).await })
        })
        .collect();
    for call in calls {
        let (s, v) = call.await.expect("task");
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["parameters"]["label"], "Ankle boot", "{v}");
    }
    let metrics = scrape(&c, &base, None).await;
    assert!(
        metrics.contains("# TYPE tandem_batch_size histogram"),
        "{metrics}"
    );
    // Every request ran in exactly one run, whatever the batching: the sizes add up to 16.
    assert!(
        metrics.contains("tandem_batch_size_sum{model=\"vision-fashion\"} 16\n"),
        "{metrics}"
    );
    let runs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tandem_batch_size_count{model=\"vision-fashion\"} "))
        .expect("count")
        .parse()
        .expect("number");
    assert!((1..=16).contains(&runs), "{runs} runs");
    assert!(
        metrics.contains(&format!(
            "tandem_batch_size_bucket{{model=\"vision-fashion\",le=\"8\"}} {runs}\n"
        )),
        "no run is over max_batch: {metrics}"
    );
    assert!(
        metrics.contains(
            "tandem_http_responses_total{route=\"/v2/models/{model}/infer\",status=\"200\"} 16"
        ),
        "{metrics}"
    );

    // A queue of one and eight large requests at once: some are told to come back later.
    let mut cfg = config(&["vision-fashion"]);
    let rows = 3000;
    cfg.engine.queue_capacity = 1;
    cfg.engine.max_batch = 1;
    // Large requests on purpose (they keep the worker busy): above the default rows cap and,
    // eight at once, above the default bytes in flight.
    cfg.engine.max_rows_per_request = rows;
    cfg.http.max_inflight_body_bytes = 256 << 20;
    let (addr, _engine, _stop) = serve(&cfg).await;
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [rows, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": rows * 784 * 4}}]})).expect("json");
    let mut body = header.clone();
    body.resize(header.len() + rows * 784 * 4, 0);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let req = c
                .post(format!("http://{addr}/v2/models/vision-fashion/infer"))
                .header("Inference-Header-Content-Length", header.len())
                .body(body.clone());
            tokio::spawn(async move {
                let r = req.send().await.expect("post");
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                (r.status().as_u16(), retry, r.text().await.expect("body"))
            })
        })
        .collect();
    let mut busy = 0;
    for call in calls {
        let (status, retry, text) = call.await.expect("task");
        match status {
            200 => {}
            503 => {
                busy += 1;
                assert_eq!(retry.as_deref(), Some("1"), "503 without Retry-After");
                assert!(text.contains("is busy"), "{text}");
            }
            other => panic!("status {other}: {text}"),
        }
    }
    assert!(busy >= 1, "no request was refused by a queue of one");
}
