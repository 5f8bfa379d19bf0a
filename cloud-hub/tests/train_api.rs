//! A training turn through the hub's HTTP API on feedback in a real store (issue 13 items 4
//! and 5): corrections of Fashion-MNIST images, half of them brightened, from two cameras;
//! `POST /v1/train` queues a job (202, Location; 409 for a second one of the model) that
//! trains on the train split and gates on the test split and the shipped set (real engine);
//! the job is polled to its decision, a failing turn is a failed job; the decision is listed
//! and shown, an operator promotes it (signed into the registry, rollout started), a second
//! promotion is refused; precise 4xx answers; operator only; `tandem-hub train run|list --hub`
//! poll the job and show the decisions.

mod common;

use common::{TOKEN, config, repo, scratch};
use serde_json::{Value, json};
use std::sync::Arc;
use tandem_hub::api::HubApi;
use tandem_hub::eval::dataset::{self, Payload};
use tandem_hub::eval::shift::Shift;
use tandem_hub::eval::store::SledReports;
use tandem_hub::feedback::{FeedbackConfig, Store};
use tandem_hub::train::Promotion;
use tandem_hub::train::http::TrainApi;
use tandem_hub::train::service::TrainService;
use tandem_shared::record::{self, ExampleKind, ExampleMeta, Record};

/// Items 8000..8900 of the shipped test set, every other one brightened, as corrections.
fn corrections() -> Vec<(String, Vec<u8>)> {
    let mut set =
        dataset::shipped(&repo().join("models/vision-fashion"), 8900).expect("shipped set");
    set.items.drain(..8000);
    let shift: Shift = "brightness:0.3".parse().expect("shift");
    set.items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let input = if i % 2 == 0 {
                shift.apply(&item.input, i as u64).expect("shift")
            } else {
                item.input.clone()
            };
            let Payload::Image(bytes) = input else {
                panic!("an image set")
            };
            let device = format!("cam-{}", i % 3);
            let rec = record::encode(&Record::Example {
                meta: Box::new(ExampleMeta {
                    kind: ExampleKind::Correction,
                    request_id: format!("r{i}"),
                    model: "vision-fashion".into(),
                    time_ms: 1_700_000_000_000 + i as u64,
                    input_kind: "image".into(),
                    reason: "correction".into(),
                    local: None,
                    cloud: None,
                    label: Some(set.labels[item.truth].clone()),
                    boxes: None,
                }),
                input: bytes.to_vec(),
            });
            (device, rec)
        })
        .collect()
}

async fn call(c: &reqwest::Client, post: bool, url: &str, body: Option<Value>) -> (u16, Value) {
    let r = if post { c.post(url) } else { c.get(url) }.bearer_auth(TOKEN);
    let r = match body {
        Some(b) => r.json(&b),
        None => r,
    };
    let r = r.send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Polls a training job until it ends (a turn takes a minute on a loaded machine; the bound
/// only stops a hung hub from hanging the test).
async fn poll(c: &reqwest::Client, url: &str) -> Value {
    for _ in 0..1200 {
        let (s, job) = call(c, false, url, None).await;
        assert_eq!(s, 200, "{job}");
        if !matches!(job["state"].as_str(), Some("queued" | "running")) {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("the job at {url} did not end in 10 minutes");
}

/// `tandem-hub train ARGS --hub BASE` with the operator token.
fn cli(dir: &std::path::Path, base: &str, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem-hub"))
            .arg("train")
            .args(args)
            .args(["--hub", base, "--token-file"])
            .arg(dir.join("tokens"))
            .output()
    })
    .expect("tandem-hub runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_turn_through_the_api() {
    let dir = scratch("train-api");
    let mut cfg = config(&["vision-fashion"]);
    std::fs::write(dir.join("tokens"), format!("{TOKEN}\n")).expect("tokens");
    cfg.http.bearer_token_file = dir.join("tokens");
    cfg.registry_dir = dir.join("registry");
    cfg.pki_dir = dir.join("pki");
    cfg.train.dir = dir.join("train");
    cfg.train.promotion = Promotion::Operator;
    cfg.train.original_items = 1000;
    // This test is about the API; the gate's figures are train_gate's.
    cfg.train.tolerance = 0.05;
    tandem_hub::pki::Pki::init(&cfg.pki_dir).expect("pki");
    let fb = FeedbackConfig {
        split_train_pct: 60,
        split_calibration_pct: 0,
        ..FeedbackConfig::default()
    };
    let store = Arc::new(
        Store::open(&dir.join("feedback"))
            .expect("store")
            .with_config(fb),
    );
    for (n, (device, rec)) in corrections().iter().enumerate() {
        store
            .ingest(device, &[(1, n as u64 + 1, rec.as_slice())])
            .expect("ingest");
    }
    let registry =
        Arc::new(tandem_hub::registry::Registry::open(&cfg.registry_dir).expect("registry"));
    let rollouts =
        tandem_hub::rollout::RolloutStore::open(&dir.join("rollouts")).expect("rollouts");
    let svc = TrainService::from_config(
        &cfg,
        Arc::new(SledReports::open(&dir.join("eval")).expect("reports")),
        Some(store.clone()),
        registry.clone(),
        Some(rollouts.clone()),
    );
    let settings = cfg.engine_settings();
    let engine =
        tokio::task::block_in_place(|| tandem_engine::engine::start(&settings, Default::default()))
            .expect("engine (make setup)")
            .1;
    let api = HubApi::new(&cfg, Arc::new(engine), None)
        .with_train(Arc::new(TrainApi::new(Arc::new(svc))));
    let (base, _stop) = common::serve_hub_api(&cfg, api).await;
    let c = reqwest::Client::new();

    // Operator only; bad requests answered precisely.
    let anon = c
        .post(format!("{base}/v1/train"))
        .json(&json!({"model": "vision-fashion"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(anon.status().as_u16(), 401);
    let (s, e) = call(
        &c,
        true,
        &format!("{base}/v1/train"),
        Some(json!({"model": "vision-fashion", "epochs": 3})),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = call(
        &c,
        true,
        &format!("{base}/v1/train"),
        Some(json!({"model": "../etc"})),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    let (s, e) = call(
        &c,
        true,
        &format!("{base}/v1/train"),
        Some(json!({"model": "no-such-model"})),
    )
    .await;
    assert_eq!(s, 404, "{e}");
    // A turn is a job: 202 at once, with where to poll; a second one for the model is 409.
    let r = c
        .post(format!("{base}/v1/train"))
        .bearer_auth(TOKEN)
        .json(&json!({"model": "vision-fashion"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 202);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    let job: Value = r.json().await.expect("job");
    assert_eq!(
        location,
        format!("/v1/train/jobs/{}", job["id"].as_str().expect("id"))
    );
    assert!(
        matches!(job["state"].as_str(), Some("queued" | "running")),
        "{job}"
    );
    let (s, e) = call(
        &c,
        true,
        &format!("{base}/v1/train"),
        Some(json!({"model": "vision-fashion"})),
    )
    .await;
    let message = e["error"].as_str().unwrap_or_default();
    assert_eq!(s, 409, "{e}");
    assert!(
        message.contains("already") && message.contains(job["id"].as_str().expect("id")),
        "{e}"
    );
    // The CLI on the hub: the same refusal while that job is active.
    let out = cli(&dir, &base, &["run", "--model", "vision-fashion"]);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already"),
        "{out:?}"
    );
    let job = poll(&c, &format!("{base}{location}")).await;
    assert_eq!(job["state"], "done", "{job}");
    let (s, d) = call(
        &c,
        false,
        &format!(
            "{base}/v1/train/decisions/{}",
            job["decision"].as_str().expect("decision id")
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(job["decision_status"], d["status"]);
    // The head's pull was chosen on held-out folds, every pull of the default grid scored.
    let grid = tandem_hub::train::TrainConfig::default().l2_grid;
    let pull = &d["candidate"]["pull"];
    assert_eq!(pull["folds"], 4, "{d}");
    assert_eq!(
        pull["scores"].as_array().map(Vec::len),
        Some(grid.len()),
        "{d}"
    );
    assert!(
        grid.iter().any(|l2| pull["l2"].as_f64() == Some(*l2)),
        "{d}"
    );
    // What fails inside a turn is the job's error (no text feedback here); the CLI polls the
    // job to its end and says why.
    let out = cli(&dir, &base, &["run", "--model", "text-sentiment"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("failed") && stderr.contains("labelled training examples"),
        "{stderr}"
    );
    let (s, all) = call(&c, false, &format!("{base}/v1/train/jobs"), None).await;
    let states: Vec<(String, String, Option<u64>)> = all["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["model"].as_str().unwrap_or_default().to_string(),
                j["state"].as_str().unwrap_or_default().to_string(),
                j["error_status"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        (s, states),
        (
            200,
            vec![
                ("vision-fashion".into(), "done".into(), None),
                ("text-sentiment".into(), "failed".into(), Some(422)),
            ]
        )
    );
    let (s, _) = call(&c, false, &format!("{base}/v1/train/jobs/nope"), None).await;
    assert_eq!(s, 404);

    // The decision: trained on corrections of the train split only.
    let examples = d["candidate"]["label_sources"]["correction"]
        .as_u64()
        .expect("corrections");
    assert_eq!(
        d["candidate"]["set"],
        "feedback:train+replay:data/replay-images-idx3-ubyte.gz"
    );
    assert_eq!(
        d["candidate"]["label_sources"],
        json!({"correction": examples, "replay": 3 * examples}),
        "replayed training images beside the corrections (train.replay_share 0.75)"
    );
    assert!(
        (400..680).contains(&examples),
        "about 60% of 900: {examples}"
    );
    let target = d["checks"][0].clone();
    assert_eq!(target["what"], "target");
    assert_eq!(
        target["n"].as_u64().expect("n") + examples,
        900,
        "train and test split share nothing"
    );
    assert!(
        d["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["what"] == "slice device=cam-1"),
        "{d}"
    );
    assert_eq!(d["status"], "awaiting_operator", "{d}");
    let id = d["id"].as_str().expect("id").to_string();

    let (s, list) = call(
        &c,
        false,
        &format!("{base}/v1/train/decisions?model=vision-fashion"),
        None,
    )
    .await;
    assert_eq!(
        (s, list["decisions"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (s, one) = call(&c, false, &format!("{base}/v1/train/decisions/{id}"), None).await;
    assert_eq!((s, &one["id"]), (200, &json!(id)));
    let (s, _) = call(&c, false, &format!("{base}/v1/train/decisions/nope"), None).await;
    assert_eq!(s, 404);

    // The operator promotes: signed into the registry, rollout started; not twice.
    let (s, p) = call(
        &c,
        true,
        &format!("{base}/v1/train/decisions/{id}/promote"),
        None,
    )
    .await;
    assert_eq!((s, &p["status"]), (200, &json!("rolled_out")), "{p}");
    let version = p["candidate"]["version"].as_str().expect("version");
    assert!(
        registry
            .get("vision-fashion", version)
            .expect("registry")
            .is_some()
    );
    let rollout = rollouts
        .get(p["rollout"].as_str().expect("rollout"))
        .expect("rollout");
    assert_eq!(rollout.spec.version, version);
    let (s, e) = call(
        &c,
        true,
        &format!("{base}/v1/train/decisions/{id}/promote"),
        None,
    )
    .await;
    assert_eq!(s, 409, "{e}");

    // The CLI against the running hub: a turn (polled to its decision, printed as a table row
    // and the checks), then the decisions.
    let out = cli(
        &dir,
        &base,
        &["run", "--model", "vision-fashion", "--limit", "30"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("| id | model |")
            && text.contains("  original: n=1000")
            && text.contains("  pull: l2 "),
        "{text}"
    );
    let out = cli(&dir, &base, &["list", "--model", "vision-fashion"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&id) && text.contains("RolledOut"), "{text}");
    assert_eq!(
        text.lines().count(),
        4,
        "header, rule, two decisions: {text}"
    );
}
