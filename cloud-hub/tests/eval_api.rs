//! Evaluation and the feedback store through the hub's HTTP API (issue 13 items 1 and 6):
//! feedback delivered from two devices (hard examples with the cloud model's answer, a
//! duplicate input, a correction) is listed by cursor (every record once, new ones after the
//! cursor; newest first backwards), collapsed by input with its label (correction over teacher), linked (correction ↔
//! answer) and fetched; an evaluation on it and one on the shipped test set (real engine) are
//! stored, listed and shown as a table; bad requests get precise 4xx answers; operator only.

mod common;

use common::{TOKEN, config, repo, scratch};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use tandem_hub::api::HubApi;
use tandem_hub::eval::Evaluator;
use tandem_hub::eval::http::EvalApi;
use tandem_hub::eval::store::SledReports;
use tandem_hub::feedback::{FeedbackConfig, Store};
use tandem_shared::record::{self, ExampleKind, ExampleMeta, Outcome, Record};

const LABELS: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

fn outcome(index: usize, score: f32) -> Outcome {
    Outcome {
        version: "1.0.0".into(),
        label: LABELS[index].into(),
        index,
        score,
        top_k: vec![],
    }
}

/// A hard example of `sample` (`<n>_<class>.png`) whose cloud answer is `cloud`.
fn example(
    sample: &str,
    request: &str,
    kind: ExampleKind,
    cloud: Option<usize>,
    label: Option<usize>,
) -> Vec<u8> {
    let input =
        std::fs::read(repo().join("models/vision-fashion/samples").join(sample)).expect("sample");
    record::encode(&Record::Example {
        meta: Box::new(ExampleMeta {
            kind,
            request_id: request.into(),
            model: "vision-fashion".into(),
            time_ms: 1_700_000_000_000,
            input_kind: "image".into(),
            reason: "low_confidence".into(),
            local: Some(outcome(0, 0.4)),
            cloud: cloud.map(|c| outcome(c, 0.9)),
            label: label.map(|l| LABELS[l].to_string()),
            boxes: None,
        }),
        input,
    })
}

fn class_of(sample: &str) -> usize {
    sample
        .trim_end_matches(".png")
        .rsplit('_')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("name")
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).bearer_auth(TOKEN).send().await.expect("GET");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Every record after `cursor`, pages of 3; (ids, last cursor).
async fn drain(c: &reqwest::Client, base: &str, mut cursor: u64) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    loop {
        let (s, page) = get(
            c,
            &format!("{base}/v1/feedback/records?after={cursor}&limit=3"),
        )
        .await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        ids.extend(
            items
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_string()),
        );
        cursor = page["cursor"].as_u64().expect("cursor");
        if !page["more"].as_bool().expect("more") {
            return (ids, cursor);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_listed_by_cursor_and_evaluated() {
    let dir = scratch("eval-api");
    let mut cfg = config(&["vision-fashion"]);
    std::fs::write(dir.join("tokens"), format!("{TOKEN}\n")).expect("tokens");
    cfg.http.bearer_token_file = dir.join("tokens");
    // Every input in the test split, so the evaluation below sees them all.
    let fb = FeedbackConfig {
        split_train_pct: 0,
        split_calibration_pct: 0,
        ..FeedbackConfig::default()
    };
    let store = Arc::new(
        Store::open(&dir.join("feedback"))
            .expect("store")
            .with_config(fb),
    );

    let samples = [
        "0_9.png", "1_2.png", "2_1.png", "4_6.png", "6_4.png", "8_5.png",
    ];
    // cam-1: hard examples, the cloud answering the true class; cam-2: the first input again.
    let batch: Vec<Vec<u8>> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            example(
                s,
                &format!("r{i}"),
                ExampleKind::Hard,
                Some(class_of(s)),
                None,
            )
        })
        .collect();
    let refs: Vec<(u64, u64, &[u8])> = batch
        .iter()
        .enumerate()
        .map(|(i, b)| (1, i as u64 + 1, b.as_slice()))
        .collect();
    store.ingest("cam-1", &refs).expect("ingest");
    let dup = example(
        samples[0],
        "q1",
        ExampleKind::Hard,
        Some(class_of(samples[0])),
        None,
    );
    store.ingest("cam-2", &[(1, 1, &dup)]).expect("ingest");

    let settings = cfg.engine_settings();
    let engine =
        tokio::task::block_in_place(|| tandem_engine::engine::start(&settings, Default::default()))
            .expect("engine (make setup)")
            .1;
    let evaluator = Evaluator {
        settings: cfg.engine_settings(),
        cfg: cfg.eval.clone(),
        reports: Arc::new(SledReports::open(&dir.join("eval")).expect("reports")),
        feedback: Some(store.clone()),
    };
    let api = HubApi::new(&cfg, Arc::new(engine), None)
        .with_feedback(store.clone())
        .with_eval(Arc::new(EvalApi::new(Arc::new(evaluator), None)));
    let (base, _stop) = common::serve_hub_api(&cfg, api).await;
    let c = reqwest::Client::new();

    // Operator only.
    let anon = c
        .get(format!("{base}/v1/feedback/records"))
        .send()
        .await
        .expect("GET");
    assert_eq!(anon.status().as_u16(), 401);

    // Every record once, in arrival order; then only what arrived after the cursor.
    let (ids, cursor) = drain(&c, &base, 0).await;
    let mut want: Vec<String> = (1..=6).map(|s| format!("cam-1/1/{s}")).collect();
    want.push("cam-2/1/1".into());
    assert_eq!(ids, want);
    // A correction of cam-1's request r3 (sample 4_6: a Shirt), which says it is a Coat.
    let fix = example(samples[3], "r3", ExampleKind::Correction, None, Some(4));
    store.ingest("cam-1", &[(1, 7, &fix)]).expect("ingest");
    let (more, _) = drain(&c, &base, cursor).await;
    assert_eq!(more, vec!["cam-1/1/7".to_string()]);
    // Newest first, pages of 3 from the cursor `before`: the same records backwards.
    let (mut newest, mut before) = (Vec::new(), 0);
    loop {
        let (s, page) = get(
            &c,
            &format!("{base}/v1/feedback/records?order=newest&before={before}&limit=3"),
        )
        .await;
        assert_eq!(s, 200, "{page}");
        newest.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_string()),
        );
        before = page["cursor"].as_u64().expect("cursor");
        if page["more"] != true {
            break;
        }
    }
    let mut all = want.clone();
    all.extend(more);
    all.reverse();
    assert_eq!(newest, all);

    // Links both ways; duplicates counted.
    let (_, page) = get(
        &c,
        &format!("{base}/v1/feedback/records?after=0&limit=1000"),
    )
    .await;
    let by_id = |id: &str| {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .expect(id)
    };
    assert_eq!(by_id("cam-1/1/7")["corrects"], "cam-1/1/4");
    assert_eq!(by_id("cam-1/1/4")["corrected_by"], json!(["cam-1/1/7"]));
    assert_eq!(by_id("cam-1/1/1")["copies"], 2);
    assert_eq!(by_id("cam-1/1/2")["copies"], 1);
    assert_eq!(by_id("cam-1/1/1")["split"], "test");

    // Collapsed by input: 6 inputs; the corrected one labelled by the correction.
    let (s, ex) = get(
        &c,
        &format!("{base}/v1/feedback/examples?model=vision-fashion&limit=1000"),
    )
    .await;
    assert_eq!(s, 200, "{ex}");
    let ex = ex["items"].as_array().expect("items").clone();
    assert_eq!(ex.len(), 6);
    let digests: BTreeSet<&str> = ex
        .iter()
        .map(|e| e["digest"].as_str().expect("digest"))
        .collect();
    assert_eq!(digests.len(), 6);
    let corrected = ex
        .iter()
        .find(|e| e["label_source"] == "correction")
        .expect("the correction");
    assert_eq!(
        (corrected["label"].as_str(), corrected["copies"].as_u64()),
        (Some("Coat"), Some(2))
    );
    let twice = ex
        .iter()
        .find(|e| e["devices"] == json!(["cam-1", "cam-2"]))
        .expect("duplicate");
    assert_eq!(
        (twice["copies"].as_u64(), twice["label_source"].as_str()),
        (Some(2), Some("teacher"))
    );
    let d = twice["digest"].as_str().expect("digest");
    let bytes = c
        .get(format!("{base}/v1/feedback/inputs/{d}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(bytes.status().as_u16(), 200);
    let want = std::fs::read(
        repo()
            .join("models/vision-fashion/samples")
            .join(samples[0]),
    )
    .expect("sample");
    assert_eq!(bytes.bytes().await.expect("body").as_ref(), want.as_slice());
    for (url, status) in [
        ("/v1/feedback/inputs/nothex", 400),
        (&format!("/v1/feedback/inputs/{}", "0".repeat(64)), 404),
        ("/v1/feedback/records?limit=0", 400),
        ("/v1/feedback/records?after=x", 400),
        ("/v1/feedback/records?order=sideways", 400),
        ("/v1/feedback/records?order=newest&after=3", 400),
        ("/v1/feedback/records?before=3", 400),
        ("/v1/feedback/examples?split=validation", 400),
    ] {
        let (s, body) = get(&c, &format!("{base}{url}")).await;
        assert_eq!(s, status, "{url}: {body}");
    }

    // An evaluation of the edge model on that feedback: 5 teacher labels, 1 correction.
    let post = |body: Value, q: &str| {
        c.post(format!("{base}/v1/eval{q}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let r = post(
        json!({"model": "vision-fashion", "set": "feedback", "shifts": []}),
        "",
    )
    .await
    .expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    let report: Value = r.json().await.expect("report");
    assert_eq!(report["version"], "1.0.0");
    assert_eq!(report["set"]["name"], "feedback:test");
    assert_eq!(
        report["set"]["label_sources"],
        json!({"correction": 1, "teacher": 5})
    );
    let slices: BTreeSet<String> = report["slices"]
        .as_array()
        .expect("slices")
        .iter()
        .map(|s| {
            format!(
                "{}={}",
                s["kind"].as_str().unwrap_or(""),
                s["value"].as_str().unwrap_or("")
            )
        })
        .collect();
    for s in [
        "device=cam-1",
        "label_source=correction",
        "label_source=teacher",
        "window=2023-11-14T22:00:00Z",
    ] {
        assert!(slices.contains(s), "{s} in {slices:?}");
    }
    let n: u64 = report["overall"]["confusion"]
        .as_array()
        .expect("matrix")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_u64().expect("count"))
        })
        .sum();
    assert_eq!(n, 6);

    // One on the shipped test set with two shifts, as a table.
    let r = post(
        json!({"model": "vision-fashion", "limit": 300, "shifts": ["blur:1.0", "jpeg:20"]}),
        "?format=table",
    )
    .await
    .expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    let table = r.text().await.expect("table");
    assert!(
        table.contains("vision-fashion 1.0.0 (edge) on shipped:data/fashion-mnist-t10k (300 items"),
        "{table}"
    );
    assert!(
        table.contains("| shift blur:1 | 300 |") && table.contains("| shift jpeg:20 | 300 |"),
        "{table}"
    );

    // Refusals: precise and 4xx.
    for (body, status, needle) in [
        (json!({"model": "../etc"}), 422, "not a model name"),
        (json!({"model": "nope"}), 422, "no model"),
        (
            json!({"model": "vision-fashion", "shifts": ["fog:1"]}),
            422,
            "fog:1",
        ),
        (
            json!({"model": "text-sentiment", "limit": 5, "shifts": ["blur:1"]}),
            422,
            "for images",
        ),
        (
            json!({"model": "vision-fashion", "colour": 1}),
            400,
            "colour",
        ),
    ] {
        let r = post(body.clone(), "").await.expect("POST");
        let s = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(s, status, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }

    // Both reports kept with the version they judged, listed and shown.
    let (_, list) = get(&c, &format!("{base}/v1/eval/reports?model=vision-fashion")).await;
    let list = list["reports"].as_array().expect("reports").clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .all(|r| r["version"] == "1.0.0" && r["variant"] == "edge")
    );
    let id = list[1]["id"].as_str().expect("id");
    let (s, one) = get(&c, &format!("{base}/v1/eval/reports/{id}")).await;
    assert_eq!((s, one["overall"]["n"].as_u64()), (200, Some(300)));
    let (s, _) = get(&c, &format!("{base}/v1/eval/reports/nope")).await;
    assert_eq!(s, 404);
    let metrics = c
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("tandem_hub_feedback_records 8"),
        "{metrics}"
    );
}
