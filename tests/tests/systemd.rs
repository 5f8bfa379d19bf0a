//! The shipped unit files pass `systemd-analyze verify` without a single warning, with
//! `ExecStart` pointing at the built binaries (verify exits 0 on many mistakes, so any output
//! counts as a failure).

use std::process::Command;
use tandem_tests::{binary, repo};

fn verify(unit: &str, installed: &str, bin: &str) {
    let text = std::fs::read_to_string(repo().join("systemd").join(unit)).expect("unit file");
    assert!(text.contains(installed), "{unit} should start {installed}");
    let dir = std::env::temp_dir().join(format!("tandem-systemd-{}-{unit}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmpdir");
    let path = dir.join(unit);
    std::fs::write(
        &path,
        text.replace(installed, &binary(bin).display().to_string()),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (make setup installs systemd)");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{unit}: exit {:?}: {printed}",
        out.status.code()
    );
    assert!(
        printed.trim().is_empty(),
        "{unit}: systemd-analyze printed warnings:\n{printed}"
    );
}

#[test]
fn agent_unit_verifies_cleanly() {
    verify(
        "tandem-agent.service",
        "/usr/local/bin/tandem-agent",
        "tandem-agent",
    );
}

#[test]
fn hub_unit_verifies_cleanly() {
    verify(
        "tandem-hub.service",
        "/usr/local/bin/tandem-hub",
        "tandem-hub",
    );
}

#[test]
fn a_broken_unit_is_caught() {
    // The check itself must be able to fail: a misspelt key only warns, with exit 0.
    let dir = std::env::temp_dir().join(format!("tandem-systemd-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmpdir");
    let path = dir.join("broken.service");
    let unit = format!(
        "[Service]\nExecStart={} run\nRestartt=always\n",
        binary("tandem-agent").display()
    );
    std::fs::write(&path, unit).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.trim().is_empty(),
        "systemd-analyze printed nothing for a misspelt key"
    );
}
