//! Set-up shared by the tests that drive the hub's fleet over its supervised mosquitto: the
//! hub side (PKI, fleet service, its MQTT client connected) and a simulated device's MQTT
//! client with its own certificate. What each device does with its messages stays in its test.

use rumqttc::{AsyncClient, EventLoop, MqttOptions, Transport};
use std::path::Path;
use std::time::Duration;
use tandem_hub::config::Config;
use tandem_hub::fleet::FleetService;
use tandem_hub::pki::Pki;
use tandem_shared::mqtt::BrokerUrl;
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
