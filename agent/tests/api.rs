//! The local HTTP API on a real loopback socket: OIP v2 (JSON and binary tensors), the
//! convenience endpoint, metrics, and a precise 4xx for every kind of bad input while valid
//! requests keep succeeding.

mod common;

use common::{config, models_dir, read_json};
use serde_json::{Value, json};
use std::sync::Arc;
use tandem_agent::api::{self, AppState};
use tandem_agent::app;
use tandem_tests::http::get_json;
use tandem_tests::metrics::scrape_text;

const LIMIT: usize = 256 * 1024;

async fn serve() -> String {
    let mut cfg = config(&["vision-fashion", "text-sentiment"], "edge", &["cpu"]);
    cfg.server.max_body_bytes = LIMIT;
    let engine = app::start_engine(&cfg).expect("engine");
    let router = app::start_router(&cfg, engine).expect("router");
    let state = Arc::new(AppState::new(&cfg, router));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    format!("http://{addr}")
}

fn sample_png() -> Vec<u8> {
    std::fs::read(models_dir().join("vision-fashion/samples/0_9.png")).expect("sample")
}

/// The Python reference input tensor and logits for the first edge case of vision-fashion.
fn reference_case() -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    let refs = read_json(&models_dir().join("vision-fashion/testdata/reference.json"));
    let case = refs["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["variant"] == "edge")
        .expect("edge case")
        .clone();
    let raw = std::fs::read(
        models_dir()
            .join("vision-fashion")
            .join(case["inputs"][0]["file"].as_str().expect("file")),
    )
    .expect("bin");
    let input = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let shape = case["inputs"][0]["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|v| v.as_i64().expect("dim"))
        .collect();
    let logits = case["outputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v.as_f64().expect("f") as f32)
        .collect();
    (input, shape, logits)
}

fn tiny_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode jpeg");
    out.into_inner()
}

fn tiny_png() -> Vec<u8> {
    let img = image::GrayImage::from_fn(16, 16, |x, _| image::Luma([(x * 16) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// A JPEG whose frame header declares 12000 x 12000 pixels.
fn jpeg_bomb() -> Vec<u8> {
    let mut b = tiny_jpeg();
    let sof = b
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("SOF0 marker");
    b[sof + 5..sof + 7].copy_from_slice(&12000u16.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&12000u16.to_be_bytes());
    b
}

/// A PNG whose header declares 20000 x 20000 pixels (valid CRC).
fn png_bomb() -> Vec<u8> {
    let mut b = tiny_png();
    b[16..20].copy_from_slice(&20000u32.to_be_bytes());
    b[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let crc = crc32fast::hash(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

async fn post(c: &reqwest::Client, url: String, body: Vec<u8>) -> (u16, Value) {
    let r = c.post(url).body(body).send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn classify_ok(c: &reqwest::Client, base: &str) {
    let (s, v) = post(
        c,
        format!("{base}/v1/classify/vision-fashion"),
        sample_png(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["label"], "Ankle boot", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_precise_errors_and_the_daemon_keeps_serving() {
    let base = serve().await;
    let c = reqwest::Client::new();
    classify_ok(&c, &base).await;
    let cut = {
        let j = tiny_jpeg();
        j[..j.len() * 3 / 10].to_vec()
    };
    let oip = |shape: Value, datatype: &str, data: Value| {
        serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]})).expect("json")
    };
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("non-image bytes", format!("{base}/v1/classify/vision-fashion"), b"hello, this is not an image".to_vec(), 400, "not a JPEG or PNG"),
        ("empty body", format!("{base}/v1/classify/vision-fashion"), Vec::new(), 400, "empty"),
        ("truncated JPEG (30%)", format!("{base}/v1/classify/vision-fashion"), cut, 400, "could not be decoded"),
        ("JPEG declaring 12000x12000", format!("{base}/v1/classify/vision-fashion"), jpeg_bomb(), 413, "over the limit"),
        ("PNG declaring 20000x20000", format!("{base}/v1/classify/vision-fashion"), png_bomb(), 413, "over the limit"),
        ("body over the limit", format!("{base}/v1/classify/vision-fashion"), vec![0xFF; LIMIT + 1], 413, "server.max_body_bytes"),
        ("unknown model", format!("{base}/v1/classify/no-such-model"), sample_png(), 404, "no-such-model"),
        ("empty text", format!("{base}/v1/classify/text-sentiment"), b"   ".to_vec(), 400, "text is empty"),
        ("wrong tensor shape", format!("{base}/v2/models/vision-fashion/infer"), oip(json!([1, 1, 27, 28]), "FP32", json!(vec![0.0; 27 * 28])), 400, "has shape"),
        ("wrong dtype", format!("{base}/v2/models/vision-fashion/infer"), oip(json!([1, 1, 28, 28]), "INT64", json!(vec![0; 784])), 400, "must be FP32"),
        ("unsupported dtype", format!("{base}/v2/models/vision-fashion/infer"), oip(json!([1, 1, 28, 28]), "FP16", json!(vec![0; 784])), 400, "FP16"),
        ("element count lie", format!("{base}/v2/models/vision-fashion/infer"), oip(json!([1, 1, 28, 28]), "FP32", json!([0.0, 1.0])), 400, "needs 784 elements"),
        ("wrong input name", format!("{base}/v2/models/vision-fashion/infer"), serde_json::to_vec(&json!({"inputs": [{"name": "x", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": vec![0.0; 784]}]})).expect("json"), 400, "no input `x`"),
        ("malformed JSON", format!("{base}/v2/models/vision-fashion/infer"), b"{\"inputs\": [".to_vec(), 400, "JSON"),
        ("unknown version", format!("{base}/v2/models/vision-fashion/versions/9.9.9/infer"), oip(json!([1, 1, 28, 28]), "FP32", json!(vec![0.0; 784])), 404, "no version"),
    ];
    for (what, url, body, want, needle) in cases {
        let (s, v) = post(&c, url, body).await;
        assert_eq!(s, want, "{what}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field in {v}"));
        assert!(msg.contains(needle), "{what}: `{msg}` lacks `{needle}`");
        classify_ok(&c, &base).await;
    }
    let r = c
        .get(format!("{base}/no/such/route"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let metrics = scrape_text(&c, &base).await;
    assert!(
        metrics.contains("tandem_inferences_total{model=\"vision-fashion\",outcome=\"bad_input\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("tandem_http_responses_total{route=\"/v1/classify/{model}\",status=\"413\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tandem_model_info{model=\"vision-fashion\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oip_v2_json_binary_and_bytes_inputs_agree_with_python() {
    let base = serve().await;
    let c = reqwest::Client::new();
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/vision-fashion/ready",
        "/v2/models/vision-fashion/versions/1.0.0/ready",
        "/v2",
    ] {
        let r = c.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let meta = get_json(&c, &format!("{base}/v2/models/vision-fashion")).await;
    assert_eq!(meta["inputs"][0]["name"], "input");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["parameters"]["execution_provider"], "cpu");

    let (input, shape, logits) = reference_case();
    let close = |got: &[f32]| got.iter().zip(&logits).all(|(a, b)| (a - b).abs() <= 1e-4);
    // JSON tensors.
    let body = json!({"id": "r1", "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": input}]});
    let (s, v) = post(
        &c,
        format!("{base}/v2/models/vision-fashion/versions/1.0.0/infer"),
        serde_json::to_vec(&body).expect("json"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], "r1");
    assert_eq!(v["parameters"]["route"], "local");
    let got: Vec<f32> = v["outputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("f") as f32)
        .collect();
    assert!(close(&got), "JSON logits {got:?} vs {logits:?}");

    // Binary tensor extension, binary output.
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": input.len() * 4}}], "parameters": {"binary_data_output": true}})).expect("json");
    let mut body = header.clone();
    body.extend(input.iter().flat_map(|x| x.to_le_bytes()));
    let r = c
        .post(format!("{base}/v2/models/vision-fashion/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .expect("hdr")
        .parse()
        .expect("num");
    let bytes = r.bytes().await.expect("body");
    let v: Value = serde_json::from_slice(&bytes[..json_len]).expect("json part");
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 40);
    let got: Vec<f32> = bytes[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(close(&got), "binary logits {got:?} vs {logits:?}");

    // A BYTES input carrying the PNG file, with the classification extension.
    let png = sample_png();
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": png.len() + 4}}], "outputs": [{"name": "logits", "parameters": {"classification": 3}}]})).expect("json");
    let mut body = header.clone();
    body.extend((png.len() as u32).to_le_bytes());
    body.extend(&png);
    let r = c
        .post(format!("{base}/v2/models/vision-fashion/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    let top = v["outputs"][0]["data"][0]
        .as_str()
        .expect("classification string");
    assert!(top.ends_with(":9:Ankle boot"), "{top}");
    assert_eq!(v["outputs"][0]["shape"], json!([1, 3]));

    // Text as a BYTES input (JSON).
    let body = json!({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["I love this, it is wonderful", "This is terrible and I hate it"]}]});
    let (s, v) = post(
        &c,
        format!("{base}/v2/models/text-sentiment/infer"),
        serde_json::to_vec(&body).expect("json"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let probs: Vec<f64> = v["outputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("f"))
        .collect();
    assert_eq!(probs.len(), 4);
    assert!(
        probs[1] > 0.5 && probs[2] > 0.5,
        "positive then negative: {probs:?}"
    );
}
