//! Set-up shared by the tests that drive the hub's fleet over its supervised mosquitto: the
//! hub side (PKI, fleet service, its MQTT client connected) and a simulated device's MQTT
//! client with its own certificate, and a device that answers commands (what else a device
//! does with its messages stays in its test).
#![allow(dead_code)] // each test file uses its own part of the kit

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use std::path::Path;
use std::time::Duration;
use tandem_hub::config::Config;
use tandem_hub::fleet::FleetService;
use tandem_hub::pki::Pki;
use tandem_shared::mqtt::{BrokerUrl, Command, CommandResult, ModelStatus, Status, Topic};
use tandem_tests::tls::client_config;
use tandem_tests::wait_for;

/// A development PKI under `dir`, the hub's fleet service over its own mosquitto on a free
/// port, and the broker's URL, once the hub's own client is connected (within `patience`).
pub async fn fleet_hub(dir: &Path, patience: Duration) -> (Pki, FleetService, BrokerUrl) {
    let pki = Pki::init(&dir.join("pki")).expect("pki");
    let mut cfg = Config {
        base_dir: dir.to_path_buf(),
        ..Default::default()
    };
    cfg.mqtt.listen = "127.0.0.1:0".into();
    let svc = FleetService::start(&cfg)
        .await
        .expect("starts (run `make setup` for mosquitto)")
        .expect("mqtt on");
    let url = svc.broker().expect("embedded").url();
    let fleet = svc.fleet();
    wait_for("the hub's client", patience, || {
        fleet
            .link()
            .stats()
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    (pki, svc, url)
}

/// The MQTT client of device `name` (its certificate from `pki`, mutual TLS to `url`); the
/// caller polls the event loop.
pub fn device_client(pki: &Pki, url: &BrokerUrl, name: &str) -> (AsyncClient, EventLoop) {
    let (cert, key) = pki.device_files(name);
    let tls = client_config(&pki.dir().join("ca.pem"), Some((cert, key)));
    let mut o = MqttOptions::new(name, url.host.clone(), url.port);
    o.set_transport(Transport::tls_with_config(tls.into()))
        .set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(o, 64)
}

/// Device cam-01 that answers `set_threshold` with ok and anything else with an error (the
/// caller publishes its status and telemetry).
pub fn answering_device(pki: &Pki, url: &BrokerUrl) -> AsyncClient {
    let (c, mut ev) = device_client(pki, url, "cam-01");
    let c2 = c.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    c2.subscribe("tandem/cam-01/cmd/+", QoS::AtLeastOnce)
                        .await
                        .expect("subscribe");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let name = p.topic.rsplit('/').next().unwrap_or("").to_string();
                    let result = match Command::decode(&name, &p.payload) {
                        Ok((id, Command::SetThreshold { .. })) => CommandResult::ok(&id),
                        Ok((id, _)) => CommandResult::error(Some(&id), "not here"),
                        Err(e) => CommandResult::error(e.id.as_deref(), e.to_string()),
                    };
                    c2.publish(
                        Topic::command_result("cam-01", &name),
                        QoS::AtLeastOnce,
                        false,
                        result.encode(),
                    )
                    .await
                    .expect("result");
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    c
}

/// Publishes cam-01's retained `online` status: agent 0.1.0 serving vision-fashion 1.0.0
/// (edge, cpu).
pub async fn publish_online(dev: &AsyncClient) {
    let online = Status::online(
        1,
        "0.1.0",
        vec![ModelStatus {
            name: "vision-fashion".into(),
            version: "1.0.0".into(),
            variant: "edge".into(),
            ep: "cpu".into(),
        }],
    );
    dev.publish(
        Topic::status("cam-01"),
        QoS::AtLeastOnce,
        true,
        online.encode(),
    )
    .await
    .expect("status");
}
