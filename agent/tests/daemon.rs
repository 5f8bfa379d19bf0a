//! The real `tandem-agent` process: start-up errors name the key or file and exit non-zero;
//! SIGTERM lets an in-flight request finish and exits 0.

mod common;

use common::{Daemon, daemon_config, models_dir, repo, tmp_dir};
use std::io::{Read, Write};
use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem-agent"))
}

/// Runs `tandem-agent run` with a config and expects it to fail at start-up.
fn run_fails(name: &str, config: &str) -> (i32, String) {
    let (_tmp, d) = tmp_dir(&format!("daemon-{name}"));
    let path = d.join("agent.toml");
    std::fs::write(&path, config).expect("write");
    let out = agent()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_config_lists_every_problem_and_exits_78() {
    let config =
        "[server]\nlisten = \"not-an-address\"\n[engine]\nworkers = 0\nqueue_capacity = 0\n";
    let (code, err) = run_fails("badcfg", config);
    assert_eq!(code, 78, "{err}");
    for key in ["server.listen", "engine.workers", "engine.queue_capacity"] {
        assert!(err.contains(key), "`{key}` not named in: {err}");
    }
    let (_tmp, d) = tmp_dir("daemon-validate");
    std::fs::write(d.join("a.toml"), "[server]\nlisten_port = 1\n").expect("write");
    let out = agent()
        .args(["validate", "--config"])
        .arg(d.join("a.toml"))
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_port"));
    let ok = agent()
        .args(["validate", "--config"])
        .arg(repo().join("demo/agent.toml"))
        .output()
        .expect("validate");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let default = agent().arg("print-default-config").output().expect("print");
    std::fs::write(d.join("default.toml"), &default.stdout).expect("write");
    let ok = agent()
        .args(["validate", "--config"])
        .arg(d.join("default.toml"))
        .output()
        .expect("validate");
    assert_eq!(ok.status.code(), Some(0));
}

fn copy_model(dst: &std::path::Path, model: &str) {
    let src = models_dir().join(model);
    let to = dst.join(model);
    std::fs::create_dir_all(&to).expect("mkdir");
    for e in std::fs::read_dir(&src).expect("read").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn missing_or_corrupt_model_file_is_named_and_exits_69() {
    let (_tmp, d) = tmp_dir("daemon-models");
    copy_model(&d, "vision-fashion");
    std::fs::remove_file(d.join("vision-fashion/edge.onnx")).expect("rm");
    let cfg = format!(
        "[models]\ndir = \"{}\"\nenabled = [\"vision-fashion\"]\n",
        d.display()
    );
    let (code, err) = run_fails("missing", &cfg);
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("edge.onnx") && err.contains("missing"),
        "{err}"
    );

    std::fs::copy(
        models_dir().join("vision-fashion/edge.onnx"),
        d.join("vision-fashion/edge.onnx"),
    )
    .expect("copy");
    let mut bytes = std::fs::read(d.join("vision-fashion/edge.onnx")).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(d.join("vision-fashion/edge.onnx"), bytes).expect("write");
    let (code, err) = run_fails("corrupt", &cfg);
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("edge.onnx") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn missing_or_old_onnx_runtime_is_a_clear_error() {
    let (code, err) = run_fails(
        "nolib",
        "[runtime]\nonnxruntime_lib = \"/nonexistent/libonnxruntime.so\"\n",
    );
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.contains("make setup"),
        "{err}"
    );
    let old = repo().join(".ort/old/libonnxruntime.so.1.30.0");
    assert!(old.is_file(), "make setup provides {}", old.display());
    let (code, err) = run_fails(
        "oldlib",
        &format!("[runtime]\nonnxruntime_lib = \"{}\"\n", old.display()),
    );
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("1.30.0") && err.contains(">= 1.31"), "{err}");
}

#[test]
fn port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cfg = daemon_config(&["vision-fashion"], "edge", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let (code, err) = run_fails("port", &cfg);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("server.listen") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[test]
fn sigterm_finishes_the_in_flight_request_then_exits_zero() {
    let (_tmp, d) = tmp_dir("daemon-sigterm");
    // A batch big enough to keep the worker busy for a while (above the default rows cap).
    let batch = 4000usize;
    let extra = format!("[engine]\nmax_rows_per_request = {batch}");
    let mut daemon = Daemon::start(&d, &daemon_config(&["vision-fashion"], "cloud", &extra));
    let header = serde_json::to_vec(&serde_json::json!({"inputs": [{"name": "input", "shape": [batch, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": batch * 784 * 4}}]})).expect("json");
    let mut body = header.clone();
    body.extend(std::iter::repeat_n(0.25f32.to_le_bytes(), batch * 784).flatten());
    let mut s = std::net::TcpStream::connect(&daemon.addr).expect("connect");
    write!(
        s,
        "POST /v2/models/vision-fashion/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nInference-Header-Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        header.len()
    )
    .expect("write head");
    s.write_all(&body).expect("write body");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = daemon.child.id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read response");
    let head = String::from_utf8_lossy(&resp[..resp.len().min(200)]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "in-flight request was not answered: {head}"
    );
    let status = daemon.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "log: {}", daemon.log_text());
    assert!(
        daemon.log_text().contains("tandem-agent stopped"),
        "{}",
        daemon.log_text()
    );
}
