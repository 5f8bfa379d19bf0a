//! Fleet state and control over MQTT (flow 4, hub side): the hub's broker (its own supervised
//! mosquitto, or an external one), the hub's MQTT client, per-device state in sled, and the
//! fleet's HTTP routes and metrics.
//!
//! # Layout
//! - [`config`]: `[fleet]` (where the database lives).
//! - [`store`]: [`FleetStore`]: per-device state in sled (last seen, online, versions, last
//!   telemetry).
//! - [`link`]: the hub's MQTT client: subscriptions, state updates, commands and their results.
//! - `dispatch`: what each received MQTT message does (store, series, waiters).
//! - [`labels`]: a device's labels, hub-assigned (its claim's) over its own.
//! - [`http`]: `GET /v1/fleet`, `GET /v1/fleet/{device}`, `POST /v1/fleet/{device}/cmd/{name}`.
//! - [`snapshot`]: `GET /v1/fleet/{device}/cameras/{camera}/snapshot.jpg`: a camera's
//!   snapshot asked over MQTT, bounded in flight and in time.
//! - [`cli`]: `tandem-hub fleet list|show|cmd`, a client of those routes.
//! - [`discovery`]: Home Assistant discovery messages per device (`mqtt.ha_discovery`).
//! - this file: [`Fleet`] (what the API reaches) and [`FleetService`] (start and stop it all
//!   from the hub config).

pub mod cli;
pub mod config;
pub mod discovery;
mod dispatch;
pub mod http;
pub mod labels;
pub mod link;
pub mod snapshot;
pub mod store;

pub use config::FleetConfig;
pub use labels::{AssignedLabels, DeviceLabels, Labels};
pub use link::{CommandError, Link, LinkError, LinkStats};
pub use store::{DeviceState, FleetStore, StoreError};

use crate::broker::{self, Broker, BrokerError, BrokerSpec, BrokerStats, MqttMode};
use crate::config::Config;
use crate::series::{MemorySeries, SeriesStore};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tandem_engine::exposition::write_sample;
use tandem_shared::mqtt::BrokerUrl;

/// Why the MQTT side of the hub cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The embedded broker.
    #[error("[mqtt] broker: {0}")]
    Broker(#[from] BrokerError),
    /// The hub's MQTT client.
    #[error("[mqtt] client: {0}")]
    Link(#[from] LinkError),
    /// The fleet database.
    #[error("[fleet]: {0}")]
    Store(#[from] StoreError),
    /// `mqtt.url`.
    #[error("mqtt.url: {0}")]
    Url(#[from] tandem_shared::mqtt::UrlError),
}

/// What the HTTP API reaches: the store, the link, and the broker's counters.
#[derive(Debug)]
pub struct Fleet {
    store: FleetStore,
    link: Link,
    broker: Option<Arc<BrokerStats>>,
    command_timeout_ms: u64,
    assigned: Option<Arc<dyn AssignedLabels>>,
    series: Arc<dyn SeriesStore>,
    snapshot_slots: tokio::sync::Semaphore,
    snapshot_max_inflight: usize,
    snapshot_timeout_ms: u64,
}

impl Fleet {
    /// The fleet database.
    pub fn store(&self) -> &FleetStore {
        &self.store
    }

    /// The per-device time series (fed by the link from each telemetry message).
    pub fn series(&self) -> &Arc<dyn SeriesStore> {
        &self.series
    }

    /// The hub's MQTT client.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The supervisor's counters (embedded broker only).
    pub fn broker(&self) -> Option<&Arc<BrokerStats>> {
        self.broker.as_ref()
    }

    /// Every device's hub-assigned labels (none without a source: enrolment off).
    pub fn assigned_labels(&self) -> Result<BTreeMap<String, Labels>, String> {
        self.assigned
            .as_ref()
            .map_or_else(|| Ok(BTreeMap::new()), |a| a.assigned())
    }

    /// The labels of `d`: `assigned` (from [`Fleet::assigned_labels`]) over its reported ones.
    pub fn labels_of(d: &DeviceState, assigned: &BTreeMap<String, Labels>) -> DeviceLabels {
        DeviceLabels::merge(
            assigned.get(&d.device).cloned().unwrap_or_default(),
            d.status
                .as_ref()
                .map(|s| s.labels.clone())
                .unwrap_or_default(),
        )
    }

    /// Default wait for a command's result, in milliseconds.
    pub fn command_timeout_ms(&self) -> u64 {
        self.command_timeout_ms
    }

    /// Prometheus text: the broker supervisor, the hub's MQTT link, and per-device state.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(b) = &self.broker {
            b.render(&mut out);
        }
        let s = self.link.stats();
        let _ = writeln!(
            out,
            "# HELP tandem_hub_mqtt_connected Whether the hub's MQTT client is connected to the broker.\n\
             # TYPE tandem_hub_mqtt_connected gauge\ntandem_hub_mqtt_connected {}\n\
             # HELP tandem_hub_mqtt_connects_total Connections of the hub's MQTT client to the broker.\n\
             # TYPE tandem_hub_mqtt_connects_total counter\ntandem_hub_mqtt_connects_total {}\n\
             # HELP tandem_hub_mqtt_unreadable_total MQTT messages from devices the hub could not read.\n\
             # TYPE tandem_hub_mqtt_unreadable_total counter\ntandem_hub_mqtt_unreadable_total {}\n\
             # HELP tandem_hub_mqtt_commands_total Commands the hub published.\n\
             # TYPE tandem_hub_mqtt_commands_total counter\ntandem_hub_mqtt_commands_total {}\n\
             # HELP tandem_hub_snapshot_requests_total Snapshot requests the hub published.\n\
             # TYPE tandem_hub_snapshot_requests_total counter\ntandem_hub_snapshot_requests_total {}\n\
             # HELP tandem_hub_snapshot_waiting Snapshot requests waiting for a device's reply.\n\
             # TYPE tandem_hub_snapshot_waiting gauge\ntandem_hub_snapshot_waiting {}\n\
             # HELP tandem_hub_mqtt_messages_total MQTT messages received, by kind.\n\
             # TYPE tandem_hub_mqtt_messages_total counter",
            u8::from(s.connected.load(Relaxed)),
            s.connects.load(Relaxed),
            s.unreadable.load(Relaxed),
            s.commands.load(Relaxed),
            s.snapshot_requests.load(Relaxed),
            self.link.snapshot_waiters().len(),
        );
        for (kind, n) in s.received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            write_sample(
                &mut out,
                "tandem_hub_mqtt_messages_total",
                &[("kind", kind)],
                n,
            );
        }
        let devices = self.store.list().unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP tandem_hub_fleet_device_online Whether a device's last status is online.\n\
             # TYPE tandem_hub_fleet_device_online gauge"
        );
        for d in &devices {
            write_sample(
                &mut out,
                "tandem_hub_fleet_device_online",
                &[("device", &d.device)],
                u8::from(d.online),
            );
        }
        let _ = writeln!(
            out,
            "# HELP tandem_hub_fleet_inferences_total Inferences a device reported in its last telemetry, by model and outcome.\n\
             # TYPE tandem_hub_fleet_inferences_total counter"
        );
        for d in &devices {
            for (model, m) in d.telemetry.iter().flat_map(|t| t.models.iter()) {
                for (outcome, n) in &m.inferences {
                    write_sample(
                        &mut out,
                        "tandem_hub_fleet_inferences_total",
                        &[
                            ("device", &d.device),
                            ("model", model),
                            ("outcome", outcome),
                        ],
                        n,
                    );
                }
            }
        }
        out
    }
}

/// The MQTT side of a running hub: the embedded broker (when configured) and the [`Fleet`].
#[derive(Debug)]
pub struct FleetService {
    broker: Option<Broker>,
    fleet: Arc<Fleet>,
}

impl FleetService {
    /// Starts the broker (mode `embedded`), opens the fleet database and connects the hub's
    /// client; `None` with `mqtt.mode = "off"`. No hub-assigned labels (see
    /// [`FleetService::start_with`]).
    pub async fn start(cfg: &Config) -> Result<Option<Self>, FleetError> {
        Self::start_with(cfg, None).await
    }

    /// [`FleetService::start`], with devices' hub-assigned labels read from `assigned`.
    pub async fn start_with(
        cfg: &Config,
        assigned: Option<Arc<dyn AssignedLabels>>,
    ) -> Result<Option<Self>, FleetError> {
        let (broker, url) = match cfg.mqtt.mode {
            MqttMode::Off => return Ok(None),
            MqttMode::External => (None, BrokerUrl::parse(&cfg.mqtt.url)?),
            MqttMode::Embedded => {
                let spec = BrokerSpec::from_config(&cfg.mqtt, cfg.pki_dir(), |p| {
                    tandem_engine::settings::resolve(&cfg.base_dir, p)
                })?;
                let b = Broker::start(spec).await?;
                let url = b.url();
                (Some(b), url)
            }
        };
        let store = FleetStore::open(
            &tandem_engine::settings::resolve(&cfg.base_dir, &cfg.fleet.dir),
            cfg.fleet.cache_bytes,
        )?;
        let series: Arc<dyn SeriesStore> = Arc::new(MemorySeries::new(cfg.fleet.series.clone()));
        let link = Link::start(
            &url,
            &cfg.pki_dir(),
            broker::HUB_IDENTITY,
            store.clone(),
            series.clone(),
            cfg.mqtt.ha_discovery,
        )?;
        tracing::info!(broker = %url, mode = ?cfg.mqtt.mode, "fleet over MQTT");
        let fleet = Arc::new(Fleet {
            store,
            link,
            broker: broker.as_ref().map(Broker::stats),
            command_timeout_ms: cfg.mqtt.command_timeout_ms,
            assigned,
            series,
            snapshot_slots: tokio::sync::Semaphore::new(cfg.fleet.snapshot_max_inflight),
            snapshot_max_inflight: cfg.fleet.snapshot_max_inflight,
            snapshot_timeout_ms: cfg.fleet.snapshot_timeout_ms,
        });
        Ok(Some(Self { broker, fleet }))
    }

    /// What the HTTP API reaches.
    pub fn fleet(&self) -> Arc<Fleet> {
        self.fleet.clone()
    }

    /// The embedded broker, when the hub runs one.
    pub fn broker(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    /// Disconnects the hub's client, flushes the database and stops the broker.
    pub async fn stop(self) {
        self.fleet.link.stop().await;
        self.fleet.store.flush();
        if let Some(b) = self.broker {
            b.stop().await;
        }
    }
}
