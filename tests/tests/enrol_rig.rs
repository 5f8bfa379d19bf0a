//! Enrolment and renewal across hosts (issue 10 item 4 on the item 1 rig): the hub in one
//! network namespace, new devices in others that hold only the CA certificate and a claim
//! token. Needs root (CI runs as root): without it the rig fails the test, saying so.
//!
//! - `a_device_on_another_host_enrols_by_claim_and_renews`: a device enrols through
//!   `hub.tandem.test:4434` (the name the hub's certificate carries), offloads with the
//!   certificate it got, renews it over its QUIC connection, and keeps offloading on the
//!   renewed one; once it connected with the renewed certificate, the first one is revoked as
//!   superseded (after `enrol.superseded_grace_ms`): its next QUIC and MQTT handshakes are
//!   refused, and the ledger says which certificate replaced it.
//! - `claim_labels_select_the_rollout_targets`: two devices enrol with claims labelled
//!   `site=north` and `site=south`; the south one says `site = "north"` in its own `[labels]`,
//!   and the hub's label wins. `/v1/fleet` shows the merged labels and where each came from; a
//!   rollout of 1.0.1 to `site=north` takes the north device (which installs it) and not the
//!   south one.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tandem_tests::fleet::{Daemon, Fleet, MODEL, MQTT_PORT, samples};
use tandem_tests::metrics::one;

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

/// `tandem-hub claim create` on the hub's host, as its operator: the token.
fn claim(fleet: &Fleet, hub: &Daemon, labels: &str) -> String {
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
        .args(["--labels", labels, "--hub", &hub.http])
        .env("TANDEM_HUB_TOKEN_FILE", fleet.pki().join("operator.token"))
        .output()
        .expect("claim create");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `tandem-agent enrol` on `host` as `name` with `token`: key and certificate land where
/// [`Fleet::start_agent`] looks for device `lab-NAME` (`pki/devices/`).
fn enrol(fleet: &Fleet, hub: &Daemon, host: &str, token: &str, name: &str) {
    let pki = fleet.pki();
    let enrol_cfg = fleet.dir.join(format!("enrol-{host}.toml"));
    std::fs::write(
        &enrol_cfg,
        format!(
            "[hub]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.join(format!("devices/lab-{name}.pem")).display(),
            pki.join(format!("devices/lab-{name}.key")).display()
        ),
    )
    .expect("enrol config");
    let out = fleet
        .rig
        .command(host, tandem_tests::binary("tandem-agent"))
        .args([
            "enrol",
            "--hub",
            &format!("{}:{ENROL_PORT}", fleet.hub_name()),
        ])
        .args(["--token", token, "--name", name, "--ca"])
        .arg(pki.join("ca.pem"))
        .arg("--config")
        .arg(&enrol_cfg)
        .output()
        .expect("enrol");
    assert!(out.status.success(), "{out:?}\n{}", hub.log_text());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("enrolled as lab-{name}")),
        "{out:?}"
    );
}

/// A fresh MQTT connection to the hub's broker from `host` with the certificate and key of
/// `pki/devices/IDENTITY.{pem,key}`: whether the broker accepted it (`CONNACK` 0).
fn mqtt_accepts(fleet: &Fleet, host: &str, identity: &str) -> bool {
    let pki = fleet.pki();
    let out = fleet
        .rig
        .command(host, "mosquitto_sub")
        .args(["-d", "-h", &fleet.hub_name(), "-p", &MQTT_PORT.to_string()])
        .arg("--cafile")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join(format!("devices/{identity}.pem")))
        .arg("--key")
        .arg(pki.join(format!("devices/{identity}.key")))
        .args(["-t", "tandem/probe", "-C", "1", "-W", "2"])
        .output()
        .expect("mosquitto_sub (make setup installs mosquitto-clients)");
    String::from_utf8_lossy(&out.stdout).contains("CONNACK (0)")
}

/// Copies `pki/devices/FROM.{pem,key}` to `TO.{pem,key}`.
fn keep_identity(pki: &Path, from: &str, to: &str) {
    for ext in ["pem", "key"] {
        let dir: PathBuf = pki.join("devices");
        std::fs::copy(
            dir.join(format!("{from}.{ext}")),
            dir.join(format!("{to}.{ext}")),
        )
        .expect("copy the identity");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_another_host_enrols_by_claim_and_renews() {
    let fleet = Fleet::new("enrol-rig", "hub", &["a1"]);
    let listen = format!("listen = \"0.0.0.0:{ENROL_PORT}\"");
    let hub = fleet.start_hub(&[
        ("enrol", &listen),
        ("enrol", "cert_lifetime_s = 20"),
        ("enrol", "superseded_grace_ms = 1000"),
        ("pki", "crl_check_ms = 250"),
        ("mqtt", "crl_check_ms = 250"),
    ]);

    // The operator makes a claim on the hub's host; the device, on its own host with the CA
    // and the token, enrols (key and certificate where the agent's config expects them).
    let token = claim(&fleet, &hub, "site=lab");
    enrol(&fleet, &hub, "a1", &token, "cam1");
    // The first certificate, kept aside to try it again once it is superseded; before that,
    // both the QUIC ingress and the broker take it.
    let pki = fleet.pki();
    keep_identity(&pki, "lab-cam1", "lab-first");
    let first_serial = serial_of(&pki, "lab-first");
    fleet
        .quic_handshake("a1", "lab-first")
        .await
        .expect("QUIC takes the first certificate");
    assert!(
        tokio::task::block_in_place(|| mqtt_accepts(&fleet, "a1", "lab-first")),
        "MQTT takes the first certificate"
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

    // Superseded: once the agent connected with the renewed certificate (and the grace of
    // 1 s passed), the first one is revoked; the hub and its broker refuse it from then on.
    let start = Instant::now();
    while one(
        &fleet.metrics(&hub).await,
        "tandem_hub_certificates_superseded_total",
    ) < 1.0
    {
        assert!(
            start.elapsed() < PATIENCE,
            "nothing superseded:\n{}",
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ledger = tandem_tests::paths::read_json(&pki.join("pki.json"));
    let first = ledger["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["serial"] == first_serial)
        .cloned()
        .expect("the first certificate in the ledger");
    assert!(
        first["revoked_at"].is_string() && first["superseded_by"].as_u64() > Some(first_serial),
        "{first}"
    );
    let start = Instant::now();
    loop {
        let quic = fleet.quic_handshake("a1", "lab-first").await;
        let mqtt = tokio::task::block_in_place(|| mqtt_accepts(&fleet, "a1", "lab-first"));
        if quic.is_err() && !mqtt {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the superseded certificate still works (QUIC {quic:?}, MQTT {mqtt}):\n{}",
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The device carries on, on its renewed certificate.
    wait_offloaded(&fleet, &agent, "after the old certificate was superseded").await;
    let m = fleet.metrics(&agent).await;
    assert_eq!(one(&m, "tandem_mqtt_connected"), 1.0, "MQTT up: {m:?}");
}

/// The serial of the certificate `pki/devices/NAME.pem`, from `openssl x509`.
fn serial_of(pki: &Path, name: &str) -> u64 {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pki.join(format!("devices/{name}.pem")))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let hex = text
        .trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("serial in {text:?}"));
    u64::from_str_radix(hex, 16).expect("a hex serial")
}

/// The device's entry in `GET /v1/fleet`, once it is online.
async fn online_entry(fleet: &Fleet, hub: &Daemon, device: &str) -> Value {
    let start = Instant::now();
    loop {
        let entry = fleet
            .get_json(hub, "/v1/fleet")
            .await
            .and_then(|v| v["devices"].as_array().cloned())
            .and_then(|a| a.into_iter().find(|d| d["device"] == device));
        if let Some(e) = entry.filter(|e| e["online"] == true) {
            return e;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{device} never online:\n{}",
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_labels_select_the_rollout_targets() {
    let fleet = Fleet::new("enrol-labels", "hub", &["a1", "a2"]);
    let listen = format!("listen = \"0.0.0.0:{ENROL_PORT}\"");
    let hub = fleet.start_hub(&[("enrol", &listen)]);
    let north = claim(&fleet, &hub, "site=north,owner=ops");
    let south = claim(&fleet, &hub, "site=south");
    enrol(&fleet, &hub, "a1", &north, "north1");
    enrol(&fleet, &hub, "a2", &south, "south1");

    // The north device can install versions (its own model folder, the signing key); the
    // south one says it is in the north itself.
    let pki = fleet.pki();
    let models = format!("dir = \"{}\"", fleet.models_copy("models-north").display());
    let key = format!("trusted_key = \"{}\"", pki.join("signing.pub").display());
    let a1 = fleet.start_agent(
        "a1",
        "lab-north1",
        &[
            ("models", &models),
            ("models", &key),
            ("models", "watch_window_s = 1"),
            ("labels", "group = \"cams\""),
        ],
    );
    let a2 = fleet.start_agent("a2", "lab-south1", &[("labels", "site = \"north\"")]);

    // The fleet view: the merged labels, and where each came from.
    let n = online_entry(&fleet, &hub, "lab-north1").await;
    let s = online_entry(&fleet, &hub, "lab-south1").await;
    // (The agent adds labels of its own too: its accelerators, `accelerator.cpu.cpu`.)
    for (k, v) in [("group", "cams"), ("owner", "ops"), ("site", "north")] {
        assert_eq!(n["labels"][k], v, "{n}");
    }
    assert_eq!(n["hub_labels"]["site"], "north", "{n}");
    assert_eq!(n["agent_labels"]["group"], "cams", "{n}");
    assert!(n["agent_labels"].get("site").is_none(), "{n}");
    assert_eq!(s["labels"]["site"], "south", "the hub's label wins: {s}");
    assert_eq!(s["agent_labels"]["site"], "north", "{s}");
    assert_eq!(s["hub_labels"]["site"], "south", "{s}");
    let one_device = fleet
        .get_json(&hub, "/v1/fleet/lab-south1")
        .await
        .expect("one device");
    assert_eq!(one_device["labels"]["site"], "south", "{one_device}");

    // Version 1.0.1 in the registry, then a rollout to site=north.
    let bundle = fleet.dir.join("bundle-1.0.1");
    let model_dir = tandem_tests::models_dir().join(MODEL);
    let hub_cfg = fleet.dir.join("hub/hub.toml");
    tokio::task::block_in_place(|| {
        fleet.hub_cli(&[
            "models",
            "pack",
            &model_dir.display().to_string(),
            &bundle.display().to_string(),
            "--version",
            "1.0.1",
            "--expected",
            "testdata",
        ]);
        fleet.hub_cli(&[
            "models",
            "push",
            &bundle.display().to_string(),
            "--config",
            &hub_cfg.display().to_string(),
        ]);
        fleet.hub_cli(&[
            "rollout",
            "start",
            "--model",
            MODEL,
            "--version",
            "1.0.1",
            "--canary",
            "100",
            "--labels",
            "site=north",
            "--hub",
            &hub.http,
        ]);
    });
    let start = Instant::now();
    let rollout = loop {
        let r = fleet
            .get_json(&hub, "/v1/rollouts")
            .await
            .and_then(|v| v["rollouts"].as_array().and_then(|a| a.first().cloned()));
        if let Some(r) = r.filter(|r| r["phase"]["state"] != "running") {
            break r;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the rollout did not finish:\nhub:\n{}\nnorth:\n{}",
            hub.log_text(),
            a1.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(rollout["phase"]["state"], "succeeded", "{rollout}");
    let targets: Vec<&String> = rollout["targets"]
        .as_object()
        .expect("targets")
        .keys()
        .collect();
    assert_eq!(targets, ["lab-north1"], "{rollout}");
    assert_eq!(
        rollout["targets"]["lab-north1"]["outcome"]["state"],
        "active"
    );
    // The north device serves 1.0.1; the south one was never commanded.
    let version = |e: &Value| {
        e["models"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == MODEL))
            .map(|m| m["version"].clone())
    };
    let n = online_entry(&fleet, &hub, "lab-north1").await;
    assert_eq!(version(&n), Some(Value::from("1.0.1")), "{n}");
    let s = online_entry(&fleet, &hub, "lab-south1").await;
    assert_eq!(version(&s), Some(Value::from("1.0.0")), "{s}");
    assert!(
        a1.log_text().contains("update_model"),
        "the north device logged its command:\n{}",
        a1.log_text()
    );
    assert!(
        !a2.log_text().contains("update_model"),
        "the south device got no update command:\n{}",
        a2.log_text()
    );
}
