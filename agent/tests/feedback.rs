//! The data loop on loopback with real parts (ONNX Runtime on both sides, QUIC + mTLS, sled on
//! both sides): the cascade's hard examples are queued on the device, delivered to the hub and
//! stored there once, with both models' answers and the raw input; a person's correction
//! through `POST /v1/feedback` follows the same path; while the hub is away the records wait
//! in the queue, and when it returns every one arrives exactly once; the hub exports a dataset.

mod common;

use common::{hub_engine, models_dir, read_json};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tandem_agent::app;
use tandem_agent::feedback::Feedback;
use tandem_agent::uplink::deliver;
use tandem_hub::feedback::{ExportFormat, Store};
use tandem_hub::ingress::quic::QuicIngress;
use tandem_hub::pki::Pki;
use tandem_tests::metrics::scrape_text;

/// A fresh temporary folder for one test ([`common::tmp_dir`]: its guard first, to be held to
/// the test's end) with a development PKI in it and the device `cam-01` issued.
fn fresh_pki(tag: &str) -> (tempfile::TempDir, std::path::PathBuf, Pki) {
    let (tmp, dir) = common::tmp_dir(tag);
    let pki = Pki::init(&dir.join("pki")).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    (tmp, dir, pki)
}

fn start_hub(
    pki: &Pki,
    addr: std::net::SocketAddr,
    store: Arc<Store>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let ingress = QuicIngress::bind(addr, pki.dir())
        .expect("bind hub")
        .with_engine(hub_engine())
        .with_feedback(store);
    let bound = ingress.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ingress.run(async {
        let _ = rx.await;
    }));
    (bound, tx, task)
}

/// The agent of `cfg` with feedback on and its queue delivering to the hub, serving its API:
/// (base URL, feedback, queue).
async fn start_agent(
    cfg: &tandem_agent::config::Config,
) -> (String, Arc<Feedback>, Arc<dyn tandem_agent::queue::Queue>) {
    let engine = app::start_engine(cfg).expect("agent engine");
    let queue = app::open_queue(cfg).expect("queue");
    let wake = Arc::new(tokio::sync::Notify::new());
    let fb = Feedback::start(queue.clone(), cfg.feedback.clone(), wake.clone());
    let router = app::start_router_with(cfg, engine, Some(fb.clone())).expect("router");
    let uplink = router.uplink().expect("uplink").clone();
    uplink.keep();
    tokio::spawn(deliver::run(Arc::downgrade(&uplink), queue.clone(), wake));
    let base = common::serve_api(cfg, router).await;
    (base, fb, queue)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn examples(store: &Store) -> Vec<tandem_hub::feedback::StoredRecord> {
    store
        .iter()
        .map(|r| r.expect("record"))
        .filter(|r| r.kind == "example")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_examples_and_corrections_reach_the_hub_once() {
    let (_tmp, dir, pki) = fresh_pki("feedback");
    let store = Arc::new(Store::open(&dir.join("hub-feedback")).expect("hub store"));
    let (hub_addr, stop, task) =
        start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), store.clone());

    let mut cfg = common::config(&["vision-fashion"], "edge", &["cpu"]);
    cfg.hub.address = hub_addr.to_string();
    cfg.hub.ca = pki.dir().join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.queue.dir = dir.join("agent-queue");
    let (base, fb, queue) = start_agent(&cfg).await;
    let c = reqwest::Client::new();
    let classify = |file: String| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            let body =
                std::fs::read(models_dir().join("vision-fashion").join(&file)).expect("sample");
            let r = c
                .post(format!("{base}/v1/classify/vision-fashion"))
                .body(body)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.expect("json")
        }
    };

    // Every edge case under the threshold is offloaded: each becomes a hard example.
    let expected = read_json(&models_dir().join("vision-fashion/testdata/expected.json"));
    let edge: Vec<String> = expected["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|k| k["variant"] == "edge")
        .map(|k| k["input"].as_str().expect("input").to_string())
        .collect();
    let mut hard = Vec::new();
    let mut confident_id = None;
    for f in &edge {
        let v = classify(f.clone()).await;
        if v["route"] == "cloud" {
            hard.push((f.clone(), v));
        } else if confident_id.is_none() {
            confident_id = Some(v["request_id"].as_str().expect("id").to_string());
        }
    }
    assert!(!hard.is_empty(), "no hard example in the samples");
    until("every hard example is stored by the hub", || {
        examples(&store).len() == hard.len()
    })
    .await;
    for (file, answer) in &hard {
        let stored = examples(&store);
        let r = stored
            .iter()
            .find(|r| {
                r.example
                    .as_ref()
                    .is_some_and(|e| e.request_id == answer["request_id"])
            })
            .unwrap_or_else(|| panic!("{file} not stored"));
        let ex = r.example.as_ref().expect("example");
        assert_eq!(
            r.device, "cam-01",
            "the identity comes from the certificate"
        );
        assert_eq!(ex.reason, "low_confidence");
        assert_eq!(ex.cloud.as_ref().expect("cloud").label, answer["label"]);
        assert_eq!(
            ex.local.as_ref().expect("local").label,
            answer["local"]["label"]
        );
        let input =
            std::fs::read(store.dir().join(r.input.as_ref().expect("input"))).expect("input file");
        assert_eq!(
            input,
            std::fs::read(models_dir().join("vision-fashion").join(file)).expect("sample")
        );
    }

    // A correction of a confident answer: checked, queued on disk, delivered.
    let id = confident_id.expect("a confident answer");
    let bad = c
        .post(format!("{base}/v1/feedback"))
        .json(&json!({"request_id": id, "label": "Spaceship"}))
        .send()
        .await
        .expect("post");
    assert_eq!(
        bad.status().as_u16(),
        400,
        "a label the model does not have"
    );
    let unknown = c
        .post(format!("{base}/v1/feedback"))
        .json(&json!({"request_id": "nope", "label": "Bag"}))
        .send()
        .await
        .expect("post");
    assert_eq!(unknown.status().as_u16(), 404);
    let ok = c
        .post(format!("{base}/v1/feedback"))
        .json(&json!({"request_id": id, "label": "Bag"}))
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status().as_u16(), 202, "{:?}", ok.text().await);
    // One correction per request: a second one is refused, and says which one stands.
    let again = c
        .post(format!("{base}/v1/feedback"))
        .json(&json!({"request_id": id, "label": "Coat"}))
        .send()
        .await
        .expect("post");
    assert_eq!(again.status().as_u16(), 409);
    let text = again.text().await.expect("body");
    assert!(text.contains("already corrected"), "{text}");
    until("the correction is stored by the hub", || {
        examples(&store).iter().any(|r| {
            r.example
                .as_ref()
                .is_some_and(|e| e.request_id == id && e.label.as_deref() == Some("Bag"))
        })
    })
    .await;

    // The hub goes away: answers stay local (degraded) and their examples wait in the queue.
    let _ = stop.send(());
    let _ = task.await;
    let before = examples(&store).len();
    let mut waiting = 0;
    for (file, _) in &hard {
        let v = classify(file.clone()).await;
        assert_eq!(v["degraded"], true);
        waiting += 1;
    }
    until("the degraded examples are on disk in the queue", || {
        fb.stats().queued.load(std::sync::atomic::Ordering::Relaxed) as usize
            >= hard.len() + waiting
    })
    .await;
    assert!(
        queue.stats().depth() >= waiting as u64,
        "{:?}",
        queue.stats()
    );
    assert_eq!(examples(&store).len(), before);

    // It returns (same address): everything arrives, once.
    let (_a, _stop2, _task2) = start_hub(&pki, hub_addr, store.clone());
    until("the queue drains into the hub", || {
        examples(&store).len() == before + waiting && queue.stats().depth() == 0
    })
    .await;
    let degraded = examples(&store)
        .iter()
        .filter(|r| {
            r.example
                .as_ref()
                .is_some_and(|e| e.reason == "hub_unreachable")
        })
        .count();
    assert_eq!(degraded, waiting);
    let mut keys: Vec<(u64, u64)> = store
        .iter()
        .map(|r| r.expect("r"))
        .map(|r| (r.epoch, r.seq))
        .collect();
    let n = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "no record stored twice");

    // The agent's /metrics report the same story.
    let metrics = scrape_text(&c, &base).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(value("tandem_feedback_corrections_total "), 1.0);
    assert!(
        value("tandem_outbox_delivered_total ") as usize >= before + waiting,
        "every stored record was acknowledged"
    );
    assert_eq!(value("tandem_outbox_records{class=\"hard_example\"} "), 0.0);
    assert_eq!(value("tandem_hub_connected "), 1.0);

    // The dataset export.
    let out = dir.join("export");
    let sum = store.export(&out, ExportFormat::Jsonl).expect("export");
    assert_eq!(sum.examples, before + waiting);
    assert_eq!(sum.corrections, 1);
    let lines = std::fs::read_to_string(out.join("dataset.jsonl")).expect("dataset");
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        let input = out.join(v["input"].as_str().expect("input path"));
        assert!(input.is_file(), "{} exported", input.display());
    }
}

/// A hub whose feedback store refuses more than ~2 records a window: the agent's records wait
/// in its queue through the `Busy` refusals and all arrive, each once. The agent honours each
/// refusal's `retry_after_ms` (the rest of the window): one refusal per window, not a retry
/// every few hundred milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_hub_quota_wait_and_arrive_later() {
    use tandem_agent::queue::Class;
    use tandem_shared::record::{self, Record};
    let (_tmp, dir, pki) = fresh_pki("quota");
    let quota = tandem_hub::feedback::FeedbackConfig {
        quota_bytes_per_device: 250_000,
        quota_window_ms: 2_000,
        ..Default::default()
    };
    let store = Arc::new(
        Store::open(&dir.join("hub-feedback"))
            .expect("hub store")
            .with_config(quota),
    );
    let ingress = QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), pki.dir())
        .expect("bind hub")
        .with_feedback(store.clone());
    let hub_addr = ingress.local_addr().expect("addr");
    let hub_stats = ingress.stats();
    tokio::spawn(ingress.run(std::future::pending()));

    let mut cfg = common::config(&["vision-fashion"], "edge", &["cpu"]);
    cfg.hub.address = hub_addr.to_string();
    cfg.hub.ca = pki.dir().join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.queue.dir = dir.join("agent-queue");
    let queue = app::open_queue(&cfg).expect("queue");
    let records = 10u64;
    for i in 0..records {
        let payload = record::encode(&Record::Event(
            json!({ "i": i, "pad": "x".repeat(100_000) }),
        ));
        queue
            .submit(Class::Event, payload)
            .expect("submit")
            .accepted()
            .await
            .expect("append");
    }
    let uplink =
        Arc::new(tandem_agent::uplink::Uplink::new(&cfg.hub, |p| p.to_path_buf()).expect("uplink"));
    uplink.keep();
    let wake = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(deliver::run(Arc::downgrade(&uplink), queue.clone(), wake));
    tandem_tests::wait_for("every record stored", Duration::from_secs(120), || {
        store.len() as u64 == records
    })
    .await;
    // Two records fit a window: 5 windows, a refusal ending each of the first 4. An agent that
    // retried on its own backoff (200 ms doubling) would be refused several times a window.
    let refused = hub_stats
        .limits
        .over_quota
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("{refused} quota refusals for {records} records");
    assert!(refused > 0, "the quota refused some deliveries on the way");
    assert!(
        refused <= records / 2,
        "{refused} refusals for {records} records: the agent did not wait out the window"
    );
    let mut seen: Vec<u64> = store
        .iter()
        .map(|r| {
            r.expect("record").payload.expect("payload")["i"]
                .as_u64()
                .expect("i")
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..records).collect::<Vec<_>>(), "each record once");
    tandem_tests::wait_for("the agent's queue drained", Duration::from_secs(30), || {
        uplink
            .delivery_stats()
            .acked
            .load(std::sync::atomic::Ordering::Relaxed)
            >= records
    })
    .await;
}

/// Shadow samples (issue 13 item 2): with the switch on, confident answers are still answered
/// locally, and a rate-, count- and byte-limited share of their inputs reaches the hub as
/// `shadow` examples (the local answer only); the hub's teacher judges them with the cloud
/// model once, and the examples collapsed by input carry its label. Off (the default): none
/// leave the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_samples_are_limited_and_judged_by_the_cloud_model() {
    let (_tmp, dir, pki) = fresh_pki("shadow");
    let store = Arc::new(Store::open(&dir.join("hub-feedback")).expect("hub store"));
    let (hub_addr, _stop, _task) =
        start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), store.clone());
    let mut files: Vec<String> = std::fs::read_dir(models_dir().join("vision-fashion/samples"))
        .expect("samples")
        .map(|e| {
            format!(
                "samples/{}",
                e.expect("entry").file_name().to_string_lossy()
            )
        })
        .collect();
    files.sort();

    for (on, device) in [(false, "cam-off"), (true, "cam-01")] {
        let mut cfg = common::config(&["vision-fashion"], "edge", &["cpu"]);
        cfg.hub.address = hub_addr.to_string();
        cfg.hub.ca = pki.dir().join("ca.pem");
        pki.add_device(device, 365).ok();
        (cfg.hub.cert, cfg.hub.key) = pki.device_files(device);
        cfg.queue.dir = dir.join(format!("queue-{device}"));
        // Every answer confident: none is offloaded, none is a hard example.
        cfg.policy.models.insert(
            "vision-fashion".into(),
            tandem_agent::hybrid::ModelPolicyConfig {
                threshold: Some(0.0),
                ..Default::default()
            },
        );
        cfg.feedback.shadow_enabled = on;
        cfg.feedback.shadow_rate = 1.0;
        cfg.feedback.shadow_max_per_minute = 3;
        let (base, fb, _queue) = start_agent(&cfg).await;
        let c = reqwest::Client::new();
        for f in &files {
            let body = std::fs::read(models_dir().join("vision-fashion").join(f)).expect("sample");
            let r = c
                .post(format!("{base}/v1/classify/vision-fashion"))
                .body(body)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 200);
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["route"], "local", "{f}: answered locally as usual");
        }
        let want = if on { 3 } else { 0 };
        assert_eq!(
            fb.stats().shadow.load(std::sync::atomic::Ordering::Relaxed),
            want,
            "3 a minute at rate 1.0 (10 confident answers)"
        );
    }
    until("the shadow samples are stored by the hub", || {
        examples(&store).len() >= 3
    })
    .await;
    let shadows: Vec<_> = examples(&store);
    assert_eq!(shadows.len(), 3, "the switch off sends none");
    for r in &shadows {
        let ex = r.example.as_ref().expect("example");
        assert_eq!(r.device, "cam-01");
        assert_eq!(ex.kind, tandem_shared::record::ExampleKind::Shadow);
        assert!(ex.local.is_some() && ex.cloud.is_none(), "{ex:?}");
        assert_eq!(ex.reason, "confident");
    }
    // The hub's teacher: each judged once by the cloud model, then the label of its example.
    let cloud = common::hub_engine();
    let judged = tokio::task::block_in_place(|| {
        tandem_hub::feedback::teacher::judge_pending(&store, &cloud).expect("teacher")
    });
    assert_eq!(judged, 3);
    let again = tokio::task::block_in_place(|| {
        tandem_hub::feedback::teacher::judge_pending(&store, &cloud).expect("teacher")
    });
    assert_eq!(again, 0, "the cursor moved past them");
    let page = store
        .examples_after(None, 100, &tandem_hub::feedback::ExampleFilter::default())
        .expect("examples");
    assert_eq!(page.items.len(), 3);
    for e in &page.items {
        assert_eq!(
            e.label_source,
            Some(tandem_hub::feedback::Labelled::Teacher)
        );
        let stored = std::fs::read(store.dir().join(&e.input)).expect("stored input");
        let file = files
            .iter()
            .find(|f| {
                std::fs::read(models_dir().join("vision-fashion").join(f)).ok()
                    == Some(stored.clone())
            })
            .expect("one of the samples");
        // What Python onnxruntime answered with the cloud model (testdata/expected.json).
        let expected = read_json(&models_dir().join("vision-fashion/testdata/expected.json"));
        let want = expected["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|k| k["variant"] == "cloud" && k["input"] == file.as_str())
            .map(|k| k["top1"].as_str().expect("top1").to_string())
            .expect("an expected cloud answer");
        // No record carries a cloud answer: the label is the teacher's.
        assert_eq!(e.label.as_deref(), Some(want.as_str()), "{file}");
    }
}
