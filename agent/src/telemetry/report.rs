//! What the agent reports over MQTT, built from the same counters as `/metrics`: the `online`
//! status (agent version, models with their execution providers) and telemetry (engine
//! counters and latency histograms, route mix, queue depth and bytes, MQTT counters, CPU and
//! memory, the cameras streaming once the local API exists: [`Reporter::list_cameras`]).

use crate::hybrid::Router;
use crate::queue::Queue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tandem_shared::mqtt::{
    Histogram, ModelStatus, ModelTelemetry, QueueStats, Status, Telemetry, VERSION,
};

/// The agent's version, as reported.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Builds status and telemetry payloads.
#[derive(Debug)]
pub struct Reporter {
    router: Arc<Router>,
    queue: Option<Arc<dyn Queue>>,
    started: Instant,
    seq: AtomicU64,
    cameras: OnceLock<Weak<crate::api::AppState>>,
}

impl Reporter {
    /// A reporter over the router (engine, counters) and, when the agent runs one, the durable
    /// queue (its depth and bytes).
    pub fn new(router: Arc<Router>, queue: Option<Arc<dyn Queue>>) -> Self {
        Self {
            router,
            queue,
            started: Instant::now(),
            seq: AtomicU64::new(0),
            cameras: OnceLock::new(),
        }
    }

    /// Lists `state`'s camera streams in telemetry from now on (none until then; the MQTT
    /// link starts before the local API). Once: a second call changes nothing.
    pub fn list_cameras(&self, state: &Arc<crate::api::AppState>) {
        let _ = self.cameras.set(Arc::downgrade(state));
    }

    /// The router.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// `online`, with the models loaded here and their execution providers.
    pub fn online(&self) -> Status {
        let models = self
            .router
            .engine()
            .models()
            .map(|m| ModelStatus {
                name: m.name().to_string(),
                version: m.files.manifest.version.clone(),
                variant: m.files.role.as_str().to_string(),
                ep: m.ep_now().to_string(),
            })
            .collect();
        let mut status = Status::online(now_ms(), AGENT_VERSION, models);
        status.labels = self.router.labels_of_device().clone();
        status.accelerators = self.router.engine().accelerators();
        // What a rollout can target by: `accelerator.<type>.<ep> = "true"` (the config's own
        // labels win on a clash).
        for a in &status.accelerators {
            status
                .labels
                .entry(a.label_key())
                .or_insert_with(|| "true".into());
        }
        status
    }

    /// The next telemetry message (sequence numbers start at 1).
    pub fn telemetry(&self) -> Telemetry {
        let engine = self.router.engine();
        let mut snap = engine.metrics().snapshot();
        let models: BTreeMap<String, ModelTelemetry> = engine
            .models()
            .map(|m| {
                let s = snap.remove(m.name()).unwrap_or_default();
                let t = ModelTelemetry {
                    version: m.files.manifest.version.clone(),
                    variant: m.files.role.as_str().to_string(),
                    ep: m.ep_now().to_string(),
                    inferences: s
                        .inferences
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), *v))
                        .collect(),
                    rejected: s.rejected,
                    queue_depth: m.queue_depth() as u64,
                    latency: Histogram {
                        le_s: s.latency_le,
                        counts: s.latency_counts,
                        count: s.latency_count,
                        sum_s: s.latency_sum,
                    },
                    ep_measured: m.ep_measured.iter().map(|e| e.to_contract()).collect(),
                    ep_failovers: m.ep_failovers(),
                };
                (m.name().to_string(), t)
            })
            .collect();
        let counters = self.router.counters();
        Telemetry {
            v: VERSION,
            ts_ms: now_ms(),
            seq: self.seq.fetch_add(1, Relaxed) + 1,
            uptime_s: self.started.elapsed().as_secs(),
            agent_version: AGENT_VERSION.into(),
            models,
            routes: counters.routes(),
            queue: self.queue.as_ref().map(|q| {
                let s = q.stats();
                QueueStats {
                    depth: s.depth(),
                    bytes: s.bytes(),
                    lost: s.lost,
                }
            }),
            mqtt: counters.mqtt.to_telemetry(),
            process: super::process::stats(),
            updates: self
                .router
                .models()
                .map(|m| m.reports())
                .unwrap_or_default(),
            privacy: self
                .router
                .privacy()
                .filter(|p| p.active())
                .map(|p| crate::privacy::report::telemetry(p.stats())),
            thresholds: self.router.thresholds(),
            cameras: self
                .cameras
                .get()
                .and_then(Weak::upgrade)
                .map(|s| s.cameras.telemetry())
                .unwrap_or_default(),
        }
    }
}
