//! `tandem-agent queue-stress` (hidden, for the crash test): several threads append records
//! and print each accepted one as `seq producer n` on stdout, after `append` returned. The
//! test kills the process with SIGKILL at random moments and checks that every printed record
//! is still in the queue, with its payload.
//!
//! Output: first `epoch <hex>`, then one line per accepted record; a line is written whole
//! (stdout is line-buffered), so a kill can lose only lines, never corrupt one.

use super::contract::Queue;
use super::record::Class;
use super::store::SledQueue;
use super::{QueueConfig, QueueError};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// `queue-stress` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct StressArgs {
    /// Queue directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Concurrent producer threads.
    #[arg(long, default_value_t = 4)]
    pub producers: u64,
    /// Records per producer; 0 appends until killed.
    #[arg(long, default_value_t = 0)]
    pub records: u64,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 512)]
    pub payload_bytes: usize,
}

/// The payload producer `p` writes as its `n`-th record: recognisable and checkable.
pub fn payload(p: u64, n: u64, len: usize) -> Vec<u8> {
    let head = format!("p{p}-n{n}-");
    head.bytes()
        .chain((0..).map(|i: u64| (i ^ n ^ p) as u8))
        .take(len.max(head.len()))
        .collect()
}

/// The class producer `p` uses for its `n`-th record (every class in turn).
pub fn class_of(p: u64, n: u64) -> Class {
    Class::ALL[((p + n) % 4) as usize]
}

/// Runs until killed (or `records` each); returns a message on failure.
pub fn run(args: &StressArgs) -> Result<(), QueueError> {
    let q = Arc::new(SledQueue::open(&QueueConfig {
        dir: args.dir.clone(),
        max_bytes: 1 << 30,
        ..QueueConfig::default()
    })?);
    println!("epoch {:016x}", q.epoch());
    let threads: Vec<_> = (0..args.producers.max(1))
        .map(|p| {
            let q = q.clone();
            let args = args.clone();
            std::thread::spawn(move || -> Result<(), QueueError> {
                let mut n = 0;
                while args.records == 0 || n < args.records {
                    let seq = q.append(class_of(p, n), payload(p, n, args.payload_bytes))?;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{seq} {p} {n}");
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| QueueError::Closed)??;
    }
    Ok(())
}
