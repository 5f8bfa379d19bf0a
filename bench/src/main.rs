//! `tandem-bench`: benchmark tools. Each prints a table, then its headline figure last.
//!
//! # Layout
//! - [`local`]: `tandem-bench local` (make bench-local): raw ORT vs engine vs HTTP API vs a
//!   FastAPI peer.
//! - [`cascade`]: `tandem-bench cascade` (make bench-cascade): accuracy, offload share, bytes and
//!   latency of the cascade.
//! - [`hub`]: `tandem-bench hub` (make bench-hub): QUIC vs TLS transport, hub batching on vs
//!   off under 64 devices, the hub's REST endpoint vs a Triton peer.
//! - [`queue`]: `tandem-bench queue` (make bench-queue): the agent's durable queue, append and
//!   replay records/s and memory; with [`mqtt`], the agent's telemetry publish rate at QoS 1 to
//!   mosquitto next to the broker's limit and a control client ([`mqtt_rounds`]: the rounds).
//! - [`swap`]: `tandem-bench swap` (make bench-swap): requests/s and failures before, during
//!   and after a model swap under load; bundle download throughput over QUIC.
//! - [`fleet`]: `tandem-bench fleet` (make bench-fleet): 1,000 devices reconnecting after the
//!   hub is killed and restarted: time until 99% and 100% are back, handshakes/s, hub CPU/RSS.
//! - [`eps`]: `tandem-bench eps` (make bench-eps): every model on every execution provider
//!   available here: latency, throughput, session build time, difference from the CPU EP.
//! - [`frames`]: `tandem-bench frames` (make bench-frames): pre-processing and end-to-end
//!   time, before/after/wgpu, for ImageNet samples and 1080p/4K frames, next to the floor and
//!   a FastAPI + PIL peer.
//! - [`detect`]: `tandem-bench detect` (make bench-detect): mAP@0.5, precision, recall of the
//!   edge and cloud detectors and the cascade on `models/detection-set`, offload share,
//!   per-frame latency ([`detect_eval`]: the metrics; [`detect_fit`]: the cascade's policy,
//!   fitted and judged on disjoint folds; [`detect_signals`]: candidate routing signals
//!   measured the same way; [`detect_views`]: disagreement signals between views of a frame,
//!   `--disagreement`; [`detect_edges`]: candidate edges, `--edge NAME`).
//! - [`loop_bench`]: `tandem-bench loop` (make bench-loop): one turn of the learning loop on
//!   a shifted stream through the real hub and agents: offload, edge and cascade accuracy
//!   before and after, a candidate the gate refuses.
//! - [`console`]: `tandem-bench console` (make bench-console): the console's fleet page for
//!   1,000 simulated devices in headless Chromium: the API calls' server time, the render time;
//!   `tandem-bench console-shot`: a screenshot of a console page (`make demo`).
//! - [`stats`]: latency percentiles and throughput.
//! - [`procs`]: spawning the agent daemon and peers.

mod cascade;
mod console;
mod detect;
mod detect_edges;
mod detect_eval;
mod detect_fit;
mod detect_signals;
mod detect_views;
mod eps;
mod fleet;
mod frames;
mod frames_split;
mod frames_wgpu;
mod hub;
mod local;
mod loop_bench;
mod mqtt;
mod mqtt_rounds;
mod procs;
mod queue;
mod queue_large;
mod stats;
mod swap;

use clap::{Parser, Subcommand};

/// Tandem benchmarks.
#[derive(Debug, Parser)]
#[command(name = "tandem-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Local inference overhead: floor (raw ort), engine, HTTP API, FastAPI peer.
    Local(local::Args),
    /// Edge-only vs cloud-only vs the cascade over a threshold sweep (vision-fashion, 10k).
    Cascade(cascade::Args),
    /// The agent's durable queue: append and replay records/s (512 B), RSS; MQTT QoS 1
    /// publish rate, the agent's path vs a plain client.
    Queue(queue::Args),
    /// The hub: QUIC vs TLS, batching on vs off (64 devices), REST vs Triton.
    Hub(hub::Args),
    /// A model update under load (no failed request) and bundle download throughput.
    Swap(swap::Args),
    /// A fleet (1,000 devices) reconnecting after the hub is killed and restarted.
    Fleet(fleet::Args),
    /// Every model on every available execution provider (latency, throughput, accuracy).
    Eps(eps::Args),
    /// Pre-processing and end to end: ImageNet samples, 1080p and 4K frames; CPU before and
    /// after, wgpu; the inference floor and a FastAPI + PIL peer.
    Frames(frames::Args),
    /// Detection on the labelled photos: mAP@0.5, precision, recall, offload, latency.
    Detect(detect::Args),
    /// One turn of the learning loop on a shifted stream (feedback, calibration, training,
    /// gate, rollout), measured before and after on inputs no fit saw.
    Loop(loop_bench::Args),
    /// The console's fleet page for 1,000 simulated devices: API server time, render time.
    Console(console::Args),
    /// A screenshot of a console page, logged in with the operator's token (the demo's).
    ConsoleShot(console::ShotArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Local(a) => local::run(&a),
        Command::Cascade(a) => cascade::run(&a),
        Command::Queue(a) => queue::run(&a),
        Command::Hub(a) => hub::run(&a),
        Command::Swap(a) => swap::run(&a),
        Command::Fleet(a) => fleet::run(&a),
        Command::Eps(a) => eps::run(&a),
        Command::Frames(a) => frames::run(&a),
        Command::Detect(a) => detect::run(&a),
        Command::Loop(a) => loop_bench::run(&a),
        Command::Console(a) => console::run(&a),
        Command::ConsoleShot(a) => console::shot(&a),
    }
}
