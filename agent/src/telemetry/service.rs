//! The MQTT side of the agent (flow 4): the link to the broker, periodic telemetry
//! (`mqtt.telemetry_interval_ms`; at once, with the retained status again, when a model update
//! changes state: the hub sees a swap as it happens), sampled events from the router's answer
//! path, and commands carried out by [`crate::control`]. Off when `mqtt.url` is empty.

use super::events::EventSink;
use super::{AgentCounters, Class, Reporter};
use crate::config::Config;
use crate::hybrid::Router;
use crate::queue::Queue;
use crate::uplink::mqtt::{self, Handler, MqttError, MqttLink, Outgoing};
use std::sync::Arc;
use std::time::Duration;
use tandem_shared::mqtt::{BrokerUrl, Topic, valid_device_name};

/// Answers the link: `online`, and commands through [`crate::control`].
struct AgentHandler {
    reporter: Arc<Reporter>,
    counters: Arc<AgentCounters>,
    device: String,
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
}

/// The running MQTT side of the agent.
#[derive(Debug)]
pub struct MqttService {
    link: Arc<MqttLink>,
    reporter: Arc<Reporter>,
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
        let outbox = queue.clone();
        let reporter = Arc::new(Reporter::new(router, queue));
        let handler = Arc::new(AgentHandler {
            reporter: reporter.clone(),
            counters: counters.clone(),
            device: device.clone(),
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
        counters.set_event_sink(Some(EventSink::new(
            cfg.mqtt.events_sample_rate,
            move |payload| {
                if let Some(l) = weak.upgrade() {
                    l.publish(Outgoing {
                        class: Class::Events,
                        topic: topic.clone(),
                        payload,
                    });
                }
            },
        )));
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
                    Some(q) if !c.mqtt.connected.load(std::sync::atomic::Ordering::Relaxed) => {
                        keep_offline(q.clone(), &payload).await;
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
            ticker,
        }))
    }

    /// The device name (from the certificate).
    pub fn device(&self) -> &str {
        self.link.device()
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

/// Queues a telemetry snapshot taken while the broker is unreachable.
async fn keep_offline(q: Arc<dyn Queue>, payload: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    let record = tandem_shared::record::encode(&tandem_shared::record::Record::Telemetry(v));
    let queued = tokio::task::spawn_blocking(move || {
        q.submit(crate::queue::Class::Telemetry, record)
            .map(|_pending| ())
    })
    .await;
    if let Ok(Err(e)) = queued {
        tracing::debug!(error = %e, "offline telemetry not queued");
    }
}
