//! The detection-aware cascade end to end on loopback with real parts (ONNX Runtime on both
//! sides, QUIC + mTLS, sled on both sides) on real photos: a frame with many boxes in the
//! uncertain band is offloaded and answered with the hub's boxes (the device's beside them); a
//! confident frame is answered locally; the offloaded frame's hard example reaches the hub
//! with both sets of boxes; a deadline the hub cannot meet gives the edge boxes, degraded; the
//! policy's second band (boxes of classes outside `common_classes`) offloads a frame alone.

mod common;

use common::{models_dir, repo};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tandem_agent::app;
use tandem_agent::feedback::Feedback;
use tandem_agent::inference::Input;
use tandem_agent::uplink::deliver;
use tandem_hub::feedback::Store;
use tandem_hub::pki::Pki;
use tandem_shared::detect::{DetectAnswer, Detection};
use tandem_tests::wait::wait_for;

/// Many boxes in the manifest's band [0.30, 0.35) (two people, a bed, a tie, a chair): unsure.
const UNSURE: &str = "detect-coco/samples/voc-2011_000006.jpg";
/// A bus and two others scoring high: under the band's four boxes, confident.
const SURE: &str = "detect-coco/samples/voc-2011_000025.jpg";

fn photo(p: &str) -> Vec<u8> {
    std::fs::read(models_dir().join(p)).expect("photo")
}

fn engine(variant: &str) -> Arc<tandem_engine::Engine> {
    let mut s = tandem_engine::settings::EngineSettings {
        base_dir: repo(),
        ..Default::default()
    };
    s.models.enabled = vec!["detect-coco".into()];
    s.models.variant = variant.into();
    let (_, engine) = tandem_engine::engine::start(&s, Default::default()).expect("engine");
    Arc::new(engine)
}

/// The boxes the hub's engine gives the photo, run here directly: what the hub must answer.
async fn boxes_of(engine: &tandem_engine::Engine, p: &str) -> Vec<Detection> {
    let inf = engine
        .infer("detect-coco", Input::Images(vec![photo(p).into()]))
        .await
        .expect("inference");
    inf.detections.into_iter().next().expect("one image").boxes
}

fn parse_boxes(v: &Value) -> Vec<Detection> {
    serde_json::from_value(v.clone()).expect("boxes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsure_frames_get_the_hubs_boxes_and_a_deadline_still_wins() {
    let (_tmp, dir) = common::tmp_dir("detect-cascade");
    let pki = Pki::init(&dir.join("pki")).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let store = Arc::new(Store::open(&dir.join("hub-feedback")).expect("hub store"));
    let hub_engine = engine("cloud");
    let (hub_addr, _stop) = common::start_feedback_hub(&pki, hub_engine.clone(), store.clone());

    let mut cfg = common::config(&["detect-coco"], "edge", &["cpu"]);
    cfg.hub.address = hub_addr.to_string();
    cfg.hub.ca = pki.dir().join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.queue.dir = dir.join("agent-queue");
    // The boxes are compared with the hub's engine on the photo as it is: the face blur that
    // uploads get (agent/tests/privacy.rs) would change what the hub sees.
    cfg.privacy.blur_faces = Some(false);
    let agent_engine = app::start_engine(&cfg).expect("agent engine");
    let queue = app::open_queue(&cfg).expect("queue");
    let wake = Arc::new(tokio::sync::Notify::new());
    let fb = Feedback::start(queue.clone(), cfg.feedback.clone(), wake.clone());
    let router = app::start_router_with(&cfg, agent_engine.clone(), Some(fb)).expect("router");
    let uplink = router.uplink().expect("uplink").clone();
    uplink.keep();
    tokio::spawn(deliver::run(Arc::downgrade(&uplink), queue.clone(), wake));
    let base = common::serve_api(&cfg, router.clone()).await;
    let c = reqwest::Client::new();
    let detect = |p: &'static str| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            let r = c
                .post(format!("{base}/v1/detect/detect-coco"))
                .body(photo(p))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.expect("json")
        }
    };

    // Unsure: offloaded, answered with the hub's boxes, the device's beside them.
    let v = detect(UNSURE).await;
    let a: DetectAnswer = serde_json::from_value(v.clone()).expect("a DetectAnswer");
    assert_eq!(
        (a.route.as_str(), a.variant.as_str()),
        ("cloud", "cloud"),
        "{v}"
    );
    assert_eq!(
        (v["reason"].as_str(), a.degraded),
        (Some("low_confidence"), false)
    );
    assert!(a.signals.uncertain >= 4, "{v}");
    assert_eq!((a.width, a.height), (500, 375));
    let hub_boxes = boxes_of(&hub_engine, UNSURE).await;
    let edge_boxes = parse_boxes(&v["local"]["detections"]);
    assert!(!edge_boxes.is_empty(), "{v}");
    assert_ne!(
        hub_boxes, edge_boxes,
        "the two detectors differ on this frame"
    );
    assert_eq!(a.detections, hub_boxes, "the hub's boxes are returned");
    assert_eq!(v["cloud"]["version"], "1.0.0");

    // `infer` routes the same way and prints the hub's boxes, as JSON and as text.
    let conf = dir.join("agent.toml");
    let (cert, key) = pki.device_files("cam-01");
    std::fs::write(
        &conf,
        format!(
            "[models]\ndir = \"{}\"\n[hub]\naddress = \"{hub_addr}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n[privacy]\nblur_faces = false\n",
            models_dir().display(),
            pki.dir().join("ca.pem").display(),
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let infer = |json: bool| {
        let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-agent"));
        cli.arg("infer");
        if json {
            cli.arg("--json");
        }
        cli.args(["--model", "detect-coco", "--config"])
            .arg(&conf)
            .arg(models_dir().join(UNSURE));
        tandem_tests::process::output_ok(cli)
    };
    let out = infer(true).await;
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(line["route"], "cloud", "{line}");
    assert_eq!(parse_boxes(&line["detections"]), hub_boxes);
    let text = String::from_utf8_lossy(&infer(false).await.stdout).to_string();
    assert!(
        text.contains(&format!(
            "{} box(es) in 500x375, cloud (hub 1.0.0)",
            hub_boxes.len()
        )),
        "{text}"
    );

    // Confident: answered on the device.
    let v = detect(SURE).await;
    let a: DetectAnswer = serde_json::from_value(v.clone()).expect("a DetectAnswer");
    assert_eq!(
        (a.route.as_str(), a.variant.as_str()),
        ("local", "edge"),
        "{v}"
    );
    assert_eq!(
        (v["reason"].as_str(), a.degraded),
        (Some("confident"), false)
    );
    assert!(a.signals.uncertain < 4, "{v}");
    assert!(a.detections.iter().any(|d| d.label == "bus"), "{v}");
    assert!(v.get("local").is_none() && v.get("cloud").is_none(), "{v}");

    // A deadline the hub cannot meet (1 ms, shorter than the local run) on the unsure frame:
    // the edge boxes, degraded, the deadline as the reason.
    let answer = router
        .classify(
            "detect-coco",
            Input::Images(vec![photo(UNSURE).into()]),
            Some(1),
        )
        .await
        .expect("answered");
    let v = serde_json::to_value(answer.body()).expect("json");
    assert_eq!(
        (v["route"].as_str(), v["degraded"].as_bool()),
        (Some("local"), Some(true)),
        "{v}"
    );
    assert_eq!(v["reason"], "deadline");
    assert_eq!(parse_boxes(&v["detections"]), edge_boxes);

    // The second band (`rare_*`, boxes of classes outside `common_classes`) routes a frame by
    // itself: with the first band off, the bus frame goes to the hub for its bus; with every
    // label the device answers on it counted as common, it stays on the device.
    let labels: Vec<String> = a.detections.iter().map(|d| d.label.clone()).collect();
    let rare_router = |common: Vec<String>| {
        let mut cfg = cfg.clone();
        cfg.policy.models.insert(
            "detect-coco".into(),
            tandem_agent::hybrid::ModelPolicyConfig {
                uncertain_boxes: Some(1000),
                rare_low: Some(0.2),
                rare_high: Some(1.0),
                rare_boxes: Some(1),
                common_classes: Some(common),
                ..Default::default()
            },
        );
        let r = app::start_router_with(&cfg, agent_engine.clone(), None).expect("router");
        r.uplink().expect("uplink").keep();
        r
    };
    for (common, route, reason) in [
        (vec!["person".to_string()], "cloud", "low_confidence"),
        (labels.clone(), "local", "confident"),
    ] {
        let r = rare_router(common);
        let answer = r
            .classify("detect-coco", Input::Images(vec![photo(SURE).into()]), None)
            .await
            .expect("answered");
        let v = serde_json::to_value(answer.body()).expect("json");
        assert_eq!(
            (v["route"].as_str(), v["reason"].as_str()),
            (Some(route), Some(reason)),
            "{v}"
        );
        let rare = v["signals"]["rare"].as_u64().expect("rare count");
        assert_eq!(rare > 0, route == "cloud", "{v}");
    }

    // The offloaded frame's hard example reaches the hub with both sets of boxes.
    let hard = |store: &Store| {
        store
            .iter()
            .filter_map(|r| r.expect("record").example)
            .find(|e| e.reason == "low_confidence")
    };
    wait_for(
        "the hard example is stored by the hub",
        Duration::from_secs(30),
        || hard(&store).is_some(),
    )
    .await;
    let ex = hard(&store).expect("hard example");
    assert_eq!(ex.model, "detect-coco");
    let boxes = ex.boxes.expect("a detection example carries boxes");
    assert_eq!(boxes.local.as_deref(), Some(&edge_boxes[..]));
    assert_eq!(boxes.cloud.as_deref(), Some(&hub_boxes[..]));
    assert!(ex.local.is_none() && ex.cloud.is_none(), "no class outcome");
}
