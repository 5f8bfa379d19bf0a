//! The hub's supervised mosquitto probed by plain MQTT clients, shared by the broker's tests
//! (`broker.rs`, `subscriber.rs`, `operator_mqtt.rs`): a PKI and broker spec on a free port, and rumqttc clients
//! whose events arrive on a channel.
#![allow(dead_code)] // each test file uses its own part of the kit

use rumqttc::v5::mqttbytes::QoS as Qos5;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason};
use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tandem_hub::broker::BrokerSpec;
use tandem_hub::pki::Pki;
use tandem_shared::mqtt::BrokerUrl;
use tokio::sync::mpsc;

/// Longest wait for anything expected to happen (a failure, never a timing claim).
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub pki: Pki,
    pub runtime: PathBuf,
}

pub fn setup(devices: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&dir.path().join("pki")).expect("pki");
    for d in devices {
        pki.add_device(d, 30).expect("device");
    }
    let runtime = dir.path().join("run");
    Setup {
        _dir: dir,
        pki,
        runtime,
    }
}

pub fn spec(s: &Setup) -> BrokerSpec {
    spec_at(s.pki.dir(), &s.runtime)
}

/// The spec of a broker over the PKI in `pki_dir`, its files in `runtime`.
pub fn spec_at(pki_dir: &Path, runtime: &Path) -> BrokerSpec {
    BrokerSpec {
        mosquitto_bin: PathBuf::new(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        pki_dir: pki_dir.to_path_buf(),
        runtime_dir: runtime.to_path_buf(),
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_secs(2),
        ready_timeout: Duration::from_secs(10),
        crl_check: Duration::from_millis(100),
    }
}

pub fn hub_identity(pki: &Pki) -> Option<(PathBuf, PathBuf)> {
    Some((pki.dir().join("hub.pem"), pki.dir().join("hub.key")))
}

pub fn device_identity(pki: &Pki, name: &str) -> Option<(PathBuf, PathBuf)> {
    Some(pki.device_files(name))
}

/// What a test client saw.
#[derive(Debug)]
pub enum Seen {
    Connected,
    Subscribed,
    Message(String, Vec<u8>),
    Failed(String),
}

/// An MQTT 3.1.1 client whose events arrive on a channel; it does not reconnect.
pub async fn client(
    url: &BrokerUrl,
    id: &str,
    tls: rustls::ClientConfig,
) -> (AsyncClient, mpsc::UnboundedReceiver<Seen>) {
    let mut o = MqttOptions::new(id, url.host.clone(), url.port);
    o.set_transport(Transport::tls_with_config(tls.into()))
        .set_keep_alive(Duration::from_secs(5));
    let (c, mut ev) = AsyncClient::new(o, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected,
                Ok(Event::Incoming(Packet::SubAck(_))) => Seen::Subscribed,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    Seen::Message(p.topic.clone(), p.payload.to_vec())
                }
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Seen::Failed(e.to_string()));
                    return;
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (c, rx)
}

pub async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("an MQTT event in time")
        .expect("client task alive")
}

/// Connects; panics unless the broker accepts.
pub async fn connected(
    url: &BrokerUrl,
    id: &str,
    tls: rustls::ClientConfig,
) -> (AsyncClient, mpsc::UnboundedReceiver<Seen>) {
    let (c, mut rx) = client(url, id, tls).await;
    match next(&mut rx).await {
        Seen::Connected => (c, rx),
        other => panic!("{id}: expected a connection, got {other:?}"),
    }
}

pub async fn subscribe(c: &AsyncClient, rx: &mut mpsc::UnboundedReceiver<Seen>, filter: &str) {
    c.subscribe(filter, QoS::AtLeastOnce).await.expect("queue");
    match next(rx).await {
        Seen::Subscribed => {}
        other => panic!("expected SUBACK for {filter}, got {other:?}"),
    }
}

/// The next message, skipping nothing.
pub async fn message(rx: &mut mpsc::UnboundedReceiver<Seen>) -> (String, Vec<u8>) {
    match next(rx).await {
        Seen::Message(t, p) => (t, p),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Whether a client with this TLS configuration is refused (the connection fails rather than
/// being acknowledged).
pub async fn refused(
    url: &BrokerUrl,
    id: &str,
    tls: rustls::ClientConfig,
) -> Result<String, String> {
    let (_c, mut rx) = client(url, id, tls).await;
    match next(&mut rx).await {
        Seen::Failed(e) => Ok(e),
        other => Err(format!("{id} was let in: {other:?}")),
    }
}

/// Publishes to each topic at QoS 1 over MQTT 5 with this identity; returns the PUBACK reasons in order.
pub async fn publish_all(
    url: &tandem_shared::mqtt::BrokerUrl,
    tls: rustls::ClientConfig,
    topics: &[&str],
) -> Vec<PubAckReason> {
    let mut o = Options5::new("ignored", url.host.clone(), url.port);
    o.set_transport(Transport::tls_with_config(tls.into()));
    let (c, mut ev) = Client5::new(o, 16);
    for t in topics {
        c.publish(*t, Qos5::AtLeastOnce, false, "forged")
            .await
            .expect("queue");
    }
    let mut acks = Vec::new();
    while acks.len() < topics.len() {
        match tokio::time::timeout(PATIENCE, ev.poll())
            .await
            .expect("a PUBACK in time")
        {
            Ok(Event5::Incoming(Packet5::PubAck(a))) => acks.push(a.reason),
            Ok(_) => {}
            Err(e) => panic!("the publisher lost its connection: {e}"),
        }
    }
    acks
}

pub fn ca(s: &Setup) -> PathBuf {
    s.pki.dir().join("ca.pem")
}
