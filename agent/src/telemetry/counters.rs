//! The agent's counters beside the engine's: the route mix (answers by model, route, reason)
//! and the MQTT link's counters. One set of numbers: rendered into `/metrics` and copied into
//! MQTT telemetry.

use super::events::EventSink;
use crate::hybrid::{Answer, RouteError};
use crate::policy::Reason;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use tandem_engine::exposition::write_sample;
use tandem_shared::mqtt::RouteCount;

/// What an outgoing MQTT message is, for flow control and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Periodic telemetry.
    Telemetry,
    /// Sampled per-inference events.
    Events,
    /// Command results.
    Results,
    /// Object events from camera trackers (`events/objects`).
    Objects,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 4] = [Self::Telemetry, Self::Events, Self::Results, Self::Objects];

    /// Its name in metrics and telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::Events => "events",
            Self::Results => "results",
            Self::Objects => "objects",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The MQTT link's counters.
#[derive(Debug, Default)]
pub struct MqttCounters {
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Connections made.
    pub connects: AtomicU64,
    /// Connections lost.
    pub disconnects: AtomicU64,
    /// QoS 1 messages the broker acknowledged (PUBACK): status, results, and telemetry when
    /// `mqtt.telemetry_qos = 1`.
    pub acked: AtomicU64,
    queued: [AtomicU64; 4],
    dropped: [AtomicU64; 4],
    commands: Mutex<BTreeMap<String, u64>>,
    /// Why the last connection attempt failed or the connection dropped.
    pub last_error: Mutex<Option<String>>,
}

impl MqttCounters {
    /// A message accepted into the outgoing queue.
    pub fn queued(&self, c: Class) {
        self.queued[c.index()].fetch_add(1, Relaxed);
    }

    /// A message dropped because the outgoing queue was full.
    pub fn dropped(&self, c: Class) {
        self.dropped[c.index()].fetch_add(1, Relaxed);
    }

    /// Messages dropped of a class.
    pub fn dropped_count(&self, c: Class) -> u64 {
        self.dropped[c.index()].load(Relaxed)
    }

    /// Messages queued of a class.
    pub fn queued_count(&self, c: Class) -> u64 {
        self.queued[c.index()].load(Relaxed)
    }

    /// A command handled (`name` as received, `ok` or `error`).
    pub fn command(&self, name: &str, ok: bool) {
        let key = format!("{name}/{}", if ok { "ok" } else { "error" });
        *self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// The counters as telemetry carries them.
    pub fn to_telemetry(&self) -> tandem_shared::mqtt::MqttCounters {
        let by_class = |a: &[AtomicU64; 4]| {
            Class::ALL
                .iter()
                .map(|c| (c.as_str().to_string(), a[c.index()].load(Relaxed)))
                .collect()
        };
        tandem_shared::mqtt::MqttCounters {
            queued: by_class(&self.queued),
            dropped: by_class(&self.dropped),
            connects: self.connects.load(Relaxed),
            commands: self
                .commands
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

#[derive(Debug)]
struct RouteEntry {
    model: String,
    route: &'static str,
    reason: Option<Reason>,
    degraded: bool,
    count: u64,
}

/// Offloads a hub too old for `PredictRequest` refused (`UnsupportedKind`), and the QUIC
/// connection the agent last warned about: one WARN per connection, not one per request.
#[derive(Debug, Default)]
pub struct OldHub {
    refused: AtomicU64,
    warned_connect: AtomicU64,
}

impl OldHub {
    /// Counts one refusal on the uplink's connection number `connects`; true for the first on
    /// that connection (warn then; a reconnect may have reached an upgraded hub, or not).
    pub fn refused(&self, connects: u64) -> bool {
        self.refused.fetch_add(1, Relaxed);
        self.warned_connect.swap(connects, Relaxed) != connects
    }

    /// Refusals so far.
    pub fn count(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

/// The agent's counters: route mix, MQTT link, and where sampled events go.
#[derive(Debug, Default)]
pub struct AgentCounters {
    routes: Mutex<Vec<RouteEntry>>,
    /// The MQTT link.
    pub mqtt: MqttCounters,
    /// Offloads refused by a hub too old for `PredictRequest`.
    pub old_hub: OldHub,
    events: RwLock<Option<EventSink>>,
}

/// A routing reason as answers spell it (`low_confidence`); `local_error` for a request the
/// local engine refused.
pub fn reason_name(r: Option<Reason>) -> String {
    r.and_then(|r| {
        serde_json::to_value(r)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    })
    .unwrap_or_else(|| "local_error".into())
}

impl AgentCounters {
    /// Counts one routed request (and offers it to the event sampler); called by the router on
    /// every answer or failure.
    pub fn answered(&self, model: &str, r: &Result<Answer, RouteError>, took: Duration) {
        let (route, reason, degraded) = match r {
            Ok(a) => (
                if a.cloud.is_some() { "cloud" } else { "local" },
                Some(a.reason),
                a.degraded,
            ),
            Err(RouteError::Hub { reason, .. }) => ("failed", Some(*reason), false),
            Err(RouteError::Local(_)) => ("failed", None, false),
        };
        {
            let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            match routes.iter_mut().find(|e| {
                e.model == model && e.route == route && e.reason == reason && e.degraded == degraded
            }) {
                Some(e) => e.count += 1,
                None => routes.push(RouteEntry {
                    model: model.to_string(),
                    route,
                    reason,
                    degraded,
                    count: 1,
                }),
            }
        }
        if let Ok(a) = r
            && let Some(sink) = self
                .events
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
        {
            sink.offer(a, took);
        }
    }

    /// Sends sampled events to `sink` from now on (replacing any earlier sink); `None` stops
    /// them.
    pub fn set_event_sink(&self, sink: Option<EventSink>) {
        *self.events.write().unwrap_or_else(|p| p.into_inner()) = sink;
    }

    /// The route mix, as telemetry carries it.
    pub fn routes(&self) -> Vec<RouteCount> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<RouteCount> = routes
            .iter()
            .map(|e| RouteCount {
                model: e.model.clone(),
                route: e.route.to_string(),
                reason: reason_name(e.reason),
                degraded: e.degraded,
                count: e.count,
            })
            .collect();
        v.sort_by(|a, b| {
            (&a.model, &a.route, &a.reason, a.degraded)
                .cmp(&(&b.model, &b.route, &b.reason, b.degraded))
        });
        v
    }

    /// Prometheus text: `tandem_route_answers_total` and the `tandem_mqtt_*` counters.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP tandem_route_answers_total Requests by model, route (local, cloud, failed), reason and degraded.\n# TYPE tandem_route_answers_total counter\n");
        for r in self.routes() {
            let degraded = if r.degraded { "true" } else { "false" };
            write_sample(
                out,
                "tandem_route_answers_total",
                &[
                    ("model", &r.model),
                    ("route", &r.route),
                    ("reason", &r.reason),
                    ("degraded", degraded),
                ],
                r.count,
            );
        }
        let _ = writeln!(
            out,
            "# HELP tandem_offload_old_hub_total Offloads refused by a hub too old for PredictRequest (upgrade the hub).\n\
             # TYPE tandem_offload_old_hub_total counter\ntandem_offload_old_hub_total {}",
            self.old_hub.count()
        );
        let m = &self.mqtt;
        let _ = writeln!(
            out,
            "# HELP tandem_mqtt_connected Whether the agent is connected to the MQTT broker.\n\
             # TYPE tandem_mqtt_connected gauge\ntandem_mqtt_connected {}\n\
             # HELP tandem_mqtt_connects_total Connections made to the MQTT broker.\n\
             # TYPE tandem_mqtt_connects_total counter\ntandem_mqtt_connects_total {}\n\
             # HELP tandem_mqtt_disconnects_total Connections to the MQTT broker lost.\n\
             # TYPE tandem_mqtt_disconnects_total counter\ntandem_mqtt_disconnects_total {}\n\
             # HELP tandem_mqtt_acked_total QoS 1 messages the MQTT broker acknowledged.\n\
             # TYPE tandem_mqtt_acked_total counter\ntandem_mqtt_acked_total {}",
            u8::from(m.connected.load(Relaxed)),
            m.connects.load(Relaxed),
            m.disconnects.load(Relaxed),
            m.acked.load(Relaxed)
        );
        for (name, help, a) in [
            (
                "tandem_mqtt_queued_total",
                "MQTT messages accepted into the outgoing queue, by class.",
                &m.queued,
            ),
            (
                "tandem_mqtt_dropped_total",
                "MQTT messages dropped because the outgoing queue was full, by class.",
                &m.dropped,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for c in Class::ALL {
                write_sample(
                    out,
                    name,
                    &[("class", c.as_str())],
                    a[c.index()].load(Relaxed),
                );
            }
        }
        out.push_str("# HELP tandem_mqtt_commands_total Commands handled, by name and outcome.\n# TYPE tandem_mqtt_commands_total counter\n");
        for (k, n) in m.commands.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let (name, outcome) = k.rsplit_once('/').unwrap_or((k, ""));
            write_sample(
                out,
                "tandem_mqtt_commands_total",
                &[("name", name), ("outcome", outcome)],
                n,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_hub_is_warned_about_once_per_connection() {
        let o = OldHub::default();
        assert!(o.refused(1));
        assert!(!o.refused(1));
        assert!(!o.refused(1));
        assert!(o.refused(2), "a new connection warns again");
        assert!(!o.refused(2));
        assert_eq!(o.count(), 5);
    }
}
