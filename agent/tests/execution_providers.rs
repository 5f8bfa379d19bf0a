//! Execution providers as an operator sees them, on the real daemon and CLI with the OpenVINO
//! plugin (`make setup`): a provider refused by the accuracy gate is reported with its measured
//! difference in `/v2/models/{m}`, `/metrics` and the log; `infer --json` carries the `auto`
//! measurements; `validate` names bad provider options.

mod common;

use common::{Daemon, daemon_config, repo, tmp_dir};
use serde_json::Value;
use std::io::{Read, Write};
use std::process::Command;

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem-agent"));
    c.current_dir(repo());
    c
}

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn a_provider_refused_by_the_accuracy_gate_is_reported_with_its_difference() {
    if !common::openvino_serves_here() {
        return;
    }
    let (_tmp, d) = tmp_dir("eps-gate");
    let extra = "[runtime]\nexecution_providers = [\"openvino\", \"cpu\"]\n[runtime.ep.openvino]\nprecision = \"bf16\"\n";
    let daemon = Daemon::start(&d, &daemon_config(&["vision-fashion"], "cloud", extra));
    let meta: Value = serde_json::from_str(&get(&daemon.addr, "/v2/models/vision-fashion"))
        .expect("metadata json");
    let p = &meta["parameters"];
    assert_eq!(p["execution_provider"], "cpu", "{meta}");
    let ov = &p["execution_providers_measured"][0];
    assert_eq!(ov["ep"], "openvino", "{meta}");
    assert_eq!(ov["accurate"], false);
    let diff = ov["max_abs_diff"].as_f64().expect("a measured difference");
    assert!(diff > 0.01, "{diff}");
    assert!(
        ov["error"]
            .as_str()
            .is_some_and(|e| e.contains("differ from the reference")),
        "{meta}"
    );
    let metrics = get(&daemon.addr, "/metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("tandem_ep_reference_max_abs_diff{") && l.contains("ep=\"openvino\"")
        })
        .unwrap_or_else(|| panic!("no openvino difference in /metrics:\n{metrics}"));
    let value: f64 = line
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("number");
    assert!((value - diff).abs() < 1e-9, "{line} vs {diff}");
    assert!(metrics.contains("tandem_model_info{") && metrics.contains("ep=\"cpu\""));
    assert!(
        daemon.log_text().contains("differ from the reference"),
        "{}",
        daemon.log_text()
    );
}

/// `tandem-agent infer --json --ep auto` on a vision-fashion sample (with `config`): its line.
fn infer_auto(config: Option<&std::path::Path>) -> Value {
    let mut c = agent();
    c.args([
        "infer",
        "--json",
        "--model",
        "vision-fashion",
        "--ep",
        "auto",
    ]);
    if let Some(path) = config {
        c.arg("--config").arg(path);
    }
    let out = c
        .arg("models/vision-fashion/samples/0_9.png")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn infer_json_reports_the_measured_auto_choice() {
    if !common::openvino_serves_here() {
        return;
    }
    let line = infer_auto(None);
    let measured = line["ep_measured"].as_array().expect("ep_measured");
    let accurate: Vec<&Value> = measured.iter().filter(|m| m["accurate"] == true).collect();
    let names: Vec<&str> = accurate.iter().filter_map(|m| m["ep"].as_str()).collect();
    assert!(
        names.contains(&"cpu") && names.contains(&"openvino"),
        "{line}"
    );
    let fastest = accurate
        .iter()
        .min_by(|a, b| {
            a["median_us"]
                .as_f64()
                .partial_cmp(&b["median_us"].as_f64())
                .expect("numbers")
        })
        .expect("one");
    assert_eq!(line["ep"], fastest["ep"], "{line}");
}

#[test]
fn validate_names_bad_provider_options() {
    let (_tmp, d) = tmp_dir("eps-validate");
    let path = d.join("agent.toml");
    std::fs::write(
        &path,
        "[runtime]\nexecution_providers = [\"auto\", \"cpu\"]\naccuracy_max_abs_diff = 0\n[runtime.ep.openvino]\ndevice = \"TPU\"\n[runtime.ep.qnn]\nbackend = \"dsp\"\n",
    )
    .expect("write");
    let out = agent()
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "`auto` stands alone",
        "runtime.accuracy_max_abs_diff",
        "runtime.ep.openvino.device",
        "runtime.ep.qnn.backend",
    ] {
        assert!(err.contains(key), "`{key}` not named in: {err}");
    }
}

/// `infer --ep auto` twice with `runtime.ep_choice_cache` set: the second process takes every
/// measurement from the file (the first measured, the cache survived the restart); with another
/// provider option (a key part) it measures again.
#[test]
fn the_auto_choice_survives_a_restart_in_the_cache_file() {
    let (_tmp, d) = tmp_dir("eps-choice-cache");
    let path = d.join("agent.toml");
    let write = |precision: &str| {
        let extra = format!(
            "[runtime]\nep_choice_cache = \"state/ep-choice.json\"\n[runtime.ep.openvino]\nprecision = \"{precision}\"\n"
        );
        std::fs::write(&path, daemon_config(&["vision-fashion"], "edge", &extra)).expect("write");
    };
    let run = || -> Vec<Value> {
        infer_auto(Some(&path))["ep_measured"]
            .as_array()
            .expect("ep_measured")
            .clone()
    };
    let cached = |m: &[Value]| m.iter().filter(|m| m["cached"] == true).count();
    write("f32");
    let first = run();
    assert_eq!(cached(&first), 0, "{first:?}");
    let file = d.join("state/ep-choice.json");
    assert!(file.is_file(), "no cache file at {}", file.display());
    let second = run();
    assert_eq!(cached(&second), second.len(), "{second:?}");
    assert_eq!(second.len(), first.len());
    for (a, b) in first.iter().zip(&second) {
        assert_eq!((&a["ep"], &a["median_us"]), (&b["ep"], &b["median_us"]));
    }
    // Another OpenVINO precision changes the key of every provider (the options are hashed).
    write("f16");
    let third = run();
    assert_eq!(cached(&third), 0, "{third:?}");
}
