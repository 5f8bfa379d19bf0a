//! The feedback store's unit tests: dedup (also under overlapping redeliveries), telemetry
//! hand-off, rejected payloads, the quota, file modes, reopening at once after a drop.

use super::*;
use tandem_shared::record::{ExampleKind, Outcome};

fn example(label: Option<&str>) -> Vec<u8> {
    record::encode(&Record::Example {
        meta: Box::new(ExampleMeta {
            kind: if label.is_some() {
                ExampleKind::Correction
            } else {
                ExampleKind::Hard
            },
            request_id: "r-7".into(),
            model: "vision-fashion".into(),
            time_ms: 1,
            input_kind: "image".into(),
            reason: "low_confidence".into(),
            local: Some(Outcome {
                version: "1.0.0".into(),
                label: "Shirt".into(),
                index: 6,
                score: 0.4,
                top_k: vec![],
            }),
            cloud: None,
            label: label.map(str::to_string),
            boxes: None,
        }),
        input: b"\x89PNG....".to_vec(),
    })
}

#[test]
fn stores_once_per_device_epoch_seq() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(dir.path()).expect("open");
    let (a, b) = (example(None), example(Some("T-shirt/top")));
    let got = s
        .ingest("cam-1", &[(7, 1, &a), (7, 2, &b), (7, 1, &a)])
        .expect("ingest");
    assert_eq!(got, vec![Ingested::New, Ingested::New, Ingested::Duplicate]);
    assert_eq!(
        s.ingest("cam-1", &[(7, 2, &b)]).expect("again"),
        vec![Ingested::Duplicate]
    );
    // Another epoch (the queue was recreated) or another device is not a duplicate.
    assert_eq!(
        s.ingest("cam-1", &[(8, 1, &a)]).expect("new epoch"),
        vec![Ingested::New]
    );
    assert_eq!(
        s.ingest("cam-2", &[(7, 1, &a)]).expect("other device"),
        vec![Ingested::New]
    );
    assert_eq!(s.len(), 4);
    // Same input bytes: one file.
    let files = std::fs::read_dir(dir.path().join("inputs"))
        .expect("inputs")
        .count();
    assert_eq!(files, 1);
    drop(s);
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(s.len(), 4, "durable across a reopen");
    assert_eq!(
        s.ingest("cam-1", &[(7, 1, &a)]).expect("after reopen"),
        vec![Ingested::Duplicate]
    );
}

#[test]
fn opens_again_at_once_after_a_drop() {
    // sled's thread pool may still hold the index file (and its lock) for a moment after the
    // last `Db` handle is dropped; a dropped store waits for it, so the same process can open
    // the store again at once (an in-process restart). Each round writes, so each drop has
    // background log writes to finish.
    let dir = tempfile::tempdir().expect("tmp");
    let a = example(None);
    for seq in 0..20u64 {
        let s = Store::open(dir.path()).expect("open again at once");
        assert_eq!(
            s.ingest("cam-1", &[(1, seq, &a)]).expect("ingest"),
            vec![Ingested::New]
        );
        assert_eq!(s.len() as u64, seq + 1, "durable across every reopen");
    }
}

#[test]
fn new_telemetry_goes_to_the_sink_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(dir.path()).expect("open");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = seen.clone();
    assert!(s.on_telemetry(Box::new(move |device, v| {
        got.lock()
            .expect("lock")
            .push((device.to_string(), v["seq"].as_u64()));
    })));
    assert!(!s.on_telemetry(Box::new(|_, _| {})), "set once");
    let tm = |seq: u64| record::encode(&Record::Telemetry(serde_json::json!({"v": 1, "seq": seq})));
    let (t1, t2, ex) = (tm(1), tm(2), example(None));
    s.ingest("cam-1", &[(7, 1, &t1), (7, 2, &ex), (7, 3, &t2)])
        .expect("ingest");
    // Redelivered (an acknowledgement was lost): stored once, told once.
    s.ingest("cam-1", &[(7, 3, &t2), (7, 1, &t1)])
        .expect("again");
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![
            ("cam-1".to_string(), Some(1)),
            ("cam-1".to_string(), Some(2))
        ]
    );
}

#[test]
fn overlapping_redeliveries_store_each_record_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = std::sync::Arc::new(Store::open(dir.path()).expect("open"));
    let payloads: Vec<Vec<u8>> = (0..200u64)
        .map(|i| record::encode(&Record::Event(serde_json::json!({ "i": i }))))
        .collect();
    for round in 0..20u64 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (s, b, p) = (s.clone(), barrier.clone(), payloads.clone());
                std::thread::spawn(move || {
                    let batch: Vec<(u64, u64, &[u8])> = p
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (round, i as u64, p.as_slice()))
                        .collect();
                    b.wait();
                    s.ingest("cam-1", &batch).expect("ingest")
                })
            })
            .collect();
        let outcomes: Vec<Vec<Ingested>> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        for i in 0..payloads.len() {
            let new = outcomes.iter().filter(|o| o[i] == Ingested::New).count();
            assert_eq!(
                new, 1,
                "round {round}, seq {i}: stored by exactly one stream"
            );
        }
    }
    assert_eq!(s.len(), 20 * payloads.len());
    assert_eq!(s.stats().stored.load(Ordering::Relaxed), 20 * 200);
    assert_eq!(s.stats().duplicates.load(Ordering::Relaxed), 20 * 200);
}

#[test]
fn inputs_and_folders_are_private() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("feedback");
    let s = Store::open(&root).expect("open");
    s.ingest("cam-1", &[(1, 1, &example(None))])
        .expect("ingest");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    for d in [root.clone(), root.join("inputs"), root.join("index")] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let inputs: Vec<_> = std::fs::read_dir(root.join("inputs"))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert_eq!(mode(&inputs[0]), 0o600);
}

#[test]
fn over_quota_stores_nothing_and_duplicates_still_pass() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(dir.path())
        .expect("open")
        .with_config(FeedbackConfig {
            quota_bytes_per_device: 100,
            quota_window_ms: 3_600_000,
            ..FeedbackConfig::default()
        });
    let big = vec![7u8; 60];
    assert_eq!(
        s.put("cam-1", 1, 1, &big).expect("fits").outcome,
        Ingested::Rejected
    );
    let e = s.put("cam-1", 1, 2, &big).expect_err("over");
    assert!(
        matches!(
            e,
            FeedbackError::OverQuota {
                used: 60,
                quota: 100,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("retry in"), "{e}");
    assert_eq!(
        s.put("cam-1", 1, 1, &big).expect("a duplicate").outcome,
        Ingested::Duplicate
    );
    s.put("cam-2", 1, 2, &big).expect("another device");
    assert_eq!(s.len(), 2);
}

#[test]
fn undecodable_payloads_are_kept_as_rejected() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Store::open(dir.path()).expect("open");
    assert_eq!(
        s.ingest("cam-1", &[(1, 1, b"garbage")]).expect("ingest"),
        vec![Ingested::Rejected]
    );
    let r = s.iter().next().expect("one").expect("parses");
    assert_eq!(r.kind, "rejected");
    assert!(r.error.is_some());
    assert_eq!(s.stats().rejected.load(Ordering::Relaxed), 1);
}
