//! The MQTT connection of the agent (rumqttc over TLS with the device certificate).
//!
//! - Client id and identity: the certificate CN (the device name). Last will: `offline`
//!   (`reason: connection_lost`), retained, QoS 1.
//! - On every connect, ahead of anything queued: `online` (retained, QoS 1) and the
//!   subscriptions to `tandem/{device}/cmd/+` and `.../cameras/+/snapshot/get`; the status
//!   again when what it says changes (a model swap, [`MqttLink::publish_status`]).
//! - Outgoing: one bounded queue (`mqtt.max_pending`, rumqttc's request channel). Publishing
//!   never waits: a message that does not fit is dropped and counted by class
//!   (`tandem_mqtt_dropped_total`). Telemetry is QoS 0 (1 with `mqtt.telemetry_qos = 1`),
//!   events QoS 0, results and object events QoS 1; the broker's PUBACKs are counted (`tandem_mqtt_acked_total`),
//!   and a QoS 1 message holds its place in rumqttc's inflight window until acked. What was
//!   being written when a connection dropped may be lost (the session is clean); the events
//!   and object events still waiting in the queue then go to [`Handler::undelivered`] (the
//!   durable queue).
//! - Commands are handled on the connection's task as they arrive (the handler is quick: a
//!   policy update or a telemetry snapshot); their answers go out ahead of the queue.
//! - Snapshot requests (`tandem/{device}/cameras/+/snapshot/get`, subscribed with the
//!   commands) go to [`Handler::snapshot`]: a reply it has at once goes out ahead of the queue;
//!   one that needs the face blur is made in a task of its own (the handler bounds how many)
//!   and joins the outgoing queue (dropped and counted when full).
//! - Reconnects on its own: exponential backoff with full jitter (a random wait up to 0.5 s,
//!   doubling per failure to 30 s; `tandem_shared::backoff`); and at once with a new TLS
//!   identity after a certificate renewal ([`MqttLink::reload_identity`]).
//! - Shutdown: `offline` (`reason: shutdown`), retained, then DISCONNECT (no last will); the
//!   broker's acks are then read until it closes the connection (at most 2 s), so the socket
//!   is not reset with messages the broker has not read yet.
//! - The task polls the connection first (a `biased` select: under load its next event is
//!   almost always ready, and an unbiased select also registers waiters on the other
//!   branches for every event); a stop or a renewed identity is checked once per event, so
//!   neither waits behind a busy connection.

use super::super::super::telemetry::{AgentCounters, Class};
use super::MqttConfig;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing as Out, Packet, Publish, QoS,
    Request, Subscribe, Transport,
};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_shared::backoff::Backoff;
use tandem_shared::mqtt::{BrokerUrl, Status, Topic, TopicKind, payload::MAX_PAYLOAD_BYTES};
use tokio::sync::watch;

/// Largest MQTT packet either way (payload limit plus topic and headers).
const MAX_PACKET_BYTES: usize = MAX_PAYLOAD_BYTES + 64 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// What it is.
    pub class: Class,
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What the link asks of the agent.
pub trait Handler: Send + Sync + 'static {
    /// The `online` status payload, published retained on every connect.
    fn online(&self) -> Vec<u8>;
    /// Handles command `name`; returns what to publish at once (its result, and whatever
    /// else the command produced).
    fn command(&self, name: &str, payload: &[u8]) -> Vec<Outgoing>;
    /// A sampled event that was waiting in the outgoing queue when the connection dropped
    /// (rumqttc would discard it on reconnecting: the session is clean). Default: dropped.
    fn undelivered(&self, _event: Outgoing) {}
    /// A snapshot request for `camera` (`tandem/{device}/cameras/{camera}/snapshot/get`): its
    /// reply now, or a future making it (published when done, ahead of nothing: it joins the
    /// outgoing queue). Default: none (no reply).
    fn snapshot(&self, _camera: &str, _payload: &[u8]) -> Option<Reply> {
        None
    }
}

/// The reply to a request that may take a while (a snapshot: the face blur runs first).
pub enum Reply {
    /// Ready.
    Now(Outgoing),
    /// Made in a task of its own.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Outgoing> + Send>>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Now(o) => f.debug_tuple("Now").field(o).finish(),
            Self::Later(_) => f.write_str("Later(..)"),
        }
    }
}

fn qos(class: Class, telemetry: QoS) -> QoS {
    match class {
        Class::Telemetry => telemetry,
        Class::Events => QoS::AtMostOnce,
        Class::Results | Class::Objects => QoS::AtLeastOnce,
    }
}

/// The agent's MQTT connection.
#[derive(Debug)]
pub struct MqttLink {
    device: String,
    client: AsyncClient,
    counters: Arc<AgentCounters>,
    telemetry_qos: QoS,
    stop: watch::Sender<bool>,
    identity: watch::Sender<Option<Arc<rustls::ClientConfig>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl MqttLink {
    /// Starts connecting (in the background) to `url` as `device`.
    pub fn start(
        url: &BrokerUrl,
        tls: rustls::ClientConfig,
        device: &str,
        cfg: &MqttConfig,
        counters: Arc<AgentCounters>,
        handler: Arc<dyn Handler>,
    ) -> Self {
        let mut o = MqttOptions::new(device, url.host.clone(), url.port);
        o.set_transport(Transport::tls_with_config(tls.into()))
            .set_keep_alive(Duration::from_millis(cfg.keep_alive_ms))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_last_will(LastWill::new(
                Topic::status(device),
                Status::last_will().encode(),
                QoS::AtLeastOnce,
                true,
            ));
        let (client, eventloop) = AsyncClient::new(o, cfg.max_pending);
        let (stop, stop_rx) = watch::channel(false);
        let (identity, identity_rx) = watch::channel(None);
        let telemetry_qos = if cfg.telemetry_qos >= 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let task = tokio::spawn(run(
            eventloop,
            client.clone(),
            device.to_string(),
            counters.clone(),
            handler,
            telemetry_qos,
            stop_rx,
            identity_rx,
        ));
        Self {
            device: device.to_string(),
            client,
            counters,
            telemetry_qos,
            stop,
            identity,
            task: Mutex::new(Some(task)),
        }
    }

    /// Reconnects with a new TLS identity (a renewed certificate of the same device name);
    /// what is queued is sent on the new connection.
    pub fn reload_identity(&self, tls: rustls::ClientConfig) {
        let _ = self.identity.send(Some(Arc::new(tls)));
    }

    /// The device name (client id, topic level).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Queues a message without waiting; `false` when the queue was full (dropped, counted).
    pub fn publish(&self, m: Outgoing) -> bool {
        let class = m.class;
        let queued = self.offer(m).is_ok();
        if !queued {
            self.counters.mqtt.dropped(class);
        }
        queued
    }

    /// Queues a message without waiting (counted as queued); when the queue is full, the
    /// message comes back (`None` only if rumqttc returned something else), not counted, for
    /// the caller to keep elsewhere or drop.
    pub fn offer(&self, m: Outgoing) -> Result<(), Option<Outgoing>> {
        let class = m.class;
        match self
            .client
            .try_publish(m.topic, qos(class, self.telemetry_qos), false, m.payload)
        {
            Ok(()) => {
                self.counters.mqtt.queued(class);
                Ok(())
            }
            Err(rumqttc::ClientError::Request(r) | rumqttc::ClientError::TryRequest(r)) => {
                Err(returned(class, r))
            }
        }
    }

    /// Queues a message, waiting while the queue is full: for a producer that may wait (never
    /// the request path, which uses [`MqttLink::publish`]); `false` when the link has stopped
    /// (dropped, counted).
    pub async fn publish_when_room(&self, m: Outgoing) -> bool {
        let class = m.class;
        let qos = qos(class, self.telemetry_qos);
        let queued = self
            .client
            .publish(m.topic, qos, false, m.payload)
            .await
            .is_ok();
        if queued {
            self.counters.mqtt.queued(class);
        } else {
            self.counters.mqtt.dropped(class);
        }
        queued
    }

    /// Connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.counters.mqtt.connected.load(Relaxed)
    }

    /// Publishes `status` (retained, QoS 1) again while connected, e.g. after a model swap, so
    /// that the hub and anyone subscribing later see the versions served now; counted with the
    /// results. `false` when not connected (the next connect publishes a fresh one) or the
    /// queue was full.
    pub fn publish_status(&self, status: Vec<u8>) -> bool {
        if !self.counters.mqtt.connected.load(Relaxed) {
            return false;
        }
        match self
            .client
            .try_publish(Topic::status(&self.device), QoS::AtLeastOnce, true, status)
        {
            Ok(()) => {
                self.counters.mqtt.queued(Class::Results);
                true
            }
            Err(_) => {
                self.counters.mqtt.dropped(Class::Results);
                false
            }
        }
    }

    /// Publishes `offline` (retained), disconnects cleanly (the broker then keeps the last will
    /// to itself) and stops, within `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let offline = Status::offline(Some(crate::telemetry::report::now_ms()), "shutdown");
        let bye = async {
            let _ = self
                .client
                .publish(
                    Topic::status(&self.device),
                    QoS::AtLeastOnce,
                    true,
                    offline.encode(),
                )
                .await;
            let _ = self.client.disconnect().await;
        };
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        let connected = self.counters.mqtt.connected.load(Relaxed);
        let closed = match task {
            Some(t) if connected && tokio::time::timeout(grace, bye).await.is_ok() => {
                tokio::time::timeout(grace, t).await.is_ok()
            }
            Some(t) => {
                t.abort();
                true
            }
            None => true,
        };
        if !closed {
            tracing::warn!("MQTT link did not close within the grace period");
        }
        let _ = self.stop.send(true);
        self.counters.mqtt.connected.store(false, Relaxed);
    }

    /// Drops the connection at once, without DISCONNECT, as a crash would (the broker then
    /// publishes the last will). For tests and emergencies.
    pub fn abort(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        self.counters.mqtt.connected.store(false, Relaxed);
    }
}

/// The message a refused request carried.
fn returned(class: Class, r: Request) -> Option<Outgoing> {
    match r {
        Request::Publish(p) => Some(Outgoing {
            class,
            topic: p.topic,
            payload: p.payload.to_vec(),
        }),
        _ => None,
    }
}

/// Hands the events waiting in rumqttc's pending list (after a drop, what was in its request
/// channel too) to the handler: on reconnecting with a clean session rumqttc discards them.
pub(super) fn salvage_events(el: &mut EventLoop, handler: &dyn Handler) {
    el.pending.retain(|r| {
        let Request::Publish(p) = r else { return true };
        let class = match Topic::parse(&p.topic) {
            Ok(Topic {
                kind: TopicKind::Events,
                ..
            }) => Class::Events,
            Ok(Topic {
                kind: TopicKind::Objects,
                ..
            }) => Class::Objects,
            _ => return true,
        };
        handler.undelivered(Outgoing {
            class,
            topic: p.topic.clone(),
            payload: p.payload.to_vec(),
        });
        false
    });
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Longest wait, after DISCONNECT, for the broker to close the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
async fn run(
    mut el: EventLoop,
    client: AsyncClient,
    device: String,
    counters: Arc<AgentCounters>,
    handler: Arc<dyn Handler>,
    telemetry_qos: QoS,
    mut stop: watch::Receiver<bool>,
    mut identity: watch::Receiver<Option<Arc<rustls::ClientConfig>>>,
) {
    let m = &counters.mqtt;
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    // Set once DISCONNECT is written: the broker's acks are read until it closes the
    // connection (or CLOSE_WAIT passes). Dropping the socket with acks unread would reset it,
    // and the broker would lose what it had not read yet (the last object events of a stop).
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        // The connection is polled first (`biased`): under load it is always ready, and the
        // other branches would then never run. Shutdown and a renewed identity are therefore
        // checked here, once per event, as well as waited for below while the link is idle.
        if *stop.borrow() {
            return;
        }
        if identity.has_changed().unwrap_or(false) {
            renew(&mut el, &mut identity, &device, m, handler.as_ref());
        }
        let event = tokio::select! {
            biased;
            e = el.poll() => e,
            () = tokio::time::sleep_until(closing.unwrap_or_else(tokio::time::Instant::now)),
                if closing.is_some() => return,
            _ = stop.wait_for(|s| *s) => return,
            Ok(()) = identity.changed() => {
                renew(&mut el, &mut identity, &device, m, handler.as_ref());
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                m.connected.store(true, Relaxed);
                m.connects.fetch_add(1, Relaxed);
                let mut online =
                    Publish::new(Topic::status(&device), QoS::AtLeastOnce, handler.online());
                online.retain = true;
                el.pending.push_back(Request::Publish(online));
                el.pending.push_back(Request::Subscribe(Subscribe::new(
                    Topic::commands_filter(&device),
                    QoS::AtLeastOnce,
                )));
                el.pending.push_back(Request::Subscribe(Subscribe::new(
                    Topic::snapshot_requests_filter(&device),
                    QoS::AtLeastOnce,
                )));
                tracing::info!(device, "connected to the MQTT broker");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let name = match Topic::parse(&p.topic) {
                    Ok(Topic {
                        device: d,
                        kind: TopicKind::Command(name),
                    }) if d == device => name,
                    Ok(Topic {
                        device: d,
                        kind: TopicKind::SnapshotRequest(camera),
                    }) if d == device => {
                        match handler.snapshot(&camera, &p.payload) {
                            Some(Reply::Now(out)) => {
                                let msg = Publish::new(out.topic, QoS::AtLeastOnce, out.payload);
                                el.pending.push_back(Request::Publish(msg));
                                m.queued(out.class);
                            }
                            Some(Reply::Later(reply)) => {
                                let (client, counters) = (client.clone(), counters.clone());
                                tokio::spawn(async move {
                                    let out = reply.await;
                                    let class = out.class;
                                    match client.try_publish(
                                        out.topic,
                                        QoS::AtLeastOnce,
                                        false,
                                        out.payload,
                                    ) {
                                        Ok(()) => counters.mqtt.queued(class),
                                        Err(_) => counters.mqtt.dropped(class),
                                    }
                                });
                            }
                            None => {}
                        }
                        continue;
                    }
                    _ => {
                        tracing::debug!(topic = %p.topic, "MQTT message on an unexpected topic");
                        continue;
                    }
                };
                for out in handler.command(&name, &p.payload) {
                    let mut msg =
                        Publish::new(out.topic, qos(out.class, telemetry_qos), out.payload);
                    msg.retain = false;
                    el.pending.push_back(Request::Publish(msg));
                    m.queued(out.class);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                m.acked.fetch_add(1, Relaxed);
            }
            Ok(Event::Outgoing(Out::Disconnect)) => {
                closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
            }
            Ok(_) => {}
            Err(_) if closing.is_some() => return,
            Err(e) => {
                if m.connected.swap(false, Relaxed) {
                    m.disconnects.fetch_add(1, Relaxed);
                    tracing::warn!(device, error = %e, "MQTT connection lost; reconnecting");
                } else if backoff.failures() == 0 {
                    tracing::warn!(device, error = %e, "cannot connect to the MQTT broker; retrying with backoff");
                } else {
                    let attempts = backoff.failures();
                    tracing::debug!(device, error = %e, attempts, "MQTT broker still unreachable");
                }
                *m.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                salvage_events(&mut el, handler.as_ref());
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// Moves the connection to the renewed TLS identity: the next poll reconnects with it;
/// unacknowledged messages go back to the queue, waiting events to the handler.
fn renew(
    el: &mut EventLoop,
    identity: &mut watch::Receiver<Option<Arc<rustls::ClientConfig>>>,
    device: &str,
    m: &crate::telemetry::MqttCounters,
    handler: &dyn Handler,
) {
    let Some(tls) = identity.borrow_and_update().clone() else {
        return;
    };
    el.mqtt_options
        .set_transport(Transport::tls_with_config((*tls).clone().into()));
    el.clean();
    el.network = None;
    salvage_events(el, handler);
    if m.connected.swap(false, Relaxed) {
        m.disconnects.fetch_add(1, Relaxed);
    }
    tracing::info!(
        device,
        "MQTT link reconnecting with the renewed certificate"
    );
}
