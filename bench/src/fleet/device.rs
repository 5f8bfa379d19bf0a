//! A simulated device: the agent's own QUIC link ([`tandem_agent::uplink::Uplink`]: its
//! certificate, its connection, its keeper, its reconnect backoff with full jitter) and a loop
//! that offloads one small request per interval, as the agent's hybrid path does: when the link
//! says the hub is unavailable, or the hub does not answer, the agent answers locally
//! (degraded); an answer the agent cannot use counts as failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_agent::uplink::{HubConfig, Uplink, UplinkError};
use tandem_shared::wire::{self, Message};

/// Phases of the run; requests are counted per phase. First: until every device was answered.
pub const COLD: usize = 0;
/// Steady offloading before the kill.
pub const STEADY: usize = 1;
/// From the kill until every device is back (or the window ends), and a second more.
pub const OUTAGE: usize = 2;
/// After.
pub const AFTER: usize = 3;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The hub answered with an inference result.
    Answered = 0,
    /// No hub answer (link down or backing off, timeout, `Busy`): answered locally.
    Degraded = 1,
    /// An answer the agent cannot use (an error frame, a broken frame, a TLS setup error).
    Failed = 2,
}

/// What the devices share: the clock, the phase, the counters, the stop flag.
#[derive(Debug)]
pub struct Shared {
    /// The bench's epoch (every time is nanoseconds since it).
    pub epoch: Instant,
    /// [`COLD`], [`STEADY`], [`OUTAGE`] or [`AFTER`].
    pub phase: AtomicUsize,
    /// Requests per phase and [`Outcome`].
    pub counts: [[AtomicU64; 3]; 4],
    /// Set to end the loops.
    pub stop: AtomicBool,
}

impl Shared {
    /// A new run starting now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            phase: AtomicUsize::new(COLD),
            counts: Default::default(),
            stop: AtomicBool::new(false),
        }
    }

    /// Nanoseconds since the epoch (never 0: 0 means "not yet" in a device's slots).
    pub fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Requests counted in `phase` with `outcome`.
    pub fn count(&self, phase: usize, outcome: Outcome) -> u64 {
        self.counts[phase][outcome as usize].load(Ordering::Relaxed)
    }
}

/// One device.
#[derive(Debug)]
pub struct Device {
    /// The agent's link to the hub.
    pub up: Arc<Uplink>,
    /// First answer ever (ns since the epoch; 0: none yet).
    pub first_answer_ns: AtomicU64,
    /// First answer since the kill (0: none yet).
    pub back_ns: AtomicU64,
}

impl Device {
    /// The agent's link for a device with this certificate and key (needs a tokio runtime).
    pub fn new(hub: &str, ca: PathBuf, cert: PathBuf, key: PathBuf) -> Result<Self, UplinkError> {
        let cfg = HubConfig {
            address: hub.to_string(),
            ca,
            cert,
            key,
            ..HubConfig::default()
        };
        let up = Arc::new(Uplink::new(&cfg, |p| p.to_path_buf())?);
        up.keep();
        Ok(Self {
            up,
            first_answer_ns: AtomicU64::new(0),
            back_ns: AtomicU64::new(0),
        })
    }

    /// Connections the link has made so far.
    pub fn connects(&self) -> u64 {
        self.up.status().connects
    }
}

/// Offloads `input` every `interval` (first after `offset`) until `shared.stop`.
pub async fn offload(
    dev: Arc<Device>,
    shared: Arc<Shared>,
    input: wire::Input,
    interval: Duration,
    offset: Duration,
) {
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut request_id = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        request_id += 1;
        let phase = shared.phase.load(Ordering::Relaxed);
        let outcome = if dev.up.view().available {
            let msg = Message::InferRequest {
                request_id,
                model: super::hub::MODEL.into(),
                model_version: None,
                deadline_ms: 0,
                input: input.clone(),
            };
            match dev.up.call(&msg, dev.up.timeout()).await {
                Ok(Message::InferResponse { .. }) => Outcome::Answered,
                Ok(Message::Busy { .. }) => Outcome::Degraded,
                Ok(_) => Outcome::Failed,
                Err(UplinkError::Unreachable(_) | UplinkError::Timeout(_)) => Outcome::Degraded,
                Err(UplinkError::Protocol(_) | UplinkError::Setup(_)) => Outcome::Failed,
            }
        } else {
            Outcome::Degraded
        };
        shared.counts[phase][outcome as usize].fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Answered {
            let now = shared.now_ns();
            let _ =
                dev.first_answer_ns
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            // A request sent before the kill says nothing about the restarted hub.
            if phase >= OUTAGE {
                let _ = dev
                    .back_ns
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}
