//! Calibration end to end on the multi-host rig (`tandem_tests::fleet`: the built hub with its
//! mosquitto and a real agent, real QUIC, MQTT over TLS, sled and ONNX Runtime): the agent
//! offloads every Fashion-MNIST image (its config threshold 2.0), so each arrives as a hard
//! example with the cloud model's answer; the hub refuses to calibrate on too few samples,
//! then fits on the calibration split, reports on the test split, and pushes the threshold;
//! the agent routes with it, reports it (`hub-calibrated`) and keeps it across a restart
//! without being told again; an operator's pin wins over a later calibration until unpinned.

use serde_json::{Value, json};
use std::time::Duration;
use tandem_hub::eval::dataset::{Payload, shipped};
use tandem_tests::fleet::{Daemon, Fleet, MODEL};
use tandem_tests::wait_for_async;

const PATIENCE: Duration = Duration::from_secs(90);
const IMAGES: usize = 240;

async fn post(fleet: &Fleet, d: &Daemon, path: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, bytes) = fleet
        .post(d, path, body)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, v)
}

/// The agent's threshold in force for MODEL as its `/metrics` says: (source, value).
async fn threshold(fleet: &Fleet, agent: &Daemon) -> Option<(String, f64)> {
    let m = fleet.metrics(agent).await;
    m.iter().find_map(|(k, v)| {
        let rest = k.strip_prefix("tandem_routing_threshold{")?;
        if !rest.contains(&format!("model=\"{MODEL}\"")) {
            return None;
        }
        let source = rest.split("source=\"").nth(1)?.split('"').next()?;
        Some((source.to_string(), *v))
    })
}

async fn wait_threshold(fleet: &Fleet, agent: &Daemon, source: &str, value: f64) {
    wait_for_async(
        &format!("the agent to route with {source} {value}"),
        PATIENCE,
        || async {
            threshold(fleet, agent)
                .await
                .is_some_and(|(s, v)| s == source && (v - value).abs() < 1e-6)
        },
    )
    .await;
}

/// Classifies `images` through the agent: (route, local score) of each answer.
async fn classify(fleet: &Fleet, agent: &Daemon, images: &[Vec<u8>]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for img in images {
        let (status, a) = post(fleet, agent, &format!("/v1/classify/{MODEL}"), img.clone()).await;
        assert_eq!(status, 200, "{a}");
        let route = a["route"].as_str().unwrap_or("?").to_string();
        let score = if route == "cloud" {
            a["local"]["score"].as_f64()
        } else {
            a["score"].as_f64()
        };
        out.push((route, score.unwrap_or(f64::NAN)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calibrated_threshold_is_pushed_kept_across_restarts_and_a_pin_wins() {
    let fleet = Fleet::new("calibrate-loop", "hub", &["cam"]);
    fleet.add_device("cam-01");
    let hub = fleet.start_hub(&[
        ("feedback", "split_train_pct = 0"),
        ("feedback", "split_calibration_pct = 50"),
        ("calibrate", "min_fit_samples = 60"),
        ("calibrate", "min_test_samples = 60"),
        ("calibrate", "push_every_ms = 300"),
        ("calibrate", "resend_after_ms = 3000"),
    ]);
    let mut agent = fleet.start_agent("cam", "cam-01", &[]);
    let set = shipped(&tandem_tests::models_dir().join(MODEL), IMAGES).expect("shipped set");
    let images: Vec<Vec<u8>> = set
        .items
        .iter()
        .map(|i| match &i.input {
            Payload::Image(b) => b.to_vec(),
            Payload::Text(_) => panic!("images"),
        })
        .collect();
    let request = json!({"model": MODEL}).to_string().into_bytes();

    // Nothing delivered yet: a clear refusal with the counts.
    let (status, body) = post(&fleet, &hub, "/v1/calibrations", request.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("too few samples"),
        "{body}"
    );

    // Every answer is offloaded under the config's 2.0: an unbiased sample (weight 1 each).
    let before = classify(&fleet, &agent, &images).await;
    assert!(before.iter().all(|(r, _)| r == "cloud"), "{before:?}");
    assert_eq!(
        threshold(&fleet, &agent).await.map(|t| t.0).as_deref(),
        Some("operator")
    );

    let started = std::time::Instant::now();
    let calibration = loop {
        let (status, body) = post(&fleet, &hub, "/v1/calibrations", request.clone()).await;
        match status {
            201 => break body,
            422 => assert!(
                started.elapsed() < PATIENCE,
                "never enough feedback: {body}\nhub:\n{}",
                hub.log_text()
            ),
            _ => panic!("{status} {body}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let c = &calibration;
    let t = c["threshold"].as_f64().expect("a threshold");
    assert!(t > 0.0 && t < 1.0, "{c}");
    assert_eq!(c["fit"]["split"], "calibration", "{c}");
    assert_eq!(c["test"]["split"], "test", "{c}");
    let (n_fit, n_test) = (
        c["fit"]["counts"]["samples"].as_u64().unwrap_or(0),
        c["test"]["counts"]["samples"].as_u64().unwrap_or(0),
    );
    assert!(
        n_fit >= 60 && n_test >= 60 && n_fit + n_test <= IMAGES as u64,
        "{c}"
    );
    assert_eq!(c["fit"]["counts"]["hard"].as_u64(), Some(n_fit), "{c}");
    assert_eq!(c["fit"]["counts"]["teacher"].as_u64(), Some(n_fit), "{c}");
    let fitted = &c["fit"]["at_fitted"];
    assert!(
        fitted["accuracy"].as_f64().unwrap_or(0.0)
            >= 0.995 * fitted["cloud_accuracy"].as_f64().unwrap_or(2.0) - 1e-9,
        "{c}"
    );
    assert_eq!(c["test"]["at_fitted"]["n"].as_u64(), Some(n_test), "{c}");
    let id = c["id"].as_str().expect("an id");
    let kept = fleet
        .get_json(&hub, &format!("/v1/calibrations/{id}"))
        .await
        .expect("kept");
    assert_eq!(&kept, c);

    // Pushed: the agent routes with it and reports it.
    wait_threshold(&fleet, &agent, "hub-calibrated", t).await;
    let after = classify(&fleet, &agent, &images[..60]).await;
    for (route, score) in &after {
        assert_eq!(route == "local", *score >= t, "{route} {score} at {t}");
    }
    assert!(after.iter().any(|(r, _)| r == "local"), "{after:?}");
    wait_for_async("the hub to see the device in sync", PATIENCE, || async {
        fleet
            .get_json(&hub, "/v1/thresholds")
            .await
            .is_some_and(|s| {
                s["devices"].as_array().into_iter().flatten().any(|d| {
                    d["device"] == "cam-01"
                        && d["in_sync"] == true
                        && d["reported"]["source"] == "hub-calibrated"
                })
            })
    })
    .await;

    // Restarted: it still uses it, from its state dir, before the hub says anything.
    agent.stop(PATIENCE);
    let agent = fleet.start_agent("cam", "cam-01", &[]);
    assert_eq!(
        threshold(&fleet, &agent).await,
        Some(("hub-calibrated".to_string(), t)),
        "{}",
        agent.log_text()
    );
    assert!(
        agent
            .log_text()
            .contains("thresholds set at run time restored")
    );
    let again = classify(&fleet, &agent, &images[..20]).await;
    for (route, score) in &again {
        assert_eq!(route == "local", *score >= t, "{route} {score} at {t}");
    }

    // An operator's pin wins, also over a newer calibration, until it is removed.
    let pin = json!({"model": MODEL, "threshold": 0.9})
        .to_string()
        .into_bytes();
    let (status, body) = post(&fleet, &hub, "/v1/thresholds/pin", pin).await;
    assert_eq!(status, 200, "{body}");
    wait_threshold(&fleet, &agent, "operator", 0.9).await;
    let (status, body) = post(&fleet, &hub, "/v1/calibrations", request.clone()).await;
    assert_eq!(status, 201, "{body}");
    let newest = body["threshold"].as_f64().expect("a threshold");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = threshold(&fleet, &agent).await;
    assert!(
        now.as_ref()
            .is_some_and(|(s, v)| s == "operator" && (v - 0.9).abs() < 1e-6),
        "a calibration does not override a pin: {now:?}"
    );
    let unpin = json!({"model": MODEL}).to_string().into_bytes();
    let (status, body) = post(&fleet, &hub, "/v1/thresholds/unpin", unpin).await;
    assert_eq!(status, 200, "{body}");
    wait_threshold(&fleet, &agent, "hub-calibrated", newest).await;
}
