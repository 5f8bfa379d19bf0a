//! `tandem-bench`: benchmark tools. Each prints a table, then its headline figure last.
//!
//! # Layout
//! - [`local`]: `tandem-bench local` (make bench-local): raw ORT vs engine vs HTTP API vs a
//!   FastAPI peer.
//! - [`cascade`]: `tandem-bench cascade` (make bench-cascade): accuracy, offload share, bytes and
//!   latency of the cascade.
//! - [`stats`]: latency percentiles and throughput.
//! - [`procs`]: spawning the agent daemon and peers.

mod cascade;
mod local;
mod procs;
mod stats;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Local(a) => local::run(&a),
        Command::Cascade(a) => cascade::run(&a),
    }
}
