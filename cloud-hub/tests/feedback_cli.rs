//! `tandem-hub feedback export`: the stored examples become `dataset.jsonl` plus their inputs;
//! no store, a store held by a running hub, or an unknown format each get a clear message and
//! their own exit code.

use std::process::Command;
use tandem_hub::feedback::Store;
use tandem_shared::record::{self, ExampleKind, ExampleMeta, Outcome, Record};

fn hub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem-hub"))
}

#[test]
fn export_writes_a_dataset_and_refuses_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("hub.toml");
    std::fs::write(&conf, "feedback_dir = \"fb\"\n").expect("config");
    let export = |extra: &[&str]| {
        hub()
            .args(["feedback", "export"])
            .args(extra)
            .arg("--config")
            .arg(&conf)
            .arg(dir.path().join("out"))
            .output()
            .expect("run")
    };

    // No store yet.
    let out = export(&[]);
    assert_eq!(
        out.status.code(),
        Some(66),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no feedback store"));

    let store = Store::open(&dir.path().join("fb")).expect("store");
    let correction = record::encode(&Record::Example {
        meta: Box::new(ExampleMeta {
            kind: ExampleKind::Correction,
            request_id: "00000000000000aa".into(),
            model: "vision-fashion".into(),
            time_ms: 1,
            input_kind: "image".into(),
            reason: "confident".into(),
            local: Some(Outcome {
                version: "1.0.0".into(),
                label: "Shirt".into(),
                index: 6,
                score: 0.9,
                top_k: vec![],
            }),
            cloud: None,
            label: Some("Bag".into()),
            boxes: None,
        }),
        input: b"\x89PNG fake".to_vec(),
    });
    store
        .ingest("cam-01", &[(5, 1, &correction), (5, 2, b"junk")])
        .expect("ingest");

    // Held by "a running hub" (this process).
    let out = export(&[]);
    assert_eq!(out.status.code(), Some(74));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(store);

    let out = export(&["--format", "csv"]);
    assert_eq!(out.status.code(), Some(64));

    let out = export(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.path().join("out/dataset.jsonl")).expect("dataset");
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one line");
    assert_eq!(line["label"], "Bag");
    assert_eq!(line["device"], "cam-01");
    assert_eq!(line["kind"], "correction");
    let input = dir
        .path()
        .join("out")
        .join(line["input"].as_str().expect("input"));
    assert_eq!(std::fs::read(input).expect("input file"), b"\x89PNG fake");
    let rejected =
        std::fs::read_to_string(dir.path().join("out/rejected.jsonl")).expect("rejected");
    assert_eq!(rejected.lines().count(), 1);
}
