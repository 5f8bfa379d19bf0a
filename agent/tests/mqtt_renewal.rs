//! A certificate renewal reaches the agent's MQTT link while it publishes as fast as the broker
//! takes messages (the link's event loop is always busy, and polls the connection first):
//! against the hub's real supervised mosquitto and PKI.
//!
//! - the link reconnects with the renewed certificate while the load goes on, and messages
//!   keep being acknowledged on the new connection;
//! - the hub then supersedes (revokes) the old certificate and mosquitto reloads its CRL (a
//!   client presenting the old certificate is then refused); mosquitto is killed and the hub
//!   restarts it: the link connects again and publishing resumes, which only the renewed
//!   identity can do;
//! - shutdown still stops the busy link.

mod common;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Transport};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tandem_agent::telemetry::{AgentCounters, Class};
use tandem_agent::uplink::HubConfig;
use tandem_agent::uplink::mqtt::{Handler, MqttConfig, MqttLink, Outgoing, config::tls_config};
use tandem_hub::pki::{Pki, Purpose};
use tandem_shared::mqtt::{BrokerUrl, Status, Topic};
use tandem_tests::wait_for;

const PATIENCE: Duration = Duration::from_secs(30);
const DEVICE: &str = "cam-01";

/// Sends nothing of its own.
struct Quiet;

impl Handler for Quiet {
    fn online(&self) -> Vec<u8> {
        Status::online(0, "test", vec![]).encode()
    }

    fn command(&self, _name: &str, _payload: &[u8]) -> Vec<Outgoing> {
        Vec::new()
    }
}

/// A renewal as the agent does it: a new key, a request the hub signs; the certificate and key
/// written under `dir`. Returns the `[hub]` files and the new serial.
fn renew(pki: &Pki, dir: &Path) -> (HubConfig, u64) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(rcgen::DnType::CommonName, DEVICE);
    let csr = p.serialize_request(&key).expect("csr");
    let signed = pki
        .sign_request(DEVICE, csr.der(), Duration::from_secs(3600), Purpose::Renew)
        .expect("the hub signs the renewal");
    let (cert, key_path) = (dir.join("renewed.pem"), dir.join("renewed.key"));
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", signed.der));
    std::fs::write(&cert, pem).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    let hub = HubConfig {
        ca: pki.dir().join("ca.pem"),
        cert,
        key: key_path,
        ..HubConfig::default()
    };
    (hub, signed.record.serial)
}

/// Whether a plain client presenting `hub`'s certificate gets a CONNACK (the broker makes its
/// CN the client id).
async fn accepted(url: &BrokerUrl, hub: &HubConfig) -> bool {
    let (tls, _) = tls_config(hub, Path::to_path_buf).expect("tls");
    let mut o = MqttOptions::new("probe", url.host.clone(), url.port);
    o.set_transport(Transport::tls_with_config(tls.into()));
    let (_client, mut el) = AsyncClient::new(o, 8);
    loop {
        match tokio::time::timeout(PATIENCE, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return false,
            Err(_) => panic!("the probe got neither a CONNACK nor an error"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_the_link_under_publish_load() {
    let (dir, pki, broker) = common::mqtt::broker(DEVICE).await;
    let url = broker.url();
    let (cert, key) = pki.device_files(DEVICE);
    let old = HubConfig {
        ca: pki.dir().join("ca.pem"),
        cert,
        key,
        ..HubConfig::default()
    };
    let (tls, _) = tls_config(&old, Path::to_path_buf).expect("tls");
    let cfg = MqttConfig {
        url: url.to_string(),
        telemetry_qos: 1,
        ..MqttConfig::default()
    };
    let counters = Arc::new(AgentCounters::default());
    let link = Arc::new(MqttLink::start(
        &url,
        tls,
        DEVICE,
        &cfg,
        counters.clone(),
        Arc::new(Quiet),
    ));
    let m = &counters.mqtt;
    wait_for("the first connection", PATIENCE, || {
        m.connected.load(Relaxed)
    })
    .await;

    // Load: telemetry as fast as the link takes it (waiting for room, never refused).
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (link, stop) = (link.clone(), stop.clone());
        async move {
            let topic = Topic::telemetry(DEVICE);
            while !stop.load(Relaxed) {
                let m = Outgoing {
                    class: Class::Telemetry,
                    topic: topic.clone(),
                    payload: vec![b'x'; 512],
                };
                if !link.publish_when_room(m).await {
                    return;
                }
            }
        }
    });
    let acked = || m.acked.load(Relaxed);
    wait_for("messages acknowledged under load", PATIENCE, || {
        acked() >= 2_000
    })
    .await;

    // Renewal while loaded: the link moves to the new certificate, and the load goes on.
    let (renewed, serial) = renew(&pki, dir.path());
    let (tls, _) = tls_config(&renewed, Path::to_path_buf).expect("renewed tls");
    let before = acked();
    link.reload_identity(tls);
    wait_for(
        "the reconnection with the renewed certificate",
        PATIENCE,
        || m.connects.load(Relaxed) >= 2 && m.connected.load(Relaxed),
    )
    .await;
    assert!(!load.is_finished(), "the load was still running");
    let reconnected = acked();
    assert!(reconnected > before, "acknowledged while renewing");
    wait_for(
        "messages acknowledged on the new connection",
        PATIENCE,
        || acked() >= reconnected + 2_000,
    )
    .await;

    // The hub supersedes the old certificate: mosquitto reloads its CRL (SIGHUP), which
    // refuses the old certificate's next handshake.
    let revoked = pki.supersede(DEVICE, serial, 3600).expect("supersede");
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    let stats = broker.stats();
    wait_for("mosquitto reloading the CRL", PATIENCE, || {
        stats.reloads() >= 1
    })
    .await;
    assert!(!accepted(&url, &old).await, "the superseded certificate");
    // mosquitto dies and the hub starts it again: the link connects again and publishing
    // resumes, which only the renewed certificate can do now.
    let pid = stats.pid().expect("mosquitto runs");
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill mosquitto");
    wait_for(
        "the reconnection after the broker's restart",
        PATIENCE,
        || m.connects.load(Relaxed) >= 3 && m.connected.load(Relaxed),
    )
    .await;
    let again = acked();
    wait_for("messages acknowledged after the restart", PATIENCE, || {
        acked() >= again + 2_000
    })
    .await;
    assert!(stats.restarts() >= 1);

    // Shutdown stops the link although its connection is always ready.
    stop.store(true, Relaxed);
    link.shutdown(Duration::from_secs(5)).await;
    tokio::time::timeout(PATIENCE, load)
        .await
        .expect("the load ends")
        .expect("the load task");
    assert!(!m.connected.load(Relaxed));
    broker.stop().await;
}
