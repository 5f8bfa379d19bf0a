//! The hub's fleet over its supervised mosquitto: a simulated device (a real MQTT client with a
//! device certificate) publishes status and telemetry and answers commands; the hub keeps the
//! state in sled and serves it on `/v1/fleet`, and `POST /v1/fleet/{device}/cmd/{name}`
//! returns the device's result.

mod mqtt_kit;

use mqtt_kit::{answering_device as device, fleet_hub, publish_online};
use rumqttc::QoS;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tandem_shared::mqtt::{Status, Topic};
use tandem_tests::http::get_json;
use tandem_tests::wait_for;

const PATIENCE: Duration = Duration::from_secs(20);

fn telemetry_fixture() -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/tests/fixtures/mqtt/telemetry.json");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_state_and_commands_over_mqtt() {
    let dir = tempfile::tempdir().expect("tmp");
    let (pki, svc, url) = fleet_hub(dir.path(), PATIENCE).await;
    pki.add_device("cam-01", 30).expect("device");
    let fleet = svc.fleet();

    let dev = device(&pki, &url);
    publish_online(&dev).await;
    dev.publish(
        Topic::telemetry("cam-01"),
        QoS::AtLeastOnce,
        false,
        telemetry_fixture(),
    )
    .await
    .expect("telemetry");
    dev.publish(
        Topic::telemetry("cam-01"),
        QoS::AtLeastOnce,
        false,
        &b"{\"v\":2}"[..],
    )
    .await
    .expect("bad telemetry");
    let event = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/fixtures/mqtt/event.json"),
    )
    .expect("event fixture");
    dev.publish(Topic::events("cam-01"), QoS::AtLeastOnce, false, event)
        .await
        .expect("event");
    wait_for("the device's state", PATIENCE, || {
        fleet.store().get("cam-01").ok().flatten().is_some_and(|d| {
            d.online && d.telemetry.as_ref().is_some_and(|t| t.seq == 7) && d.unreadable == 1
        })
    })
    .await;

    // The HTTP routes, served the way the hub serves them.
    let app = tandem_hub::fleet::http::routes::<()>(fleet.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let list: Value = get_json(&http, &format!("{base}/v1/fleet")).await;
    let d = &list["devices"][0];
    assert_eq!(d["device"], "cam-01", "{list}");
    assert_eq!(d["online"], true, "{list}");
    assert_eq!(d["agent_version"], "0.1.0", "{list}");
    assert_eq!(d["models"][0]["ep"], "cpu", "{list}");
    // The fixture's routes: 1010 local, 170 cloud, 20 degraded (local) of 1200 answers.
    assert_eq!(d["offload_share"], 170.0 / 1200.0, "{list}");
    assert_eq!(d["degraded_share"], 20.0 / 1200.0, "{list}");
    // The sampled event, kept for the console's device page.
    wait_for("the event in the series", PATIENCE, || {
        fleet
            .series()
            .read("cam-01", 0, u64::MAX)
            .is_some_and(|a| a.events.iter().any(|e| e.event.label == "Sneaker"))
    })
    .await;
    let series: Value = get_json(&http, &format!("{base}/v1/fleet/cam-01/series")).await;
    assert_eq!(series["events"][0]["event"]["route"], "local", "{series}");
    let one: Value = get_json(&http, &format!("{base}/v1/fleet/cam-01")).await;
    assert_eq!(
        one["telemetry"]["models"]["vision-fashion"]["inferences"]["ok"], 1200,
        "{one}"
    );
    assert!(
        one["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("version")),
        "{one}"
    );
    assert_eq!(
        http.get(format!("{base}/v1/fleet/cam-99"))
            .send()
            .await
            .expect("GET")
            .status(),
        404
    );

    // A command and its result.
    let r = http
        .post(format!("{base}/v1/fleet/cam-01/cmd/set_threshold"))
        .json(&json!({"model": "vision-fashion", "threshold": 0.8}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["ok"], true, "{body}");
    assert!(body["id"].as_str().is_some_and(|i| !i.is_empty()), "{body}");
    // One the device refuses: 422 with the device's error.
    let r = http
        .post(format!("{base}/v1/fleet/cam-01/cmd/set_policy"))
        .json(&json!({"mode": "cloud"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "not here", "{body}");
    // Ones the shared schema refuses: 400 from the hub, and nothing sent (the device above
    // would have answered ok to any set_threshold).
    let sent = fleet
        .link()
        .stats()
        .commands
        .load(std::sync::atomic::Ordering::Relaxed);
    for (name, bad, says) in [
        (
            "set_threshold",
            json!({"model": "vision-fashion"}),
            "threshold",
        ),
        (
            "set_threshold",
            json!({"model": "vision-fashion", "threshold": 5.0}),
            "out of range",
        ),
        (
            "update_model",
            json!({"model": "vision-fashion", "version": "../x"}),
            "version",
        ),
        ("reboot", json!({}), "unknown command"),
    ] {
        let r = http
            .post(format!("{base}/v1/fleet/cam-01/cmd/{name}"))
            .json(&bad)
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.expect("json");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(says)),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        fleet
            .link()
            .stats()
            .commands
            .load(std::sync::atomic::Ordering::Relaxed),
        sent,
        "refused commands are not published"
    );
    // A device that never answers: 504.
    let r = http
        .post(format!(
            "{base}/v1/fleet/cam-02/cmd/telemetry_now?timeout_ms=300"
        ))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 504);
    // A bad device name: 400.
    let r = http
        .post(format!("{base}/v1/fleet/Cam_02/cmd/telemetry_now"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);

    // Offline, then the metrics.
    dev.publish(
        Topic::status("cam-01"),
        QoS::AtLeastOnce,
        true,
        Status::offline(Some(2), "shutdown").encode(),
    )
    .await
    .expect("offline");
    wait_for("offline", PATIENCE, || {
        fleet
            .store()
            .get("cam-01")
            .ok()
            .flatten()
            .is_some_and(|d| !d.online)
    })
    .await;
    let text = fleet.render();
    for line in [
        "tandem_hub_broker_up 1",
        "tandem_hub_mqtt_connected 1",
        "tandem_hub_mqtt_unreadable_total 1",
        "tandem_hub_fleet_device_online{device=\"cam-01\"} 0",
        "tandem_hub_fleet_inferences_total{device=\"cam-01\",model=\"vision-fashion\",outcome=\"ok\"} 1200",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}`:\n{text}");
    }
    svc.stop().await;
}
