//! `tandem-bench fleet` (make bench-fleet): a fleet reconnecting after the hub dies.
//!
//! N simulated devices in this process (one tokio runtime), each the agent's own QUIC link
//! with its own device certificate (issued by the hub's CA through `tandem_hub::pki`, recorded
//! in its ledger like `device add`) and its own connection, offload one small
//! Fashion-MNIST image per interval to the release `tandem-hub`. Once every device has been
//! answered and the fleet has run steadily for a while, the hub is killed (SIGKILL) and
//! started again on the same state and address. Measured from the moment the restarted hub is
//! ready: time until 99% and 100% of the devices are back (connected, and answered), peak
//! handshakes per second (client side in 100 ms bins, and the hub's `/metrics` counters), hub
//! CPU and RSS (from `/proc`), requests answered, degraded (answered locally) and failed.
//! The last line is `fleet-reconnect-s: N`, seconds until every device was answered again.
//!
//! # Layout
//! - [`device`]: one simulated device and its offloading loop.
//! - [`hub`]: the hub process, its configuration, its sampler.
//! - [`stats`]: time to a fraction of the fleet, peaks.
//! - [`report`]: the table.

mod device;
mod hub;
mod report;
mod stats;

use crate::hub::certs::BenchPki;
use anyhow::Context as _;
use device::{AFTER, Device, OUTAGE, STEADY, Shared};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated devices (each its own certificate and QUIC connection).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Each device offloads one request per this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Seconds of steady offloading, every device answered, before the kill.
    #[arg(long, default_value_t = 5.0)]
    steady_s: f64,
    /// Milliseconds between the kill and the restart (0: at once, as a supervisor would).
    #[arg(long, default_value_t = 0)]
    down_ms: u64,
    /// Longest wait for the fleet (at the first start and after the restart), seconds.
    #[arg(long, default_value_t = 90.0)]
    window_s: f64,
    /// `quic.limits.max_connections` for the hub; omitted: the hub's default (a default
    /// below the fleet is raised to admit it, and the table says so).
    #[arg(long)]
    max_connections: Option<u32>,
}

/// Raises this process's open-file limit to what the fleet needs (a UDP socket per device),
/// up to the hard limit; returns the soft limit now in force.
fn raise_nofile(devices: usize) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let need = (devices as u64) * 2 + 256;
    let mut lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    if soft < need {
        lim.current = Some(lim.maximum.map_or(need, |h| h.min(need)));
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            eprintln!("  could not raise the open-file limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Polls every 50 ms until `done` or `window` has passed; returns whether `done` held.
async fn wait_for(window: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + window;
    while Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// Runs the benchmark and prints the table; the last line is `fleet-reconnect-s: N`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.devices > 0, "--devices must be > 0");
    let repo = crate::procs::repo()?;
    let nofile = raise_nofile(a.devices);
    let t = Instant::now();
    let pki = BenchPki::new("fleet", a.devices)?;
    eprintln!(
        "== fleet: {} device certificates issued in {:.1} s; open-file limit {nofile}",
        a.devices,
        t.elapsed().as_secs_f64()
    );
    let default_cap = tandem_hub::ingress::limits::QuicLimits::default().max_connections;
    // The fleet plus room for reconnects that overlap a closing connection.
    let room = a.devices + a.devices / 10 + 16;
    let max_connections = a
        .max_connections
        .or_else(|| ((default_cap as usize) < room).then_some(room as u32));
    let spec = hub::prepare(&repo, pki.dir(), pki.dir(), max_connections)?;
    let inputs = crate::hub::fashion_inputs(&repo, 100)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let m = rt.block_on(measure(a, &pki, &spec, &inputs))?;
    rt.shutdown_timeout(Duration::from_secs(5));
    report::print(
        a,
        &spec,
        max_connections.is_some() && a.max_connections.is_none(),
        &m,
    );
    Ok(())
}

/// What one run measured (the report's input).
#[derive(Debug)]
pub struct Measured {
    /// Seconds from the first start's readiness until every device was answered.
    pub cold_s: Option<f64>,
    /// Seconds from the kill until the restarted hub was ready.
    pub restart_s: f64,
    /// Per device, seconds from readiness until answered again (None: never).
    pub back_s: Vec<Option<f64>>,
    /// Client side, per 100 ms bin from the kill on: connections opened (0-RTT attempts
    /// included) and full handshakes among them.
    pub client_bins: (Vec<u64>, Vec<u64>),
    /// Hub samples (the whole run).
    pub samples: Vec<hub::Sample>,
    /// Epoch seconds of the kill, of readiness after it, and of the end of the measurement.
    pub kill_t: f64,
    /// See `kill_t`.
    pub ready_t: f64,
    /// See `kill_t`.
    pub end_t: f64,
    /// The counters.
    pub shared: Arc<Shared>,
}

async fn measure(
    a: &Args,
    pki: &BenchPki,
    spec: &hub::HubSpec,
    inputs: &[tandem_shared::wire::Input],
) -> anyhow::Result<Measured> {
    let shared = Arc::new(Shared::new());
    let epoch = shared.epoch;
    let secs = move |i: Instant| i.duration_since(epoch).as_secs_f64();
    let sampler = hub::Sampler::start(spec.http.clone(), epoch)?;
    let s = spec.clone();
    let first = tokio::task::spawn_blocking(move || s.start()).await??;
    sampler.pid.store(first.pid(), Ordering::Relaxed);
    let first_ready = Instant::now();
    let ca = pki.dir().join("ca.pem");
    let mut devices = Vec::with_capacity(a.devices);
    for d in pki.devices() {
        let (cert, key) = pki.device_files(d);
        devices.push(Arc::new(
            Device::new(&spec.quic, ca.clone(), cert, key).with_context(|| d.clone())?,
        ));
    }
    let interval = Duration::from_millis(a.interval_ms.max(1));
    let n = devices.len() as u32;
    let tasks: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            tokio::spawn(device::offload(
                d.clone(),
                shared.clone(),
                inputs[i % inputs.len()].clone(),
                interval,
                interval * i as u32 / n,
            ))
        })
        .collect();
    let window = Duration::from_secs_f64(a.window_s);
    let all_first = wait_for(window, || {
        devices
            .iter()
            .all(|d| d.first_answer_ns.load(Ordering::Relaxed) != 0)
    })
    .await;
    let cold_s = all_first.then(|| {
        let last = devices
            .iter()
            .map(|d| d.first_answer_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        (last as f64 / 1e9 - secs(first_ready)).max(0.0)
    });
    eprintln!("  cold start: every device answered: {all_first} ({cold_s:?} s)");
    shared.phase.store(STEADY, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.steady_s)).await;

    // The kill: counters of the outage start now.
    shared.phase.store(OUTAGE, Ordering::Relaxed);
    let kill_at = Instant::now();
    sampler.pid.store(0, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || hub::kill(first)).await??;
    eprintln!("  hub killed (SIGKILL)");
    // Client side, per 100 ms bin: connections the links opened (0-RTT attempts included, even
    // to a hub that is not there) and, of those, full handshakes (completed before install).
    let bins_dev = devices.clone();
    let sh = shared.clone();
    let bins_task = tokio::spawn(async move {
        let (mut opened, mut full) = (Vec::new(), Vec::new());
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while sh.phase.load(Ordering::Relaxed) == OUTAGE {
            tick.tick().await;
            let (o, z) = bins_dev.iter().fold((0, 0), |(o, z), d| {
                (o + d.connects(), z + d.up.zero_rtt().0)
            });
            opened.push(o);
            full.push(o.saturating_sub(z));
        }
        (stats::increments(&opened), stats::increments(&full))
    });
    tokio::time::sleep(Duration::from_millis(a.down_ms)).await;
    let s = spec.clone();
    let second = tokio::task::spawn_blocking(move || s.start()).await??;
    let ready = Instant::now();
    sampler.pid.store(second.pid(), Ordering::Relaxed);
    eprintln!(
        "  hub ready again {:.2} s after the kill",
        (ready - kill_at).as_secs_f64()
    );
    let all_back = wait_for(window, || {
        devices
            .iter()
            .all(|d| d.back_ns.load(Ordering::Relaxed) != 0)
    })
    .await;
    eprintln!("  every device back: {all_back}");
    // A second more of samples after the last device, then the steady phase again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shared.phase.store(AFTER, Ordering::Relaxed);
    let end = Instant::now();
    let client_bins = bins_task.await.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let since_ready = |ns: u64| (ns != 0).then(|| (ns as f64 / 1e9 - secs(ready)).max(0.0));
    let m = Measured {
        cold_s,
        restart_s: (ready - kill_at).as_secs_f64(),
        back_s: devices
            .iter()
            .map(|d| since_ready(d.back_ns.load(Ordering::Relaxed)))
            .collect(),
        client_bins,
        samples: sampler.finish(),
        kill_t: secs(kill_at),
        ready_t: secs(ready),
        end_t: secs(end),
        shared,
    };
    for d in &devices {
        d.up.disconnect();
    }
    drop(devices);
    tokio::task::spawn_blocking(move || drop(second)).await?;
    Ok(m)
}
