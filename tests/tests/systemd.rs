//! The shipped unit files pass `systemd-analyze verify` without a single warning, with
//! `ExecStart` pointing at the built binaries (verify exits 0 on many mistakes, so any output
//! counts as a failure), and their `systemd-analyze security` exposure stays at most 3.0 (agent)
//! and 4.0 (hub).

use std::process::Command;
use tandem_tests::{binary, repo, scratch};

fn verify(unit: &str, installed: &str, bin: &str) {
    let text = std::fs::read_to_string(repo().join("systemd").join(unit)).expect("unit file");
    assert!(text.contains(installed), "{unit} should start {installed}");
    let dir = scratch(&format!("systemd-{unit}"));
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
        "/usr/bin/tandem-agent",
        "tandem-agent",
    );
}

#[test]
fn hub_unit_verifies_cleanly() {
    verify("tandem-hub.service", "/usr/bin/tandem-hub", "tandem-hub");
}

#[test]
fn a_broken_unit_is_caught() {
    // The check itself must be able to fail: a misspelt key only warns, with exit 0.
    let dir = scratch("systemd-bad");
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

/// The overall exposure `systemd-analyze security --offline=yes` gives a unit file.
fn exposure(unit: &str) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(repo().join("systemd").join(unit))
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "{unit}: no overall exposure in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[test]
fn units_are_sandboxed_tightly() {
    let agent = exposure("tandem-agent.service");
    let hub = exposure("tandem-hub.service");
    assert!(agent <= 3.0, "agent exposure {agent} > 3.0");
    assert!(hub <= 4.0, "hub exposure {hub} > 4.0");
    for unit in ["tandem-agent.service", "tandem-hub.service"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(unit)).expect("unit");
        for key in [
            "Type=notify",
            "WatchdogSec=",
            "ExecReload=",
            "UMask=0077",
            "MemoryMax=",
            "PrivateDevices=yes",
            "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=\n",
        ] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        assert!(
            !text.contains("Environment=RUST_LOG"),
            "{unit} overrides the config's log filter"
        );
    }
}
