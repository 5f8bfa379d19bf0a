//! The MQTT half of `tandem-bench queue` (issue 4 item 7): the agent's telemetry publish rate
//! at QoS 1 to the hub's mosquitto, next to the broker's own limit measured with a plain
//! rumqttc client, in the same run, over the same TLS listener, with the same payload.
//!
//! - Broker: [`tandem_hub::broker::Broker`], the mosquitto the hub supervises (its generated
//!   configuration: TLS with client certificates from a fresh development PKI, CRL, ACL), on a
//!   free loopback port. Missing mosquitto: [`run`] says why and nothing is measured.
//! - Agent: [`MqttLink`] built as `telemetry::MqttService` builds it (`tls_config` from
//!   `[hub]`'s files, the device name from the certificate's CN, `[mqtt]` defaults) with
//!   `mqtt.telemetry_qos = 1`. Messages are offered with [`MqttLink::offer`], which never
//!   waits: one that does not fit the bounded queue (`mqtt.max_pending`) is refused (counted
//!   here), and the benchmark then hands it to [`MqttLink::publish_when_room`], which waits
//!   for a free place as the plain client's `publish(..).await` does. (Offering it again after
//!   a 1 ms sleep, as this benchmark did first, let the link run dry: 256 queued plus 100 in
//!   flight last about 2.5 ms at 140,000 messages/s, and tokio's 1 ms sleep takes 1 to 2 ms;
//!   that gap was the agent's 0.72–0.75×.) Rate: the broker's PUBACKs, counted by the link
//!   (`tandem_mqtt_acked_total`), from the first offer to the last one acknowledged.
//! - Plain: a rumqttc `AsyncClient` with another device's certificate and the same TLS
//!   settings, inflight window (rumqttc's default, 100) and request channel (`max_pending`),
//!   `publish(..).await` in a loop (waiting, not refused, when full); PUBACKs counted from its
//!   event loop, timed the same way.
//! - Control: a second plain client (a third certificate), the same code as the first: its
//!   ratio to the first is what the broker and the machine alone do to a round.
//! - Payload: one telemetry message, the golden example of docs/mqtt.md (the same bytes for
//!   all three). Rounds of six-leg cycles, each client twice a cycle in a mirrored order
//!   ([`crate::mqtt_rounds`]), so that a change in the machine's load hits all three.
//! - Where a client's time goes (no profiler needed): the producer's time waiting for room in
//!   the full outgoing queue, its time building and handing over messages, and (the agent) the
//!   offers refused. A producer that waits most of the round kept the connection's queue
//!   full: the pace was set by TLS, the event loop and the broker, not by the producer.

use crate::mqtt_rounds::{Client, Leg, Rate, round_schedule};
use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tandem_agent::telemetry::{AgentCounters, Class};
use tandem_agent::uplink::HubConfig;
use tandem_agent::uplink::mqtt::{self, Handler, MqttConfig, MqttLink, Outgoing};
use tandem_hub::broker::{Broker, BrokerError, BrokerSpec};
use tandem_shared::mqtt::{BrokerUrl, Status, Telemetry, Topic};

/// The golden telemetry message (docs/mqtt.md), as the agent encodes it.
const TELEMETRY: &[u8] = include_bytes!("../../shared/tests/fixtures/mqtt/telemetry.json");

/// Longest wait for the acknowledgements of one leg, beyond one second per 1,000 messages.
const ROUND_SLACK: Duration = Duration::from_secs(30);

/// What was measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// The agent's telemetry path.
    pub agent: Rate,
    /// A plain rumqttc client (the reference).
    pub plain: Rate,
    /// A second plain rumqttc client (the control).
    pub control: Rate,
    /// mosquitto's version line.
    pub broker: String,
}

/// Answers nothing: the benchmark sends no commands.
struct Quiet;

impl Handler for Quiet {
    fn online(&self) -> Vec<u8> {
        Status::online(0, tandem_agent::telemetry::report::AGENT_VERSION, vec![]).encode()
    }

    fn command(&self, _name: &str, _payload: &[u8]) -> Vec<Outgoing> {
        Vec::new()
    }
}

/// Measures the three rates, `rounds` rounds of `cycles` six-leg cycles, `messages` a leg;
/// `Ok(Err(why))` when the broker cannot run here (mosquitto missing).
pub fn run(
    mosquitto_bin: &Path,
    messages: u64,
    rounds: u32,
    cycles: u32,
) -> anyhow::Result<Result<Report, String>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let dir = std::env::temp_dir().join(format!("tandem-bench-mqtt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = rt.block_on(measure(mosquitto_bin, &dir, messages, rounds, cycles));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn hub_files(pki: &Path, device: &str) -> HubConfig {
    HubConfig {
        ca: pki.join("ca.pem"),
        cert: pki.join("devices").join(format!("{device}.pem")),
        key: pki.join("devices").join(format!("{device}.key")),
        ..HubConfig::default()
    }
}

async fn measure(
    mosquitto_bin: &Path,
    dir: &Path,
    messages: u64,
    rounds: u32,
    cycles: u32,
) -> anyhow::Result<Result<Report, String>> {
    let pki = tandem_hub::pki::Pki::init(&dir.join("pki")).context("development PKI")?;
    for d in ["bench-agent", "bench-plain", "bench-control"] {
        pki.add_device(d, 1).context("device certificate")?;
    }
    let spec = BrokerSpec {
        mosquitto_bin: mosquitto_bin.to_path_buf(),
        listen: "127.0.0.1:0".parse().context("addr")?,
        pki_dir: pki.dir().to_path_buf(),
        runtime_dir: dir.join("mqtt"),
        restart_backoff: Duration::from_millis(500),
        restart_backoff_max: Duration::from_secs(5),
        ready_timeout: Duration::from_secs(10),
        crl_check: Duration::from_secs(60),
    };
    let broker = match Broker::start(spec).await {
        Ok(b) => b,
        Err(e @ BrokerError::NotInstalled { .. }) => {
            return Ok(Err(format!("{e} (tandem-bench: --mosquitto-bin)")));
        }
        Err(e) => return Ok(Err(format!("mosquitto did not start: {e}"))),
    };
    let version = tandem_hub::broker::mosquitto::find_binary(mosquitto_bin)
        .ok()
        .and_then(|bin| std::process::Command::new(bin).arg("-h").output().ok())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().next().map(str::to_string)
        })
        .unwrap_or_default();
    let url = broker.url();
    let payload = Telemetry::decode(TELEMETRY)
        .context("the golden telemetry reads")?
        .encode();
    let cfg = MqttConfig {
        url: url.to_string(),
        telemetry_qos: 1,
        ..MqttConfig::default()
    };
    let agent = AgentSide::connect(&url, &hub_files(pki.dir(), "bench-agent"), &cfg).await?;
    let plain = PlainSide::connect(&url, &hub_files(pki.dir(), "bench-plain"), &cfg).await?;
    let control = PlainSide::connect(&url, &hub_files(pki.dir(), "bench-control"), &cfg).await?;
    let mut report = Report {
        payload_bytes: payload.len(),
        agent: Rate::default(),
        plain: Rate::default(),
        control: Rate::default(),
        broker: version,
    };
    for round in 0..rounds.max(1) {
        for who in round_schedule(round, cycles) {
            match who {
                Client::Agent => report.agent.add(agent.leg(&payload, messages).await?),
                Client::Plain => report.plain.add(plain.leg(&payload, messages).await?),
                Client::Control => report.control.add(control.leg(&payload, messages).await?),
            }
        }
        for r in [&mut report.agent, &mut report.plain, &mut report.control] {
            r.end_round();
        }
    }
    agent.link.shutdown(Duration::from_secs(2)).await;
    plain.close().await;
    control.close().await;
    broker.stop().await;
    Ok(Ok(report))
}

fn deadline(messages: u64) -> Duration {
    ROUND_SLACK + Duration::from_millis(messages)
}

/// Waits until `acked() >= target`.
async fn acked_by(
    what: &str,
    acked: impl Fn() -> u64,
    target: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let t = Instant::now();
    while acked() < target {
        if t.elapsed() > limit {
            bail!(
                "{what}: {} of {target} acknowledged after {limit:?}",
                acked()
            );
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// The agent's MQTT link, as the agent runs it.
struct AgentSide {
    link: MqttLink,
    counters: Arc<AgentCounters>,
    topic: String,
}

impl AgentSide {
    async fn connect(url: &BrokerUrl, hub: &HubConfig, cfg: &MqttConfig) -> anyhow::Result<Self> {
        let (tls, cert) =
            mqtt::config::tls_config(hub, Path::to_path_buf).context("agent TLS configuration")?;
        let device = mqtt::identity::common_name(&cert).context("device name from the CN")?;
        let counters = Arc::new(AgentCounters::default());
        let link = MqttLink::start(url, tls, &device, cfg, counters.clone(), Arc::new(Quiet));
        // Connected, and its `online` status acknowledged.
        let c = counters.clone();
        acked_by(
            "agent connect",
            || c.mqtt.acked.load(Relaxed),
            1,
            ROUND_SLACK,
        )
        .await
        .with_context(|| {
            format!(
                "the agent's link did not connect: {:?}",
                counters.mqtt.last_error.lock().map(|e| e.clone())
            )
        })?;
        Ok(Self {
            link,
            topic: Topic::telemetry(&device),
            counters,
        })
    }

    /// Offers `n` telemetry messages as fast as the link takes them, waiting for room after a
    /// refusal; until the last is acknowledged.
    async fn leg(&self, payload: &[u8], n: u64) -> anyhow::Result<Leg> {
        let m = &self.counters.mqtt;
        let start = m.acked.load(Relaxed);
        let t = Instant::now();
        let mut leg = Leg {
            messages: n,
            ..Leg::default()
        };
        for _ in 0..n {
            let m = Outgoing {
                class: Class::Telemetry,
                topic: self.topic.clone(),
                payload: payload.to_vec(),
            };
            match self.link.offer(m) {
                Ok(()) => {}
                Err(Some(m)) => {
                    leg.refused += 1;
                    let w = Instant::now();
                    if !self.link.publish_when_room(m).await {
                        bail!("the agent's link stopped");
                    }
                    leg.wait_secs += w.elapsed().as_secs_f64();
                }
                Err(None) => bail!("the agent's link refused a publish with something else"),
            }
        }
        leg.busy_secs = t.elapsed().as_secs_f64() - leg.wait_secs;
        acked_by(
            "agent leg",
            || m.acked.load(Relaxed) - start,
            n,
            deadline(n),
        )
        .await?;
        leg.secs = t.elapsed().as_secs_f64();
        Ok(leg)
    }
}

/// A plain rumqttc client publishing at QoS 1.
struct PlainSide {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    topic: String,
    task: tokio::task::JoinHandle<()>,
}

impl PlainSide {
    async fn connect(url: &BrokerUrl, hub: &HubConfig, cfg: &MqttConfig) -> anyhow::Result<Self> {
        let (tls, cert) =
            mqtt::config::tls_config(hub, Path::to_path_buf).context("plain TLS configuration")?;
        let device = mqtt::identity::common_name(&cert).context("device name from the CN")?;
        let mut o = MqttOptions::new(&device, url.host.clone(), url.port);
        o.set_transport(Transport::tls_with_config(tls.into()))
            .set_keep_alive(Duration::from_millis(cfg.keep_alive_ms))
            .set_clean_session(true);
        let (client, mut el) = AsyncClient::new(o, cfg.max_pending);
        let acked = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let (a, c) = (acked.clone(), connected.clone());
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => c.store(true, Relaxed),
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Relaxed);
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("plain MQTT client: {e}");
                        return;
                    }
                }
            }
        });
        let t = Instant::now();
        while !connected.load(Relaxed) {
            if t.elapsed() > ROUND_SLACK {
                bail!("the plain client did not connect");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self {
            client,
            acked,
            topic: Topic::telemetry(&device),
            task,
        })
    }

    /// Disconnects cleanly (before the broker stops).
    async fn close(self) {
        let _ = self.client.disconnect().await;
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }

    /// Publishes `n` messages, waiting whenever its queue is full; until the last is
    /// acknowledged. Each `publish(..).await` counts as waiting (when there is room it returns
    /// at once, so the wait is a few hundred nanoseconds per message).
    async fn leg(&self, payload: &[u8], n: u64) -> anyhow::Result<Leg> {
        let start = self.acked.load(Relaxed);
        let t = Instant::now();
        let mut leg = Leg {
            messages: n,
            ..Leg::default()
        };
        for _ in 0..n {
            let (topic, payload) = (self.topic.clone(), payload.to_vec());
            let w = Instant::now();
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .context("plain publish")?;
            leg.wait_secs += w.elapsed().as_secs_f64();
        }
        leg.busy_secs = t.elapsed().as_secs_f64() - leg.wait_secs;
        acked_by(
            "plain leg",
            || self.acked.load(Relaxed) - start,
            n,
            deadline(n),
        )
        .await?;
        leg.secs = t.elapsed().as_secs_f64();
        Ok(leg)
    }
}
