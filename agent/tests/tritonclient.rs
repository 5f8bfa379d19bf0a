//! The real Triton client (`tritonclient[http]`, installed into .venv by `make setup`) drives the
//! agent daemon's OIP v2 API unchanged: binary tensors, version paths, JSON, BYTES, errors.

mod common;

use common::{Daemon, daemon_config, repo};
use std::process::Command;

#[test]
fn tritonclient_works_unchanged() {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `make setup`",
        python.display()
    );
    let (_tmp, d) = common::tmp_dir("triton");
    let daemon = Daemon::start(
        &d,
        &daemon_config(&["vision-fashion", "text-sentiment"], "edge", ""),
    );
    let out = Command::new(&python)
        .arg(repo().join("tests/python/triton_client_check.py"))
        .arg(&daemon.addr)
        .arg(repo())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tritonclient check failed:\n{stdout}\n{stderr}\nagent log:\n{}",
        daemon.log_text()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
