//! Enrolment and renewal across hosts (issue 10 item 4 on the item 1 rig): the hub in one
//! network namespace, a new device in another that holds only the CA certificate and a claim
//! token. It enrols through `hub.tandem.test:4434` (the name the hub's certificate carries),
//! offloads with the certificate it got, renews it over its QUIC connection, and keeps
//! offloading on the renewed one. Needs root (CI runs as root): without it the rig fails the
//! test, saying so.

use serde_json::Value;
use std::time::{Duration, Instant};
use tandem_tests::fleet::{Daemon, Fleet, MODEL, samples};

/// Any one wait.
const PATIENCE: Duration = Duration::from_secs(90);
/// The enrolment endpoint's port.
const ENROL_PORT: u16 = 4434;

/// Classify one sample on the agent: `true` when the hub answered (not degraded).
async fn offloaded(fleet: &Fleet, agent: &Daemon, body: &[u8]) -> bool {
    match fleet
        .post(agent, &format!("/v1/classify/{MODEL}"), body.to_vec())
        .await
    {
        Ok((200, b)) => serde_json::from_slice::<Value>(&b)
            .is_ok_and(|v| v["route"] == "cloud" && v["degraded"] == false),
        _ => false,
    }
}

async fn wait_offloaded(fleet: &Fleet, agent: &Daemon, what: &str) {
    let body = samples().remove(0);
    let start = Instant::now();
    while !offloaded(fleet, agent, &body).await {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: the agent never offloaded:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_another_host_enrols_by_claim_and_renews() {
    let fleet = Fleet::new("enrol-rig", "hub", &["a1"]);
    let listen = format!("listen = \"0.0.0.0:{ENROL_PORT}\"");
    let hub = fleet.start_hub(&[("enrol", &listen), ("enrol", "cert_lifetime_s = 20")]);

    // The operator, on the hub's host: a claim.
    let out = fleet
        .rig
        .command("hub", tandem_tests::binary("tandem-hub"))
        .args([
            "claim",
            "create",
            "--name-prefix",
            "lab-",
            "--expires",
            "10m",
        ])
        .args(["--hub", &hub.http])
        .env("TANDEM_HUB_TOKEN_FILE", fleet.pki().join("operator.token"))
        .output()
        .expect("claim create");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // The device, on its own host, with the CA and the token: key and certificate where
    // the agent's config (below) expects them.
    let pki = fleet.pki();
    let enrol_cfg = fleet.dir.join("enrol.toml");
    std::fs::write(
        &enrol_cfg,
        format!(
            "[hub]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.join("devices/lab-cam1.pem").display(),
            pki.join("devices/lab-cam1.key").display()
        ),
    )
    .expect("enrol config");
    let out = fleet
        .rig
        .command("a1", tandem_tests::binary("tandem-agent"))
        .args([
            "enrol",
            "--hub",
            &format!("{}:{ENROL_PORT}", fleet.hub_name()),
        ])
        .args(["--token", &token, "--name", "cam1", "--ca"])
        .arg(pki.join("ca.pem"))
        .arg("--config")
        .arg(&enrol_cfg)
        .output()
        .expect("enrol");
    assert!(out.status.success(), "{out:?}\n{}", hub.log_text());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("enrolled as lab-cam1"),
        "{out:?}"
    );

    let agent = fleet.start_agent("a1", "lab-cam1", &[("hub", "timeout_ms = 5000")]);
    wait_offloaded(&fleet, &agent, "after enrolment").await;

    // Renewal at two-thirds of 20 s, over the QUIC connection through the bridge.
    let start = Instant::now();
    loop {
        let renewed = fleet
            .get_json(&hub, "/v1/enrolments")
            .await
            .and_then(|v| v["enrolments"].as_array().cloned())
            .is_some_and(|a| a.iter().any(|e| e["how"] == "renewal"));
        if renewed
            && agent
                .log_text()
                .contains("hub link moved to the renewed certificate")
        {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no renewal:\n{}\nhub:\n{}",
            agent.log_text(),
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_offloaded(&fleet, &agent, "after renewal").await;
}
