//! `tandem-bench queue` (make bench-queue): the agent's durable queue: append and replay
//! records/s for 512-byte records, and this process's memory while doing it.
//!
//! - Append: `producers` threads each keep `in_flight` records submitted and wait for the
//!   oldest (a record is accepted only after its flush, so one producer waiting on each record
//!   measures fsync latency, not the queue). The writer batches what is waiting into one flush.
//! - Reopen: drop the queue and open it again with the whole backlog (start-up cost).
//! - Replay: what the delivery loop does minus the network: `lease` a batch, `ack` it, until
//!   the queue is empty.
//! - Memory: VmRSS sampled every 20 ms (the peak per phase), VmHWM at the end.
//! - Large records ([`crate::queue_large`]): 100 KB and 1 MB records (payload files) in the
//!   default 64 MiB budget: append and replay rates, and the folder's bytes against
//!   `queue.max_bytes` over fill-twice-and-drain cycles and after a reopen.
//! - MQTT (issue 4 item 7, second half; [`crate::mqtt`]): the agent's telemetry publish rate
//!   at QoS 1 to the hub's mosquitto over TLS, next to the broker's limit measured with a plain
//!   rumqttc client, same payload, same broker, same run; skipped with the reason (no
//!   mosquitto) without failing the rest.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tandem_agent::queue::{Class, Queue, QueueConfig, SledQueue};

/// `tandem-bench queue` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Records to append (and replay).
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 512)]
    payload_bytes: usize,
    /// Concurrent producer threads.
    #[arg(long, default_value_t = 4)]
    producers: u64,
    /// Records each producer keeps submitted but not yet accepted.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Records per lease during replay.
    #[arg(long, default_value_t = 1000)]
    lease_batch: usize,
    /// `queue.flush_interval_ms`.
    #[arg(long, default_value_t = QueueConfig::default().flush_interval_ms)]
    flush_interval_ms: u64,
    /// `queue.flush_max_records`.
    #[arg(long, default_value_t = QueueConfig::default().flush_max_records)]
    flush_max_records: usize,
    /// `queue.cache_bytes`.
    #[arg(long, default_value_t = QueueConfig::default().cache_bytes)]
    cache_bytes: u64,
    /// Queue directory (must not exist); default: a fresh one under the system temp dir,
    /// removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Payload sizes of the large-record rows, bytes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000])]
    large_payload_bytes: Vec<usize>,
    /// Fill-twice-and-drain cycles per large size before the disk footprint is read (0: no
    /// large-record rows).
    #[arg(long, default_value_t = 3)]
    large_cycles: u32,
    /// MQTT messages per leg (0: no MQTT rows); a cycle is six legs, each client twice.
    #[arg(long, default_value_t = 50_000)]
    mqtt_messages: u64,
    /// MQTT rounds, each judged against the target on its own (`crate::mqtt_rounds`).
    #[arg(long, default_value_t = 5)]
    mqtt_rounds: u32,
    /// Six-leg cycles per MQTT round (plain, agent and control plain client twice each, in a
    /// mirrored order rotated per cycle): 3 lets every client go first once per round.
    #[arg(long, default_value_t = 3)]
    mqtt_cycles: u32,
    /// The mosquitto binary; default: searched as the hub does (`PATH`, then /usr/sbin).
    #[arg(long)]
    mosquitto_bin: Option<PathBuf>,
}

/// Peak VmRSS (kB) since the last reset, sampled in the background.
struct RssSampler {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

impl RssSampler {
    fn start() -> Self {
        let peak_kb = Arc::new(AtomicU64::new(status_kb("VmRSS:")));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak_kb.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(status_kb("VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            peak_kb,
            stop,
            thread: Some(thread),
        }
    }

    /// The peak since the last call, in MiB; starts a new phase.
    fn take_mib(&self) -> f64 {
        let now = status_kb("VmRSS:");
        let peak = self.peak_kb.swap(now, Ordering::Relaxed).max(now);
        peak as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

struct Row {
    phase: String,
    records: u64,
    secs: f64,
    rss_mib: f64,
}

fn append(q: &Arc<SledQueue>, a: &Args) -> anyhow::Result<u64> {
    let per = a.records / a.producers.max(1);
    let threads: Vec<_> = (0..a.producers.max(1))
        .map(|p| {
            let q = q.clone();
            let (len, window) = (a.payload_bytes, a.in_flight.max(1));
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut waiting = std::collections::VecDeque::with_capacity(window);
                let mut done = 0;
                for n in 0..per {
                    let payload = vec![(p as u8) ^ (n as u8); len];
                    waiting.push_back(q.submit(Class::Event, payload)?);
                    if waiting.len() >= window
                        && let Some(oldest) = waiting.pop_front()
                    {
                        oldest.wait()?;
                        done += 1;
                    }
                }
                for w in waiting {
                    w.wait()?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    join_producers(threads)
}

/// Waits for every producer thread; the records they had accepted, summed.
pub(crate) fn join_producers(
    threads: Vec<std::thread::JoinHandle<anyhow::Result<u64>>>,
) -> anyhow::Result<u64> {
    let mut total = 0;
    for t in threads {
        total += t
            .join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    }
    Ok(total)
}

/// Leases `batch` records and acknowledges them until the queue is empty.
pub(crate) fn replay(q: &SledQueue, batch: usize) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let got = q.lease(batch, usize::MAX)?;
        if got.is_empty() {
            return Ok(total);
        }
        let seqs: Vec<_> = got.iter().map(|d| d.seq).collect();
        total += q.ack(&seqs)? as u64;
    }
}

/// Runs the benchmark and prints the table, then (with MQTT) the `mqtt-ratio:` line, then
/// `queue-append-per-s: N`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let (dir, owned) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tandem-bench-queue-{}", std::process::id())),
            true,
        ),
    };
    if dir.exists() {
        bail!("{} exists; give a fresh --dir", dir.display());
    }
    let record = (a.payload_bytes + tandem_agent::queue::record::HEADER_LEN) as u64;
    let cfg = QueueConfig {
        dir: dir.clone(),
        max_bytes: (a.records * record).max(1 << 20) * 2,
        cache_bytes: a.cache_bytes,
        flush_interval_ms: a.flush_interval_ms,
        flush_max_records: a.flush_max_records,
    };
    let rss = RssSampler::start();
    let base_mib = rss.take_mib();
    let mut rows = Vec::new();

    let q = Arc::new(SledQueue::open(&cfg).context("open the queue")?);
    let t = Instant::now();
    let appended = append(&q, a)?;
    let append_secs = t.elapsed().as_secs_f64();
    rows.push(Row {
        phase: format!(
            "append ({} producers x {} in flight)",
            a.producers, a.in_flight
        ),
        records: appended,
        secs: append_secs,
        rss_mib: rss.take_mib(),
    });
    let flushes = q.stats().flushes;
    drop(q);
    let disk = dir_bytes(&dir);

    let t = Instant::now();
    let q = SledQueue::open(&cfg).context("reopen the queue")?;
    let reopen_secs = t.elapsed().as_secs_f64();
    let depth = q.stats().depth();
    rows.push(Row {
        phase: format!("reopen with {depth} records"),
        records: 0,
        secs: reopen_secs,
        rss_mib: rss.take_mib(),
    });

    let t = Instant::now();
    let replayed = replay(&q, a.lease_batch)?;
    rows.push(Row {
        phase: format!("replay (lease {} + ack)", a.lease_batch),
        records: replayed,
        secs: t.elapsed().as_secs_f64(),
        rss_mib: rss.take_mib(),
    });
    let left = q.stats().depth();
    drop(q);
    if owned {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if replayed != appended || left != 0 {
        bail!("replayed {replayed} of {appended} records, {left} left");
    }
    let mut large = Vec::new();
    if a.large_cycles > 0 {
        for &len in &a.large_payload_bytes {
            let d = PathBuf::from(format!("{}-{len}", dir.display()));
            large.push(crate::queue_large::measure(&d, len, a.large_cycles)?);
        }
    }
    let mqtt = (a.mqtt_messages > 0).then(|| {
        let r = crate::mqtt::run(
            a.mosquitto_bin.as_deref().unwrap_or(Path::new("")),
            a.mqtt_messages,
            a.mqtt_rounds,
            a.mqtt_cycles,
        );
        (r, rss.take_mib())
    });
    let hwm_mib = status_kb("VmHWM:") as f64 / 1024.0;

    println!(
        "durable queue: {} records of {} B, cache {} KiB, flush_interval_ms {}, flush_max_records {}",
        a.records,
        a.payload_bytes,
        a.cache_bytes / 1024,
        a.flush_interval_ms,
        a.flush_max_records
    );
    println!("| phase | records | seconds | records/s | MiB/s (payload) | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let (rate, mib) = if r.records > 0 {
            let rate = r.records as f64 / r.secs;
            (
                format!("{rate:.0}"),
                format!("{:.1}", rate * a.payload_bytes as f64 / (1 << 20) as f64),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "| {} | {} | {:.3} | {rate} | {mib} | {:.1} |",
            r.phase, r.records, r.secs, r.rss_mib
        );
    }
    crate::queue_large::print_rows(&large);
    let mqtt_lines = match mqtt {
        None => vec!["MQTT rows skipped: --mqtt-messages 0".to_string()],
        Some((Ok(Ok(r)), rss_mib)) => {
            for row in crate::mqtt_rounds::table_rows(&r, rss_mib) {
                println!("{row}");
            }
            crate::mqtt_rounds::tail_lines(&r, a.mqtt_messages, a.mqtt_cycles)
        }
        Some((Ok(Err(why)), _)) => vec![format!("MQTT rows skipped: {why}")],
        Some((Err(e), _)) => vec![format!("MQTT rows skipped: the measurement failed: {e:#}")],
    };
    println!(
        "flushes {flushes} ({:.0} records per flush); on disk after append {:.1} MiB for {:.1} MiB of records; RSS before {:.1} MiB, VmHWM {:.1} MiB",
        appended as f64 / flushes.max(1) as f64,
        disk as f64 / (1 << 20) as f64,
        (appended * record) as f64 / (1 << 20) as f64,
        base_mib,
        hwm_mib
    );
    crate::queue_large::print_footprint(&large);
    for l in mqtt_lines {
        println!("{l}");
    }
    println!("queue-append-per-s: {:.0}", appended as f64 / append_secs);
    Ok(())
}
