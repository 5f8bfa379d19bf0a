//! The MQTT side of the agent (flow 4): the link to the broker, periodic telemetry
//! (`mqtt.telemetry_interval_ms`; at once, with the retained status again, when a model update
//! changes state: the hub sees a swap as it happens), sampled events from the router's answer
//! path, object events from the camera trackers ([`MqttService::object_sink`]), and commands
//! carried out by [`crate::control`]. Off when `mqtt.url` is empty.
//!
//! With a durable queue, what the broker cannot take waits there ([`super::offline`]): events
//! sampled while the link is down or its outgoing queue is full (and those it held when the
//! connection dropped), and telemetry snapshots taken while it is down.

use super::events::EventSink;
use super::offline::Outbox;
use super::{AgentCounters, Class, Reporter};
use crate::api::AppState;
use crate::config::Config;
use crate::hybrid::Router;
use crate::queue::Queue;
use crate::track::request::{MqttSnapshots, Taken};
use crate::uplink::mqtt::{self, Handler, MqttError, MqttLink, Outgoing, Reply};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tandem_shared::mqtt::{BrokerUrl, SnapshotErrorCode, SnapshotReply, Topic, valid_device_name};

/// The local API's state once it exists (the link starts before it) and the bounds of MQTT
/// snapshot requests: what [`AgentHandler::snapshot`] answers from.
type SnapshotSlot = Arc<OnceLock<(Weak<AppState>, Arc<MqttSnapshots>)>>;

/// Answers the link: `online`, commands through [`crate::control`], snapshot requests through
/// [`crate::track::request`].
struct AgentHandler {
    reporter: Arc<Reporter>,
    counters: Arc<AgentCounters>,
    device: String,
    outbox: Option<Outbox>,
    snapshots: SnapshotSlot,
}

/// A snapshot reply on `tandem/{device}/cameras/{camera}/snapshot` (QoS 1, like results).
fn snapshot_reply(device: &str, camera: &str, reply: &SnapshotReply) -> Outgoing {
    Outgoing {
        class: Class::Results,
        topic: Topic::snapshot(device, camera),
        payload: reply.encode(),
    }
}

impl Handler for AgentHandler {
    fn online(&self) -> Vec<u8> {
        self.reporter.online().encode()
    }

    fn command(&self, name: &str, payload: &[u8]) -> Vec<Outgoing> {
        let handled = crate::control::handle(&self.reporter, name, payload);
        self.counters.mqtt.command(name, handled.result.ok);
        let mut out = Vec::with_capacity(2);
        if let Some(t) = handled.telemetry {
            out.push(Outgoing {
                class: Class::Telemetry,
                topic: Topic::telemetry(&self.device),
                payload: t.encode(),
            });
        }
        out.push(Outgoing {
            class: Class::Results,
            topic: Topic::command_result(&self.device, name),
            payload: handled.result.encode(),
        });
        out
    }

    fn undelivered(&self, event: Outgoing) {
        keep_or_drop(self.outbox.as_ref(), &self.counters, event);
    }

    fn snapshot(&self, camera: &str, payload: &[u8]) -> Option<Reply> {
        let Some((state, snaps)) = self.snapshots.get() else {
            let e = crate::camera::CameraError::NoStream(camera.to_string());
            let reply =
                SnapshotReply::failed(None, camera, SnapshotErrorCode::NoCamera, e.to_string());
            self.counters.mqtt.command("snapshot", false);
            return Some(Reply::Now(snapshot_reply(&self.device, camera, &reply)));
        };
        match snaps.take(camera, payload) {
            Taken::Now(reply) => {
                self.counters.mqtt.command("snapshot", false);
                Some(Reply::Now(snapshot_reply(&self.device, camera, &reply)))
            }
            Taken::Admitted(req, permit) => {
                let (state, snaps) = (state.clone(), snaps.clone());
                let (counters, device, camera) = (
                    self.counters.clone(),
                    self.device.clone(),
                    camera.to_string(),
                );
                Some(Reply::Later(Box::pin(async move {
                    let reply = match state.upgrade() {
                        Some(st) => snaps.answer(&st, &camera, req, permit).await,
                        None => {
                            let e = crate::camera::CameraError::Stopping;
                            SnapshotReply::failed(
                                Some(req.id),
                                &camera,
                                SnapshotErrorCode::Busy,
                                e.to_string(),
                            )
                        }
                    };
                    counters.mqtt.command("snapshot", reply.ok);
                    snapshot_reply(&device, &camera, &reply)
                })))
            }
        }
    }
}

/// Puts a message the link could not take in the durable queue; dropped and counted when
/// there is none or no room on the way to it.
fn keep_or_drop(outbox: Option<&Outbox>, counters: &AgentCounters, m: Outgoing) {
    if !outbox.is_some_and(|o| o.offer(m.class, m.payload)) {
        counters.mqtt.dropped(m.class);
    }
}

/// Publishes a sampled event, or keeps it in the durable queue while the broker is unreachable
/// or the link's outgoing queue is full.
fn publish_event(link: &MqttLink, outbox: Option<&Outbox>, counters: &AgentCounters, m: Outgoing) {
    let class = m.class;
    match outbox {
        Some(o) if !link.is_connected() => keep_or_drop(Some(o), counters, m),
        _ => match link.offer(m) {
            Ok(()) => {}
            Err(Some(m)) => keep_or_drop(outbox, counters, m),
            Err(None) => counters.mqtt.dropped(class),
        },
    }
}

/// The running MQTT side of the agent.
#[derive(Debug)]
pub struct MqttService {
    link: Arc<MqttLink>,
    reporter: Arc<Reporter>,
    outbox: Option<Outbox>,
    counters: Arc<AgentCounters>,
    snapshots: SnapshotSlot,
    ticker: tokio::task::JoinHandle<()>,
}

impl MqttService {
    /// The MQTT link (the renewal task moves it onto a renewed certificate).
    pub fn link(&self) -> &Arc<MqttLink> {
        &self.link
    }

    /// Starts it when `mqtt.url` is set: TLS with `[hub]`'s certificates, the device name from
    /// the certificate's CN. `queue`, when the agent runs one, adds its depth and bytes to
    /// telemetry.
    pub fn start(
        cfg: &Config,
        router: Arc<Router>,
        queue: Option<Arc<dyn Queue>>,
    ) -> Result<Option<Self>, MqttError> {
        if cfg.mqtt.url.is_empty() {
            return Ok(None);
        }
        let url = BrokerUrl::parse(&cfg.mqtt.url)?;
        let (tls, cert) = mqtt::config::tls_config(&cfg.hub, |p| cfg.resolve(p))?;
        let device = mqtt::identity::common_name(&cert)
            .filter(|n| valid_device_name(n))
            .ok_or_else(|| MqttError::Identity(cfg.resolve(&cfg.hub.cert)))?;
        let counters = router.counters().clone();
        let outbox = queue
            .clone()
            .map(|q| Outbox::start(q, cfg.mqtt.max_pending));
        let reporter = Arc::new(Reporter::new(router, queue));
        let snapshots = SnapshotSlot::default();
        let handler = Arc::new(AgentHandler {
            reporter: reporter.clone(),
            counters: counters.clone(),
            device: device.clone(),
            outbox: outbox.clone(),
            snapshots: snapshots.clone(),
        });
        let link = Arc::new(MqttLink::start(
            &url,
            tls,
            &device,
            &cfg.mqtt,
            counters.clone(),
            handler,
        ));
        let weak = Arc::downgrade(&link);
        let topic = Topic::events(&device);
        let (events_outbox, c) = (outbox.clone(), counters.clone());
        counters.set_event_sink(Some(EventSink::new(
            cfg.mqtt.events_sample_rate,
            move |payload| {
                if let Some(l) = weak.upgrade() {
                    let m = Outgoing {
                        class: Class::Events,
                        topic: topic.clone(),
                        payload,
                    };
                    publish_event(&l, events_outbox.as_ref(), &c, m);
                }
            },
        )));
        let (events_outbox_for_objects, counters_for_objects) = (outbox.clone(), counters.clone());
        let every = Duration::from_millis(cfg.mqtt.telemetry_interval_ms);
        let (l, r, c) = (link.clone(), reporter.clone(), counters.clone());
        let mut changes = r.router().models().map(|m| m.changes());
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let update = tokio::select! {
                    _ = tick.tick() => false,
                    () = next_change(&mut changes) => true,
                };
                if update {
                    // A model update moved (a swap, a rollback, a refusal): the retained status
                    // names the versions served now, and telemetry carries the update's state.
                    l.publish_status(r.online().encode());
                }
                let payload = r.telemetry().encode();
                match &outbox {
                    // The broker is unreachable: the snapshot waits in the durable queue and
                    // reaches the hub over QUIC (the lowest class: evicted first when full).
                    Some(o) if !l.is_connected() => {
                        if !o.offer(Class::Telemetry, payload) {
                            c.mqtt.dropped(Class::Telemetry);
                        }
                    }
                    _ => {
                        l.publish(Outgoing {
                            class: Class::Telemetry,
                            topic: Topic::telemetry(l.device()),
                            payload,
                        });
                    }
                }
            }
        });
        tracing::info!(broker = %url, device, interval_ms = cfg.mqtt.telemetry_interval_ms, events_sample_rate = cfg.mqtt.events_sample_rate, "MQTT telemetry and commands");
        Ok(Some(Self {
            link,
            reporter,
            outbox: events_outbox_for_objects,
            counters: counters_for_objects,
            snapshots,
            ticker,
        }))
    }

    /// The device name (from the certificate).
    pub fn device(&self) -> &str {
        self.link.device()
    }

    /// Where camera trackers' object events go: `tandem/{device}/events/objects` (QoS 1), or,
    /// as sampled events do, the durable queue (class `event`) while the broker is unreachable
    /// or the outgoing queue is full; dropped and counted without one. Never blocks.
    pub fn object_sink(&self) -> crate::camera::ObjectSink {
        let weak = Arc::downgrade(&self.link);
        let topic = Topic::objects(self.device());
        let (outbox, counters) = (self.outbox.clone(), self.counters.clone());
        Arc::new(move |e: &tandem_shared::mqtt::ObjectEvent| {
            if let Some(l) = weak.upgrade() {
                let m = Outgoing {
                    class: Class::Objects,
                    topic: topic.clone(),
                    payload: e.encode(),
                };
                publish_event(&l, outbox.as_ref(), &counters, m);
            }
        })
    }

    /// Answers snapshot requests (`tandem/{device}/cameras/{camera}/snapshot/get`) from the
    /// local API's cameras, within `[cameras.snapshots]`'s MQTT bounds; until then each is
    /// answered `no_camera`. Once: a second call changes nothing.
    pub fn serve_snapshots(&self, state: &Arc<AppState>, cfg: &crate::track::SnapshotConfig) {
        let _ = self
            .snapshots
            .set((Arc::downgrade(state), Arc::new(MqttSnapshots::new(cfg))));
    }

    /// Builds the payloads.
    pub fn reporter(&self) -> &Arc<Reporter> {
        &self.reporter
    }

    /// Stops telemetry and events, publishes `offline` and disconnects, within `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.ticker.abort();
        self.reporter.router().counters().set_event_sink(None);
        self.link.shutdown(grace).await;
    }

    /// Drops the connection at once, as a crash would (the broker publishes the last will).
    pub fn abort(self) {
        self.ticker.abort();
        self.reporter.router().counters().set_event_sink(None);
        self.link.abort();
    }
}

/// Resolves at the model manager's next state change; never without a manager (or once it is
/// gone).
async fn next_change(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let gone = match changes.as_mut() {
        Some(rx) => rx.changed().await.is_err(),
        None => true,
    };
    if gone {
        *changes = None;
        std::future::pending::<()>().await;
    }
}
