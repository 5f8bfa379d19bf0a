//! Detection through the agent's surfaces on real photos: `/v1/detect/{model}` answers typed
//! boxes, OIP v2 carries them as the `detections` tensor (and per-box parameters), the wrong
//! endpoint or a bad image is a precise 4xx while the daemon keeps serving, and
//! `infer --json` prints the boxes.

mod common;

use common::{config, models_dir, repo, serve_api};
use serde_json::{Value, json};
use tandem_agent::app;
use tandem_shared::detect::nms::iou;
use tandem_shared::detect::{DetectAnswer, Detections};

/// The bus in PASCAL VOC 2011_000025 as labelme's example labels it.
const BUS: [f32; 4] = [84.0, 20.0, 435.0, 373.0];
const PHOTO: &str = "detect-coco/samples/voc-2011_000025.jpg";

async fn serve() -> String {
    let cfg = config(&["detect-coco", "vision-fashion"], "edge", &["cpu"]);
    let engine = app::start_engine(&cfg).expect("engine");
    let router = app::start_router(&cfg, engine).expect("router");
    serve_api(&cfg, router).await
}

fn photo() -> Vec<u8> {
    std::fs::read(models_dir().join(PHOTO)).expect("photo")
}

async fn post(c: &reqwest::Client, url: String, body: Vec<u8>) -> (u16, Value) {
    let r = c.post(url).body(body).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn finds_the_bus(boxes: &[[f32; 4]], what: &str) {
    let best = boxes.iter().map(|b| iou(b, &BUS)).fold(0.0f32, f32::max);
    assert!(
        best >= 0.5,
        "{what}: best IoU with the bus {best}: {boxes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_endpoint_oip_and_errors() {
    let base = serve().await;
    let c = reqwest::Client::new();

    let (s, v) = post(&c, format!("{base}/v1/detect/detect-coco"), photo()).await;
    assert_eq!(s, 200, "{v}");
    let a: DetectAnswer = serde_json::from_value(v.clone()).expect("a DetectAnswer");
    assert_eq!((a.width, a.height), (500, 375));
    assert_eq!((a.route.as_str(), a.variant.as_str()), ("local", "edge"));
    assert!(v["request_id"].is_string(), "{v}");
    let buses: Vec<[f32; 4]> = a
        .detections
        .iter()
        .filter(|d| d.label == "bus")
        .map(|d| d.bbox)
        .collect();
    finds_the_bus(&buses, "/v1/detect");
    assert_eq!(a.signals.count, a.detections.len());

    // OIP v2: the image as a BYTES input; the answer is the detections tensor.
    let (status, v) = common::oip_image(&c, &base, "detect-coco", &photo(), None).await;
    assert_eq!(status, 200, "{v}");
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "detections", "{v}");
    assert_eq!(out["shape"], json!([1, 100, 6]));
    let data: Vec<f32> = out["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("f") as f32)
        .collect();
    let labels: Vec<String> = (0..80).map(|i| format!("c{i}")).collect();
    let rows = Detections::from_row(&data, &labels, 500, 375);
    assert_eq!(rows.boxes.len(), a.detections.len(), "{v}");
    finds_the_bus(
        &rows
            .boxes
            .iter()
            .filter(|d| d.class == 5)
            .map(|d| d.bbox)
            .collect::<Vec<_>>(),
        "OIP tensor",
    );
    assert_eq!(
        v["parameters"]["detections"].as_array().map(Vec::len),
        Some(a.detections.len()),
        "per-box parameters: {v}"
    );
    // The boxes as tensors too: boxes [1, n, 4], scores [1, n], classes [1, n], num_detections.
    let n = a.detections.len();
    let names: Vec<&str> = v["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["detections", "boxes", "scores", "classes", "num_detections"]
    );
    let (boxes, scores, classes, count) = (
        &v["outputs"][1],
        &v["outputs"][2],
        &v["outputs"][3],
        &v["outputs"][4],
    );
    assert_eq!(boxes["shape"], json!([1, n, 4]), "{v}");
    assert_eq!(
        (scores["datatype"].as_str(), classes["datatype"].as_str()),
        (Some("FP32"), Some("INT64"))
    );
    assert_eq!(count["data"], json!([n]), "{v}");
    let bus_boxes: Vec<[f32; 4]> = (0..n)
        .filter(|i| classes["data"][*i] == 5)
        .map(|i| std::array::from_fn(|j| boxes["data"][i * 4 + j].as_f64().expect("f") as f32))
        .collect();
    finds_the_bus(&bus_boxes, "OIP boxes tensor");
    assert_eq!(v["parameters"]["route"], "local", "{v}");

    #[rustfmt::skip]
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("classify a detector", format!("{base}/v1/classify/detect-coco"), photo(), 400, "/v1/detect/detect-coco"),
        ("detect with a classifier", format!("{base}/v1/detect/vision-fashion"), photo(), 400, "not a detection model"),
        ("not an image", format!("{base}/v1/detect/detect-coco"), b"GIF89a....".to_vec(), 400, "not a JPEG or PNG"),
        ("cut JPEG", format!("{base}/v1/detect/detect-coco"), photo()[..2000].to_vec(), 400, "could not be decoded"),
        ("unknown model", format!("{base}/v1/detect/no-such"), photo(), 404, "no-such"),
    ];
    for (what, url, body, want, needle) in cases {
        let (s, v) = post(&c, url, body).await;
        assert_eq!(s, want, "{what}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{what}: `{msg}` lacks `{needle}`");
        let (s, _) = post(&c, format!("{base}/v1/detect/detect-coco"), photo()).await;
        assert_eq!(s, 200, "after {what}");
    }
}

#[test]
fn infer_json_prints_boxes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-agent"))
        .current_dir(repo())
        .args([
            "infer",
            "--json",
            "--model",
            "detect-coco",
            "--variant",
            "cloud",
        ])
        .arg(format!("models/{PHOTO}"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let a: DetectAnswer = serde_json::from_value(line.clone()).expect("a DetectAnswer");
    assert_eq!(a.variant, "cloud");
    assert_eq!(line["input"], format!("models/{PHOTO}"));
    finds_the_bus(
        &a.detections
            .iter()
            .filter(|d| d.label == "bus")
            .map(|d| d.bbox)
            .collect::<Vec<_>>(),
        "infer --json",
    );
}
