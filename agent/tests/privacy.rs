//! Face blur on real photos with faces (`models/detection-set`), with real parts: the agent
//! (ONNX Runtime, CenterFace INT8 on the device, QUIC + mTLS) offloads every frame of an image
//! model to the hub and sends each as a hard example; the hub (ONNX Runtime, sled) stores
//! what it received. The hub's own face detector (CenterFace FP32 through the engine) finds
//! faces in the originals and none in what the hub received: hard examples, shadow samples and
//! a correction. With the face detector missing, nothing leaves and the refusals are counted.

mod common;

use common::{models_dir, read_json};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tandem_agent::app;
use tandem_agent::config::Config;
use tandem_agent::feedback::Feedback;
use tandem_agent::hybrid::{ModelPolicyConfig, Router};
use tandem_agent::inference::{Engine, Input};
use tandem_agent::policy::Mode;
use tandem_agent::privacy::ModelPrivacy;
use tandem_agent::uplink::deliver;
use tandem_hub::feedback::Store;
use tandem_hub::ingress::quic::QuicIngress;
use tandem_hub::pki::Pki;
use tandem_shared::record::ExampleKind;
use tandem_tests::metrics::{family, one, parse, scrape_text};
use tandem_tests::wait::wait_for;

const MODEL: &str = "vision-imagenet";

/// The hub's engine: the cloud variants of the image classifier and of the face detector.
fn hub_engine() -> Arc<Engine> {
    let mut s = tandem_engine::settings::EngineSettings {
        base_dir: common::repo(),
        ..Default::default()
    };
    s.models.enabled = vec![MODEL.into(), "detect-face".into()];
    s.models.variant = "cloud".into();
    let (_, engine) = tandem_engine::engine::start(&s, Default::default()).expect("hub engine");
    Arc::new(engine)
}

/// Faces the hub's detector finds in `image`.
async fn faces(hub: &Engine, image: Vec<u8>) -> usize {
    let inf = hub
        .infer("detect-face", Input::Images(vec![image.into()]))
        .await
        .expect("the hub's face detector runs");
    inf.detections.first().expect("one row").boxes.len()
}

/// The labelled photos with at least one face box.
fn photos_with_faces() -> Vec<String> {
    let set = read_json(&models_dir().join("detection-set/labels.json"));
    set["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|i| i["faces"].as_array().is_some_and(|f| !f.is_empty()))
        .map(|i| i["file"].as_str().expect("file").to_string())
        .collect()
}

fn photo(file: &str) -> Vec<u8> {
    std::fs::read(models_dir().join("detection-set").join(file)).expect("photo")
}

/// Stored examples: (request id, kind, input bytes).
fn received(store: &Store) -> Vec<(String, ExampleKind, Vec<u8>)> {
    store
        .iter()
        .map(|r| r.expect("record"))
        .filter_map(|r| {
            let e = r.example.as_ref()?;
            let input = std::fs::read(store.dir().join(r.input.as_ref()?)).expect("input file");
            Some((e.request_id.clone(), e.kind, input))
        })
        .collect()
}

/// A real hub in process: QUIC + mTLS with a development PKI (device `cam-01`), the engine of
/// [`hub_engine`], a feedback store; in a fresh folder `tandem-privacy-<tag>-XXXXXX`, removed
/// when `_tmp` drops (last, after the store).
struct Hub {
    dir: std::path::PathBuf,
    pki: Pki,
    engine: Arc<Engine>,
    store: Arc<Store>,
    addr: SocketAddr,
    _tmp: tempfile::TempDir,
}

fn start_hub(tag: &str) -> Hub {
    let (tmp, dir) = common::tmp_dir(&format!("privacy-{tag}"));
    let pki = Pki::init(&dir.join("pki")).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let engine = hub_engine();
    let store = Arc::new(Store::open(&dir.join("hub-feedback")).expect("hub store"));
    let ingress = QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), pki.dir())
        .expect("bind hub")
        .with_engine(engine.clone())
        .with_feedback(store.clone());
    let addr = ingress.local_addr().expect("addr");
    tokio::spawn(ingress.run(std::future::pending::<()>()));
    Hub {
        dir,
        pki,
        engine,
        store,
        addr,
        _tmp: tmp,
    }
}

/// An agent of `cfg` serving its API, its feedback queue delivering to the hub.
async fn start_agent(cfg: &tandem_agent::config::Config) -> (String, Arc<Router>) {
    let engine = app::start_engine(cfg).expect("agent engine");
    let queue = app::open_queue(cfg).expect("queue");
    let wake = Arc::new(tokio::sync::Notify::new());
    let fb = Feedback::start(queue.clone(), cfg.feedback.clone(), wake.clone());
    let router = app::start_router_with(cfg, engine, Some(fb)).expect("router");
    let uplink = router.uplink().expect("uplink").clone();
    uplink.keep();
    tokio::spawn(deliver::run(Arc::downgrade(&uplink), queue, wake));
    (common::serve_api(cfg, router.clone()).await, router)
}

fn agent_config(dir: &Path, pki: &Pki, hub: SocketAddr, tag: &str) -> Config {
    // Only the classifier is named: the face detector is loaded because the blur needs it.
    let mut cfg = common::config(&[MODEL], "edge", &["cpu"]);
    cfg.hub.address = hub.to_string();
    cfg.hub.ca = pki.dir().join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.queue.dir = dir.join(format!("queue-{tag}"));
    // A debug build on a shared 2-core machine: the blur of a 3-megapixel photo takes a while.
    cfg.server.request_timeout_ms = 120_000;
    cfg.hub.timeout_ms = 60_000;
    // Every answer is under the threshold: every frame is offloaded and kept as a hard example.
    cfg.policy.models.insert(
        MODEL.into(),
        ModelPolicyConfig {
            threshold: Some(1.0),
            ..Default::default()
        },
    );
    // A classifier: the blur is off by default, on by the per-model switch.
    cfg.privacy
        .models
        .insert(MODEL.into(), ModelPrivacy { blur_faces: true });
    cfg.feedback.max_per_minute = 0;
    cfg.feedback.max_per_hour = 0;
    cfg.feedback.shadow_enabled = true;
    cfg.feedback.shadow_rate = 1.0;
    cfg.feedback.shadow_max_per_minute = 0;
    cfg.feedback.shadow_max_bytes_per_hour = 0;
    cfg
}

async fn post(c: &reqwest::Client, base: &str, body: Vec<u8>) -> Value {
    let r = c
        .post(format!("{base}/v1/classify/{MODEL}"))
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let v = r.json::<Value>().await.expect("json");
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_finds_no_face_in_what_the_agent_sends() {
    let Hub {
        dir,
        pki,
        engine: hub,
        store,
        addr: hub_addr,
        _tmp,
    } = start_hub("examples");
    let (base, router) = start_agent(&agent_config(&dir, &pki, hub_addr, "on")).await;
    let c = reqwest::Client::new();

    // The photos whose original the hub's detector finds faces in (it misses a few, e.g. a
    // face in profile: those could not show anything).
    let mut files = Vec::new();
    let mut original_faces = 0;
    for f in photos_with_faces() {
        let n = faces(&hub, photo(&f)).await;
        if n == 0 {
            eprintln!("{f}: the hub's detector finds no face in the original; not used");
            continue;
        }
        original_faces += n;
        files.push(f);
    }
    assert!(files.len() >= 20, "{files:?}");
    // Offloads and hard examples.
    let mut sent = Vec::new();
    for f in &files {
        let v = post(&c, &base, photo(f)).await;
        assert_eq!(v["route"], "cloud", "{f}: {v}");
        assert_eq!(v["degraded"], false, "{f}: {v}");
        sent.push((f.clone(), v["request_id"].as_str().expect("id").to_string()));
    }
    // Confident answers now: each is a shadow sample; the first is corrected by a person.
    router
        .update_policy(Some(MODEL), None, None, Some(0.0))
        .expect("threshold");
    for f in files.iter().take(3) {
        let v = post(&c, &base, photo(f)).await;
        assert_eq!(v["route"], "local", "{f}: {v}");
        sent.push((f.clone(), v["request_id"].as_str().expect("id").to_string()));
        if sent.len() == files.len() + 1 {
            let r = c
                .post(format!("{base}/v1/feedback"))
                .json(&json!({"request_id": v["request_id"], "label": v["label"]}))
                .send()
                .await
                .expect("correction");
            assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
        }
    }
    let expected = files.len() + 3 + 1;
    let patience = Duration::from_secs(120);
    wait_for("every example is stored by the hub", patience, || {
        received(&store).len() == expected
    })
    .await;

    let stored = received(&store);
    let mut kinds = Vec::new();
    for (file, id) in &sent {
        for (_, kind, input) in stored.iter().filter(|(r, ..)| r == id) {
            assert_ne!(input, &photo(file), "{file} left as it came ({kind:?})");
            let left = faces(&hub, input.clone()).await;
            assert_eq!(
                left, 0,
                "the hub's detector finds {left} face(s) in {file} ({kind:?})"
            );
            kinds.push(*kind);
        }
    }
    for k in [
        ExampleKind::Hard,
        ExampleKind::Shadow,
        ExampleKind::Correction,
    ] {
        assert!(kinds.contains(&k), "no {k:?} checked: {kinds:?}");
    }
    assert_eq!(kinds.len(), expected);
    let m = parse(&scrape_text(&c, &base).await);
    let n = files.len() as f64;
    // Each offload and each example went through the blur (the same photo, the same faces).
    assert!(
        one(&m, "tandem_privacy_images_blurred_total") >= 2.0 * n + 4.0,
        "{m:?}"
    );
    assert!(one(&m, "tandem_privacy_faces_blurred_total") >= 2.0 * n + 4.0);
    assert_eq!(family(&m, "tandem_privacy_refused_total"), 0.0);
    eprintln!(
        "{} photos, {original_faces} faces found by the hub in the originals, 0 in the {expected} images it received",
        files.len()
    );

    // Fail closed: without the face detector nothing leaves; the answers stay local.
    let mut cfg = agent_config(&dir, &pki, hub_addr, "off");
    cfg.privacy.face_model = "no-such-model".into();
    let (base, _router) = start_agent(&cfg).await;
    for f in files.iter().take(2) {
        let v = post(&c, &base, photo(f)).await;
        assert_eq!(v["route"], "local", "{f}: {v}");
        assert_eq!(v["degraded"], true);
        assert_eq!(v["reason"], "blur_failed", "{v}");
    }
    let m = parse(&scrape_text(&c, &base).await);
    assert_eq!(
        one(&m, "tandem_privacy_refused_total{path=\"offload\"}"),
        2.0
    );
    assert_eq!(one(&m, "tandem_privacy_images_checked_total"), 0.0);
    assert_eq!(
        received(&store).len(),
        expected,
        "nothing more reached the hub"
    );
}

/// The offloaded frame itself: a face detection model whose every frame goes to the hub. The
/// hub runs its CenterFace FP32 on what it received and sends its boxes back: none, while the
/// device's CenterFace INT8 found faces in the same photo before the blur.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offloaded_frame_reaches_the_hub_with_its_faces_blurred() {
    let h = start_hub("offload");
    let mut cfg = agent_config(&h.dir, &h.pki, h.addr, "offload");
    cfg.models.enabled = vec!["detect-face".into()];
    cfg.privacy = Default::default(); // detection models: on by default
    cfg.policy.models.insert(
        "detect-face".into(),
        ModelPolicyConfig {
            mode: Some(Mode::Cloud),
            ..Default::default()
        },
    );
    let (base, _router) = start_agent(&cfg).await;
    let c = reqwest::Client::new();
    let mut offloaded = 0;
    for f in photos_with_faces().iter().take(12) {
        if faces(&h.engine, photo(f)).await == 0 {
            continue;
        }
        let r = c
            .post(format!("{base}/v1/detect/detect-face"))
            .body(photo(f))
            .send()
            .await
            .expect("request");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["route"], "cloud", "{f}: {v}");
        assert_eq!(v["degraded"], false, "{f}: {v}");
        let local = v["local"]["detections"].as_array().map_or(0, Vec::len);
        assert!(local > 0, "{f}: the device finds no face: {v}");
        let hub = v["detections"].as_array().expect("the hub's boxes");
        assert!(
            hub.is_empty(),
            "{f}: the hub finds {} face(s) in what it received",
            hub.len()
        );
        offloaded += 1;
    }
    assert!(offloaded >= 8, "{offloaded} frames checked");
    let m = parse(&scrape_text(&c, &base).await);
    assert_eq!(
        one(&m, "tandem_privacy_images_blurred_total"),
        f64::from(offloaded)
    );
}
