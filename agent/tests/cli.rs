//! The command line: `infer` (human and `--json`), provider fallback as seen by a user,
//! bad inputs with their exit codes, and `models`.

mod common;

use common::{models_dir, read_json, repo};
use serde_json::Value;
use std::process::Command;

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem-agent"));
    c.current_dir(repo());
    c
}

#[test]
fn infer_json_prints_one_object_per_input() {
    let expected = read_json(&models_dir().join("vision-fashion/testdata/expected.json"));
    let cases: Vec<&Value> = expected["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["variant"] == "edge")
        .collect();
    let files: Vec<String> = cases
        .iter()
        .map(|c| {
            format!(
                "models/vision-fashion/{}",
                c["input"].as_str().expect("input")
            )
        })
        .collect();
    let out = agent()
        .args([
            "infer",
            "--json",
            "--model",
            "vision-fashion",
            "--ep",
            "cuda,cpu",
        ])
        .args(&files)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cuda unavailable") && stderr.contains("using cpu"),
        "{stderr}"
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), files.len());
    for (line, case) in lines.iter().zip(&cases) {
        for key in [
            "model",
            "label",
            "score",
            "route",
            "ep",
            "latency_ms",
            "top_k",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(line["model"], "vision-fashion");
        assert_eq!(line["route"], "local");
        assert_eq!(line["ep"], "cpu");
        assert_eq!(line["ep_skipped"][0]["ep"], "cuda");
        assert_eq!(line["index"], case["top1_index"], "{line}");
    }
}

#[test]
fn infer_text_and_human_output() {
    let out = agent()
        .args([
            "infer",
            "--model",
            "text-sentiment",
            "I absolutely love this, best day ever",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("positive") && stdout.contains("ep=cpu"),
        "{stdout}"
    );
}

#[test]
fn infer_bad_inputs_have_distinct_exit_codes() {
    let (_tmp, d) = common::tmp_dir("cli");
    let junk = d.join("junk.jpg");
    std::fs::write(&junk, b"this is not a picture").expect("write");
    let out = agent()
        .args(["infer", "--model", "vision-fashion"])
        .arg(&junk)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a JPEG or PNG"));
    let out = agent()
        .args(["infer", "--model", "vision-fashion", "/no/such/file.png"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(66));
    let out = agent()
        .args(["infer", "--model", "text-sentiment", ""])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("text is empty"));
    let out = agent()
        .args(["infer", "--model", "no-such-model", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-model"));
    let out = agent()
        .args(["infer", "--model", "vision-fashion", "--ep", "gpu", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown execution provider `gpu`"));
}

#[test]
fn models_lists_every_model_and_variant_status() {
    let out = agent().args(["models", "--json"]).output().expect("run");
    assert!(out.status.success());
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    for m in ["text-sentiment", "vision-fashion", "vision-imagenet"] {
        assert!(names.contains(&m), "{m} not listed: {names:?}");
    }
    for r in &rows {
        for v in r["variants"].as_array().expect("variants") {
            let status = v["status"].as_str().expect("status");
            let present = models_dir()
                .join(r["name"].as_str().expect("name"))
                .join(v["file"].as_str().expect("file"))
                .is_file();
            if present {
                assert_eq!(status, "ok", "{r}");
            } else {
                assert!(
                    status.contains("make models"),
                    "absent variant must say how to build it: {status}"
                );
            }
        }
    }
}
