//! `tandem-bench queue`, large records (issue 11, Deliver 3): append and replay rates for
//! 100 KB and 1 MB records (payload files), and the queue folder's bytes against
//! `queue.max_bytes` after cycles that fill the budget twice over (evicting) and acknowledge
//! everything, then after a reopen.

use anyhow::{Context, bail};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tandem_agent::queue::store::{FOOTPRINT_FACTOR, FOOTPRINT_SLACK_BYTES};
use tandem_agent::queue::{Class, Queue, QueueConfig, SledQueue};

/// One record size's results.
pub struct Large {
    /// Payload bytes per record.
    pub payload_bytes: usize,
    /// Records appended (and replayed) in the rate phases.
    pub records: u64,
    /// Append rate, records/s (4 producers × 8 in flight).
    pub append_per_s: f64,
    /// Replay rate (lease 64 + ack), records/s.
    pub replay_per_s: f64,
    /// Fill-and-drain cycles run.
    pub cycles: u32,
    /// The budget.
    pub max_bytes: u64,
    /// Largest folder size seen (after each fill and each drain).
    pub worst_bytes: u64,
    /// Folder size after the last drain.
    pub drained_bytes: u64,
    /// Folder size after reopening the drained queue.
    pub reopened_bytes: u64,
}

fn submit_all(q: &Arc<SledQueue>, count: u64, len: usize) -> anyhow::Result<u64> {
    let producers = 4u64;
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut waiting = std::collections::VecDeque::new();
                let mut done = 0;
                for n in 0..count / producers {
                    waiting.push_back(q.submit(Class::HardExample, vec![(p ^ n) as u8; len])?);
                    if waiting.len() >= 8
                        && let Some(oldest) = waiting.pop_front()
                    {
                        done += u64::from(oldest.wait().is_ok());
                    }
                }
                for w in waiting {
                    done += u64::from(w.wait().is_ok());
                }
                Ok(done)
            })
        })
        .collect();
    crate::queue::join_producers(threads)
}

fn drain(q: &SledQueue) -> anyhow::Result<u64> {
    crate::queue::replay(q, 64)
}

/// Measures one record size in a fresh queue under `dir` (removed afterwards).
pub fn measure(dir: &Path, payload_bytes: usize, cycles: u32) -> anyhow::Result<Large> {
    if dir.exists() {
        bail!("{} exists; give a fresh --dir", dir.display());
    }
    let cfg = QueueConfig {
        dir: dir.to_path_buf(),
        ..QueueConfig::default()
    };
    let max_bytes = cfg.max_bytes;
    let q = Arc::new(SledQueue::open(&cfg).context("open the queue")?);
    // Rates: half the budget, so nothing is evicted.
    let records = (max_bytes / 2 / payload_bytes as u64).max(8);
    let t = Instant::now();
    let appended = submit_all(&q, records, payload_bytes)?;
    let append_per_s = appended as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let replayed = drain(&q)?;
    let replay_per_s = replayed as f64 / t.elapsed().as_secs_f64();
    if replayed != appended {
        bail!("replayed {replayed} of {appended} {payload_bytes}-byte records");
    }
    // Footprint: each cycle offers twice the budget (the oldest evicted), then drains it.
    let mut worst = q.disk_bytes();
    for _ in 0..cycles {
        submit_all(&q, 2 * max_bytes / payload_bytes as u64, payload_bytes)?;
        worst = worst.max(q.disk_bytes());
        drain(&q)?;
        worst = worst.max(q.disk_bytes());
    }
    let drained_bytes = q.disk_bytes();
    drop(q);
    let q = SledQueue::open(&cfg).context("reopen the queue")?;
    let reopened_bytes = q.disk_bytes();
    drop(q);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Large {
        payload_bytes,
        records: appended,
        append_per_s,
        replay_per_s,
        cycles,
        max_bytes,
        worst_bytes: worst.max(reopened_bytes),
        drained_bytes,
        reopened_bytes,
    })
}

/// The table rows for `results`.
pub fn print_rows(results: &[Large]) {
    for r in results {
        println!(
            "| append {} KB records (4 producers x 8 in flight) | {} | - | {:.0} | {:.1} | - |",
            r.payload_bytes / 1000,
            r.records,
            r.append_per_s,
            r.append_per_s * r.payload_bytes as f64 / (1 << 20) as f64
        );
        println!(
            "| replay {} KB records (lease 64 + ack) | {} | - | {:.0} | {:.1} | - |",
            r.payload_bytes / 1000,
            r.records,
            r.replay_per_s,
            r.replay_per_s * r.payload_bytes as f64 / (1 << 20) as f64
        );
    }
}

/// One line per size: the folder's bytes against `max_bytes`.
pub fn print_footprint(results: &[Large]) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for r in results {
        println!(
            "disk, {} KB records, max_bytes {:.0} MiB, {} cycles of 2x budget + drain: worst {:.1} MiB ({:.2}x max_bytes; bound {FOOTPRINT_FACTOR}x + {} MiB), drained {:.2} MiB, after reopen {:.2} MiB",
            r.payload_bytes / 1000,
            mib(r.max_bytes),
            r.cycles,
            mib(r.worst_bytes),
            r.worst_bytes as f64 / r.max_bytes as f64,
            FOOTPRINT_SLACK_BYTES >> 20,
            mib(r.drained_bytes),
            mib(r.reopened_bytes)
        );
    }
}
