//! [`SledQueue`]: the [`Queue`] on a sled database, with one writer thread
//! (`writer.rs`) and lock-free reads for delivery.
//!
//! # Invariants
//! - Opening never replays or scans the records: it reads the state record and the last key
//!   of each class, so start-up does not wait for the backlog; draining is the delivery
//!   loop's work, in the background.
//! - `lease` returns only records below the writer's durable mark (flushed), each at most once
//!   until acknowledged or released.
//! - The writer's channel is bounded (`2 × flush_max_records`): a full channel blocks
//!   producers in `submit` (backpressure), it never drops.
//! - Dropping the last handle stops the writer after it has applied and flushed everything
//!   already submitted.

use super::config::QueueConfig;
use super::contract::{Delivery, Pending, Queue, QueueStats, Recovery};
use super::error::QueueError;
use super::losses::LossLog;
use super::open;
use super::payload::{self, PayloadFiles};
use super::record::{self, Class, Seq};
use super::writer::{Cmd, FlushHook, Settings, Shared, Writer};
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// The footprint bound's factor: the queue's folder stays within
/// `FOOTPRINT_FACTOR × queue.max_bytes + FOOTPRINT_SLACK_BYTES` (checked by `disk_tests`).
/// Payload files take 1× what they hold; sled's log of small inline records took up to 7×
/// their budget over 8 fill-and-drain cycles of 16 and 32 MiB (`docs/benchmarks/queue.md`).
pub const FOOTPRINT_FACTOR: u64 = 8;
/// The footprint bound's constant part: sled's fixed files (segments, snapshot, config).
pub const FOOTPRINT_SLACK_BYTES: u64 = 16 * 1024 * 1024;

/// The durable queue. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct SledQueue {
    db: sled::Db,
    tx: Option<Sender<Cmd>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// Leased records: seq → class (a seq is unique across classes).
    leased: Mutex<HashMap<Seq, Class>>,
    files: Arc<PayloadFiles>,
    dir: std::path::PathBuf,
    epoch: u64,
    max_bytes: u64,
    recovery: Option<Recovery>,
}

impl SledQueue {
    /// Opens (or creates) the queue described by `cfg`, its `dir` already resolved. A
    /// database that will not open is moved aside and reported in [`QueueStats::recovery`].
    pub fn open(cfg: &QueueConfig) -> Result<Self, QueueError> {
        Self::open_with(cfg, None)
    }

    /// [`SledQueue::open`] with a flush hook (tests).
    pub(crate) fn open_with(
        cfg: &QueueConfig,
        hook: Option<FlushHook>,
    ) -> Result<Self, QueueError> {
        let opened = open::open(&cfg.dir, cfg.cache_bytes)?;
        let state = opened.state;
        let files = Arc::new(opened.files);
        let shared = Arc::new(Shared {
            durable_next: AtomicU64::new(state.next_seq),
            state: Mutex::new(state),
            flushes: AtomicU64::new(0),
        });
        let capacity = cfg.flush_max_records.max(1) * 2;
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let writer = Writer {
            db: opened.db.clone(),
            rx,
            state,
            shared: shared.clone(),
            settings: Settings {
                max_bytes: cfg.max_bytes,
                flush_interval: Duration::from_millis(cfg.flush_interval_ms),
                flush_max_records: cfg.flush_max_records.max(1),
            },
            hook,
            losses: LossLog::default(),
            files: files.clone(),
            mark: opened.mark,
        };
        let handle = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| QueueError::Open {
                path: cfg.dir.clone(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        tracing::info!(
            dir = %cfg.dir.display(),
            epoch = format_args!("{:016x}", state.epoch),
            records = state.depth(),
            bytes = state.bytes(),
            next_seq = state.next_seq,
            "queue open"
        );
        Ok(Self {
            db: opened.db,
            tx: Some(tx),
            writer: Some(handle),
            shared,
            leased: Mutex::new(HashMap::new()),
            files,
            dir: cfg.dir.clone(),
            epoch: state.epoch,
            max_bytes: cfg.max_bytes,
            recovery: opened.recovery,
        })
    }

    /// Bytes of every file in the queue's folder (sled's files, payload files, the mark): its
    /// footprint on disk, which stays within [`FOOTPRINT_FACTOR`] × `max_bytes` +
    /// [`FOOTPRINT_SLACK_BYTES`].
    pub fn disk_bytes(&self) -> u64 {
        payload::folder_size(&self.dir).1
    }

    fn send(&self, cmd: Cmd) -> Result<(), QueueError> {
        self.tx
            .as_ref()
            .ok_or(QueueError::Closed)?
            .send(cmd)
            .map_err(|_| QueueError::Closed)
    }

    fn leased(&self) -> std::sync::MutexGuard<'_, HashMap<Seq, Class>> {
        self.leased.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the writer to remove a record found corrupt, and waits for it.
    fn drop_corrupt(&self, class: Class, seq: Seq) {
        let (reply, rx) = mpsc::sync_channel(1);
        if self.send(Cmd::DropCorrupt { class, seq, reply }).is_ok() {
            let _ = rx.recv();
        }
    }
}

impl Queue for SledQueue {
    fn submit(&self, class: Class, payload: Vec<u8>) -> Result<Pending, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Append {
            class,
            payload,
            reply,
        })?;
        Ok(Pending::new(rx))
    }

    fn lease(&self, max_records: usize, max_bytes: usize) -> Result<Vec<Delivery>, QueueError> {
        let durable = self.shared.durable_next.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        let mut bytes = 0usize;
        {
            let mut leased = self.leased();
            'classes: for class in Class::ALL {
                let range = record::key(class, 0)..record::key(class, durable);
                for item in self.db.range(range) {
                    if out.len() >= max_records {
                        break 'classes;
                    }
                    let (k, v) = item.map_err(|e| QueueError::storage("read for delivery", &e))?;
                    let Ok((_, seq)) = record::parse_key(&k) else {
                        continue;
                    };
                    if leased.contains_key(&seq) {
                        continue;
                    }
                    let len = record::held_len(&v) - record::HEADER_LEN.min(record::held_len(&v));
                    if !out.is_empty() && bytes + len > max_bytes {
                        break 'classes;
                    }
                    match self.files.load(&k, &v) {
                        Ok(payload) => {
                            bytes += payload.len();
                            leased.insert(seq, class);
                            out.push(Delivery {
                                seq,
                                class,
                                payload,
                            });
                        }
                        Err(_) => corrupt.push((class, seq)),
                    }
                }
            }
        }
        for (class, seq) in corrupt {
            self.drop_corrupt(class, seq);
        }
        Ok(out)
    }

    fn ack(&self, seqs: &[Seq]) -> Result<usize, QueueError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let keyed = {
            let leased = self.leased();
            seqs.iter().map(|s| (leased.get(s).copied(), *s)).collect()
        };
        let (reply, rx) = mpsc::sync_channel(1);
        self.send(Cmd::Ack { seqs: keyed, reply })?;
        let n = rx.recv().unwrap_or(Err(QueueError::Closed))?;
        self.release(seqs);
        Ok(n)
    }

    fn release(&self, seqs: &[Seq]) {
        let mut leased = self.leased();
        for seq in seqs {
            leased.remove(seq);
        }
    }

    fn stats(&self) -> QueueStats {
        let s = *self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        QueueStats {
            epoch: s.epoch,
            next_seq: s.next_seq,
            classes: s.classes,
            max_bytes: self.max_bytes,
            crc_failures: s.crc_failures,
            lost: s.lost,
            leased: self.leased().len() as u64,
            flushes: self.shared.flushes.load(Ordering::Relaxed),
            recovery: self.recovery.clone(),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for SledQueue {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            tracing::error!("queue: the writer thread panicked");
        }
    }
}

/// Opens the queue at `dir` with default settings otherwise (tools and tests).
pub fn open_dir(dir: &Path) -> Result<SledQueue, QueueError> {
    SledQueue::open(&QueueConfig {
        dir: dir.to_path_buf(),
        ..QueueConfig::default()
    })
}
