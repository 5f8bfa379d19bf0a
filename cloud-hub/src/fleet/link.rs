//! The hub's own MQTT client: TLS with the hub certificate (identity `tandem-hub`), subscribed
//! to every device's status, telemetry, sampled events and command results; it feeds the
//! [`FleetStore`] (and each newer telemetry message and every event to the per-device series,
//! `crate::series`) and
//! publishes commands, matching each result to its waiting caller by (device, id); snapshot
//! requests go out through it and their replies come back the same way (`super::snapshot`).
//! What each received message does is `super::dispatch`'s; this file is the connection.
//!
//! It reconnects on its own (full-jitter backoff: a random wait up to 0.2 s, doubling to 5 s)
//! and subscribes again on every connection, ahead of anything queued.

use super::discovery::Discovery;
use super::dispatch::{Sinks, Waiters, dispatch};
use super::snapshot::SnapshotWaiters;
use super::store::FleetStore;
use crate::series::SeriesStore;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Request, Subscribe, SubscribeFilter,
    Transport,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tandem_shared::backoff::Backoff;
use tandem_shared::mqtt::{
    BrokerUrl, Command, CommandResult, State, Status, Topic, TopicKind, topic,
};
use tokio::sync::{oneshot, watch};

/// Largest MQTT packet either way, in bytes.
const MAX_PACKET_BYTES: usize = super::super::broker::mosquitto::MAX_PACKET_BYTES;

/// Why a command got no result.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The device or command name cannot be a topic level.
    #[error("{0}")]
    BadName(String),
    /// The body is not a JSON object.
    #[error("the command body must be a JSON object")]
    NotObject,
    /// The command does not pass the shared schema (unknown name, a missing or unknown field,
    /// an argument out of its range): refused before anything is sent.
    #[error("command refused before sending: {0}")]
    Invalid(String),
    /// Not connected to the broker.
    #[error("the hub is not connected to the MQTT broker")]
    NotConnected,
    /// No result in time.
    #[error("device `{device}` did not answer within {ms} ms (offline, or the command was lost)")]
    Timeout {
        /// Device.
        device: String,
        /// The wait.
        ms: u64,
    },
}

/// Why the link cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The hub certificate, key or CA.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the material.
    #[error("MQTT TLS configuration: {0}")]
    Tls(String),
}

/// The link's counters.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Connections made.
    pub connects: AtomicU64,
    /// Messages received, by kind (`status`, `telemetry`, `result`, `event`, `snapshot`,
    /// `other`).
    pub received: Mutex<BTreeMap<&'static str, u64>>,
    /// Messages that could not be read.
    pub unreadable: AtomicU64,
    /// Commands published.
    pub commands: AtomicU64,
    /// Snapshot requests published.
    pub snapshot_requests: AtomicU64,
    /// The last connection error.
    pub last_error: Mutex<Option<String>>,
}

/// The hub's MQTT client.
#[derive(Debug)]
pub struct Link {
    pub(super) client: AsyncClient,
    waiters: Arc<Waiters>,
    pub(super) snapshots: Arc<SnapshotWaiters>,
    pub(super) stats: Arc<LinkStats>,
    pub(super) next_id: AtomicU64,
    stop: watch::Sender<bool>,
}

/// rustls client configuration: the PKI's CA as the only root, the hub certificate as the
/// client identity.
pub fn tls_config(pki_dir: &Path) -> Result<rustls::ClientConfig, LinkError> {
    let pem = |p: &Path| {
        let path = p.display().to_string();
        move |e: rustls_pki_types::pem::Error| LinkError::Pem {
            path,
            message: e.to_string(),
        }
    };
    let (ca, cert, key) = (
        pki_dir.join("ca.pem"),
        pki_dir.join("hub.pem"),
        pki_dir.join("hub.key"),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca).map_err(pem(&ca))?)
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    rustls::ClientConfig::builder_with_provider(crate::ingress::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| LinkError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(&cert).map_err(pem(&cert))?],
            PrivateKeyDer::from_pem_file(&key).map_err(pem(&key))?,
        )
        .map_err(|e| LinkError::Tls(e.to_string()))
}

/// Milliseconds since the Unix epoch (hub clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Link {
    /// Connects (in the background) to `url` as the hub; received state goes to `store`;
    /// with `ha_discovery`, devices heard online are announced to Home Assistant
    /// ([`super::discovery`]).
    pub fn start(
        url: &BrokerUrl,
        pki_dir: &Path,
        client_id: &str,
        store: FleetStore,
        series: Arc<dyn SeriesStore>,
        ha_discovery: bool,
    ) -> Result<Self, LinkError> {
        let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
        opts.set_transport(Transport::tls_with_config(tls_config(pki_dir)?.into()))
            .set_keep_alive(Duration::from_secs(10))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        let (client, eventloop) = AsyncClient::new(opts, 256);
        let waiters = Arc::new(Waiters::default());
        let snapshots = Arc::new(SnapshotWaiters::default());
        let stats = Arc::new(LinkStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let discovery = ha_discovery.then(|| (client.clone(), Discovery::default()));
        tokio::spawn(run(
            eventloop,
            Sinks {
                store,
                series,
                snapshots: snapshots.clone(),
            },
            waiters.clone(),
            stats.clone(),
            discovery,
            stop_rx,
        ));
        Ok(Self {
            client,
            waiters,
            snapshots,
            stats,
            next_id: AtomicU64::new(1),
            stop,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Publishes command `name` with `body` (a JSON object; `v` and `id` are set by the hub)
    /// to `device` and waits up to `timeout` for its result.
    pub async fn command(
        &self,
        device: &str,
        name: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<CommandResult, CommandError> {
        if !topic::valid_device_name(device) {
            return Err(CommandError::BadName(format!(
                "`{device}` is not a valid device name"
            )));
        }
        if !topic::valid_command_name(name) {
            return Err(CommandError::BadName(format!(
                "`{name}` is not a valid command name"
            )));
        }
        let serde_json::Value::Object(mut body) = body else {
            return Err(CommandError::NotObject);
        };
        let id = format!("h{}-{}", now_ms(), self.next_id.fetch_add(1, Relaxed));
        body.insert("v".into(), tandem_shared::mqtt::VERSION.into());
        body.insert("id".into(), id.clone().into());
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        // The device would refuse it with the same words: say so now, and send nothing.
        Command::decode(name, &payload).map_err(|e| CommandError::Invalid(e.error.to_string()))?;
        if !self.stats.connected.load(Relaxed) {
            return Err(CommandError::NotConnected);
        }
        let key = (device.to_string(), id);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), tx);
        let sent = self
            .client
            .publish(
                Topic::command(device, name),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await;
        let result = match sent {
            Err(_) => Err(CommandError::NotConnected),
            Ok(()) => {
                self.stats.commands.fetch_add(1, Relaxed);
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(r)) => Ok(r),
                    _ => Err(CommandError::Timeout {
                        device: device.to_string(),
                        ms: timeout.as_millis() as u64,
                    }),
                }
            }
        };
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        result
    }

    /// Snapshot requests waiting for their reply.
    pub fn snapshot_waiters(&self) -> &Arc<SnapshotWaiters> {
        &self.snapshots
    }

    /// Disconnects and stops the background task.
    pub async fn stop(&self) {
        let _ = self.client.disconnect().await;
        let _ = self.stop.send(true);
    }
}

async fn run(
    mut eventloop: EventLoop,
    sinks: Sinks,
    waiters: Arc<Waiters>,
    stats: Arc<LinkStats>,
    discovery: Option<(AsyncClient, Discovery)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.wait_for(|s| *s) => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                stats.connected.store(true, Relaxed);
                stats.connects.fetch_add(1, Relaxed);
                let filters = [
                    topic::ALL_STATUS,
                    topic::ALL_TELEMETRY,
                    topic::ALL_EVENTS,
                    topic::ALL_RESULTS,
                    topic::ALL_SNAPSHOTS,
                ]
                .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
                eventloop
                    .pending
                    .push_front(Request::Subscribe(Subscribe::new_many(filters)));
                tracing::info!("hub connected to the MQTT broker");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                dispatch(&p.topic, &p.payload, &sinks, &waiters, &stats);
                if let Some((client, d)) = &discovery
                    && let Ok(t) = Topic::parse(&p.topic)
                    && t.kind == TopicKind::Status
                    && let Ok(s) = Status::decode(&p.payload)
                    && s.state == State::Online
                {
                    d.on_status(client, &t.device, &s);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if stats.connected.swap(false, Relaxed) {
                    tracing::warn!(error = %e, "hub lost the MQTT broker; reconnecting");
                } else {
                    tracing::debug!(error = %e, "hub cannot reach the MQTT broker");
                }
                *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}
