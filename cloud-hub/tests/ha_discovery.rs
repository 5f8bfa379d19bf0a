//! Home Assistant discovery end to end: `tandem-hub run` with `mqtt.ha_discovery = true` and
//! its own mosquitto, a real `tandem-agent` (cam-01) answering inferences and sending
//! telemetry, and a read-only subscriber that does what Home Assistant does: reads the
//! retained discovery configs, subscribes to the state topics they name and renders their
//! `value_template`s (Jinja, with minijinja) over the real status and telemetry, getting the
//! values the payloads hold.

mod common;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tandem_hub::pki::Pki;
use tandem_hub::pki::subscriber::subscriber_files;
use tandem_shared::mqtt::BrokerUrl;
use tandem_tests::daemon::Daemon;
use tandem_tests::tls::client_config;

const PATIENCE: Duration = Duration::from_secs(30);

/// The subscriber's client, subscribed to `filters`.
async fn subscriber(
    pki: &Pki,
    url: &BrokerUrl,
    out: &std::path::Path,
    filters: &[&str],
) -> (AsyncClient, EventLoop) {
    let tls = client_config(&pki.dir().join("ca.pem"), Some(subscriber_files(out, "ha")));
    let mut o = MqttOptions::new("ha", url.host.clone(), url.port);
    o.set_transport(Transport::tls_with_config(tls.into()))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (c, ev) = AsyncClient::new(o, 64);
    for f in filters {
        c.subscribe(*f, QoS::AtLeastOnce).await.expect("subscribe");
    }
    (c, ev)
}

/// The next message within `wait`, if any.
async fn next_message(ev: &mut EventLoop, wait: Duration) -> Option<(String, Vec<u8>)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ev.poll()).await {
            Err(_) => return None,
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                return Some((p.topic.clone(), p.payload.to_vec()));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the subscriber lost the broker: {e}"),
        }
    }
}

fn render(template: &str, payload: &Value) -> String {
    minijinja::Environment::new()
        .render_str(template, minijinja::context! { value_json => payload })
        .unwrap_or_else(|e| panic!("template `{template}`: {e}"))
        .trim()
        .to_string()
}

fn number(text: &str) -> f64 {
    text.parse()
        .unwrap_or_else(|e| panic!("`{text}` is not a number: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_follows_discovery_to_a_real_agents_values() {
    let (_, mqtt_port) = tandem_tests::net::free_ports();
    let mqtt = format!(
        "listen = \"127.0.0.1:{mqtt_port}\"\nruntime_dir = \"run/mqtt\"\nha_discovery = true"
    );
    let hub = Daemon::hub_with("ha-hub", "", &mqtt);
    let url = BrokerUrl {
        host: "127.0.0.1".into(),
        port: mqtt_port,
    };
    let pki = Pki::open(&hub.dir.join("pki")).expect("pki");
    pki.add_device("cam-01", 30).expect("device");
    let out = hub.dir.join("subscribers");
    pki.add_subscriber("ha", 30, &out).expect("subscriber");

    let file = |p: std::path::PathBuf| p.display().to_string();
    let (cert, key) = pki.device_files("cam-01");
    let agent = Daemon::agent(
        "ha-agent",
        &format!(
            "[hub]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [mqtt]\nurl = \"mqtts://127.0.0.1:{mqtt_port}\"\ntelemetry_interval_ms = 300\nevents_sample_rate = 0.0\n",
            file(pki.dir().join("ca.pem")),
            file(cert),
            file(key)
        ),
        None,
    );
    let http = reqwest::Client::new();
    let png = std::fs::read(common::repo().join("models/vision-fashion/samples/0_9.png"))
        .expect("sample");
    for _ in 0..5 {
        let (status, v) = common::classify(&http, &agent.base, "vision-fashion", &png).await;
        assert_eq!(status, 200, "{v}");
    }

    // The discovery configs, retained: read them once the broker's ACL admits the subscriber
    // (it is reloaded within mqtt.crl_check_ms of `subscriber add`).
    let t = Instant::now();
    let mut configs: BTreeMap<String, Value> = BTreeMap::new();
    while configs.len() < 6 {
        assert!(
            t.elapsed() < PATIENCE,
            "discovery configs seen: {configs:?}"
        );
        let (_c, mut ev) = subscriber(&pki, &url, &out, &["homeassistant/#"]).await;
        while let Some((topic, payload)) = next_message(&mut ev, Duration::from_secs(2)).await {
            let v: Value = serde_json::from_slice(&payload).expect("a config is JSON");
            configs.insert(topic, v);
        }
    }
    let names: Vec<&str> = configs.keys().map(String::as_str).collect();
    let node = "homeassistant/sensor/tandem_cam-01";
    assert_eq!(
        names,
        [
            "homeassistant/binary_sensor/tandem_cam-01/online/config".to_string(),
            format!("{node}/latency_text-sentiment/config"),
            format!("{node}/latency_vision-fashion/config"),
            format!("{node}/offload_share/config"),
            format!("{node}/version_text-sentiment/config"),
            format!("{node}/version_vision-fashion/config"),
        ],
        "one entity per model and per device"
    );

    // Follow the state topics the configs name; render each template over what arrives.
    let state_topics: Vec<String> = {
        let mut t: Vec<String> = configs
            .values()
            .map(|c| c["state_topic"].as_str().expect("state_topic").to_string())
            .collect();
        t.sort();
        t.dedup();
        t
    };
    assert_eq!(
        state_topics,
        ["tandem/cam-01/status", "tandem/cam-01/telemetry"]
    );
    let filters: Vec<&str> = state_topics.iter().map(String::as_str).collect();
    let (_c, mut ev) = subscriber(&pki, &url, &out, &filters).await;
    let mut status: Option<Value> = None;
    let mut telemetry: Option<Value> = None;
    let t = Instant::now();
    while status.is_none() || telemetry.is_none() {
        assert!(t.elapsed() < PATIENCE, "no state: {status:?} {telemetry:?}");
        let Some((topic, payload)) = next_message(&mut ev, PATIENCE).await else {
            continue;
        };
        let v: Value = serde_json::from_slice(&payload).expect("JSON state");
        if topic.ends_with("/status") {
            status = Some(v);
        } else if v["models"]["vision-fashion"]["latency"]["count"]
            .as_u64()
            .is_some_and(|n| n >= 5)
        {
            telemetry = Some(v);
        }
    }
    let (status, telemetry) = (status.expect("status"), telemetry.expect("telemetry"));
    for (topic, c) in &configs {
        let state = if c["state_topic"] == "tandem/cam-01/status" {
            &status
        } else {
            &telemetry
        };
        let value = render(c["value_template"].as_str().expect("template"), state);
        eprintln!("{topic}: {value}");
        if topic.contains("/online/") {
            assert_eq!(value, c["payload_on"].as_str().expect("payload_on"));
        } else if let Some(model) = topic
            .split('/')
            .nth(3)
            .and_then(|o| o.strip_prefix("version_"))
        {
            let served = status["models"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["name"] == model))
                .unwrap_or_else(|| panic!("{model} in the status: {status}"));
            assert_eq!(value, served["version"].as_str().expect("version"));
        } else if topic.contains("/latency_vision-fashion/") {
            let l = &telemetry["models"]["vision-fashion"]["latency"];
            let mean_ms =
                1000.0 * l["sum_s"].as_f64().expect("sum") / l["count"].as_f64().expect("count");
            assert!(mean_ms > 0.0);
            assert!(
                (number(&value) - mean_ms).abs() <= 0.006,
                "{value} vs {mean_ms}"
            );
        } else if topic.contains("/latency_text-sentiment/") {
            assert_eq!(number(&value), 0.0, "no text inference yet");
        } else if topic.contains("/offload_share/") {
            let routes = telemetry["routes"].as_array().expect("routes");
            let total: f64 = routes.iter().filter_map(|r| r["count"].as_f64()).sum();
            let cloud: f64 = routes
                .iter()
                .filter(|r| r["route"] == "cloud")
                .filter_map(|r| r["count"].as_f64())
                .sum();
            assert!(total >= 5.0, "{telemetry}");
            assert!(
                (number(&value) - 100.0 * cloud / total).abs() <= 0.051,
                "{value}"
            );
        }
    }
    drop(agent);
    drop(hub);
}
