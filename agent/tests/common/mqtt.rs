//! A real broker for MQTT tests: the hub's PKI with one device, and the hub's supervised
//! mosquitto on a free loopback port; and the hub's view of device `cam-01`'s topics.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use std::path::PathBuf;
use std::time::Duration;
use tandem_hub::broker::{Broker, BrokerSpec};
use tandem_hub::pki::Pki;
use tandem_shared::mqtt::{BrokerUrl, CommandResult, Telemetry};
use tandem_tests::tls::client_config;
use tokio::sync::mpsc;

/// How long a test waits for a message it expects.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A temporary folder holding a PKI with `device` enrolled, and mosquitto serving it.
pub async fn broker(device: &str) -> (tempfile::TempDir, Pki, Broker) {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&dir.path().join("pki")).expect("pki");
    pki.add_device(device, 30).expect("device");
    let broker = Broker::start(BrokerSpec {
        mosquitto_bin: PathBuf::new(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        pki_dir: pki.dir().to_path_buf(),
        runtime_dir: dir.path().join("run"),
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_secs(2),
        ready_timeout: Duration::from_secs(10),
        crl_check: Duration::from_secs(1),
    })
    .await
    .expect("mosquitto starts (run `make setup`)");
    (dir, pki, broker)
}

/// The `[hub]` certificates of `device` and the `[mqtt]` url for a daemon's config file
/// (ends inside `[mqtt]`, so more of its keys may follow).
pub fn daemon_sections(pki: &Pki, broker: &Broker, device: &str) -> String {
    let (cert, key) = pki.device_files(device);
    format!(
        "[hub]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n[mqtt]\nurl = \"{}\"\n",
        pki.dir().join("ca.pem").display(),
        cert.display(),
        key.display(),
        broker.url()
    )
}

/// The hub's view: an MQTT client with the hub certificate, subscribed to `filter`.
pub struct HubView {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    /// Messages received while waiting for another topic, oldest first.
    backlog: Vec<(String, Vec<u8>, bool)>,
}

impl HubView {
    /// Connects with the hub certificate of `pki` to `broker` and subscribes to `filter`.
    pub async fn connect(pki: &Pki, broker: &Broker, filter: &str) -> HubView {
        let url: BrokerUrl = broker.url();
        let dir = pki.dir();
        let tls = client_config(
            &dir.join("ca.pem"),
            Some((dir.join("hub.pem"), dir.join("hub.key"))),
        );
        let mut o = MqttOptions::new("tandem-hub", url.host.clone(), url.port);
        o.set_transport(Transport::tls_with_config(tls.into()))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sub = client.clone();
        let filter = filter.to_string();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        sub.subscribe(filter.clone(), QoS::AtLeastOnce)
                            .await
                            .expect("subscribe");
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send((p.topic.clone(), p.payload.to_vec(), p.retain))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(PATIENCE, ready_rx)
            .await
            .expect("the hub's client subscribed in time")
            .expect("hub client alive");
        HubView {
            client,
            rx,
            backlog: Vec::new(),
        }
    }

    /// The next message on `topic` (others are kept for later calls).
    pub async fn next_on(&mut self, topic: &str) -> (Vec<u8>, bool) {
        if let Some(i) = self.backlog.iter().position(|(t, _, _)| t == topic) {
            let (_, body, retain) = self.backlog.remove(i);
            return (body, retain);
        }
        let t = std::time::Instant::now();
        loop {
            let left = PATIENCE.saturating_sub(t.elapsed());
            let (tp, body, retain) = tokio::time::timeout(left, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing on {topic} in time"))
                .expect("hub client alive");
            if tp == topic {
                return (body, retain);
            }
            self.backlog.push((tp, body, retain));
        }
    }

    /// The first telemetry message that satisfies `cond`.
    pub async fn telemetry_where(&mut self, cond: impl Fn(&Telemetry) -> bool) -> Telemetry {
        let t = std::time::Instant::now();
        loop {
            assert!(t.elapsed() < PATIENCE, "no telemetry as expected in time");
            let (body, _) = self.next_on("tandem/cam-01/telemetry").await;
            let tm = Telemetry::decode(&body).expect("telemetry reads with the shared schema");
            if cond(&tm) {
                return tm;
            }
        }
    }

    pub async fn command(&mut self, name: &str, payload: &[u8]) -> CommandResult {
        self.client
            .publish(
                format!("tandem/cam-01/cmd/{name}"),
                QoS::AtLeastOnce,
                false,
                payload.to_vec(),
            )
            .await
            .expect("publish");
        let (body, _) = self
            .next_on(&format!("tandem/cam-01/cmd/{name}/result"))
            .await;
        CommandResult::decode(&body).expect("result reads with the shared schema")
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        // Let the broker see it before the next client with the same identity connects.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
