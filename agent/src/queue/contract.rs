//! The [`Queue`] trait the agent codes against, and the values that cross it: [`Pending`]
//! (a record on its way to disk), [`Delivery`] (a record leased for sending), [`QueueStats`].
//!
//! # Contract
//! - `submit`/`append`: a record is **accepted only once it is flushed to disk**. The
//!   [`Pending`] resolves to its sequence number after the flush that made it durable, never
//!   before; an error means it was not accepted.
//! - `lease` hands out accepted records, highest priority first, then oldest; a record stays
//!   leased (not handed out again) until `ack` deletes it or `release` returns it. Leases live
//!   in memory: after a restart every record not acknowledged is delivered again
//!   (at-least-once; the hub deduplicates by `(device, epoch, seq)`).
//! - `ack` deletes: only call it for records the hub acknowledged.
//! - Blocking: `submit` blocks only while the writer's bounded channel is full; `append`,
//!   `lease` and `ack` block the calling thread (sled reads, a round trip to the writer). From
//!   async code append with `submit(..)?.accepted().await`, and run the delivery side on its own
//!   thread or in `spawn_blocking`.

use super::error::QueueError;
use super::record::{Class, Seq};
use std::path::PathBuf;
use tokio::sync::oneshot;

/// A store-and-forward queue.
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Hands a record to the writer. Blocks while the writer's bounded channel is full
    /// (backpressure); the [`Pending`] resolves once the record is flushed (accepted) or refused.
    fn submit(&self, class: Class, payload: Vec<u8>) -> Result<Pending, QueueError>;

    /// [`Queue::submit`] and wait: returns the record's sequence number once it is on disk.
    /// Blocking; from async code use `submit(..)?.accepted().await`.
    fn append(&self, class: Class, payload: Vec<u8>) -> Result<Seq, QueueError> {
        self.submit(class, payload)?.wait()
    }

    /// Up to `max_records` accepted records not already leased, highest priority first, then
    /// oldest, stopping before `max_bytes` of payload (at least one record when any is there).
    /// A record that fails its CRC is removed, counted and logged, and not returned.
    fn lease(&self, max_records: usize, max_bytes: usize) -> Result<Vec<Delivery>, QueueError>;

    /// Deletes delivered records (the hub acknowledged them); returns how many existed.
    /// Unknown or already deleted sequence numbers are ignored.
    fn ack(&self, seqs: &[Seq]) -> Result<usize, QueueError>;

    /// Returns leased records to the queue undelivered (e.g. the connection dropped).
    fn release(&self, seqs: &[Seq]);

    /// Depth, bytes and loss counters.
    fn stats(&self) -> QueueStats;

    /// The queue's epoch: a random id made when the queue was created, never 0.
    fn epoch(&self) -> u64;
}

/// A submitted record waiting for its flush.
#[derive(Debug)]
pub struct Pending {
    rx: oneshot::Receiver<Result<Seq, QueueError>>,
}

impl Pending {
    pub(crate) fn new(rx: oneshot::Receiver<Result<Seq, QueueError>>) -> Self {
        Self { rx }
    }

    /// Blocks until the record is flushed (its sequence number) or refused. Must not be called
    /// from within an async runtime (it would block the reactor; tokio panics).
    pub fn wait(self) -> Result<Seq, QueueError> {
        self.rx.blocking_recv().unwrap_or(Err(QueueError::Closed))
    }

    /// Waits without blocking the thread.
    pub async fn accepted(self) -> Result<Seq, QueueError> {
        self.rx.await.unwrap_or(Err(QueueError::Closed))
    }
}

/// One record leased for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its sequence number within [`Queue::epoch`].
    pub seq: Seq,
    /// Its class.
    pub class: Class,
    /// The producer's bytes.
    pub payload: Vec<u8>,
}

/// Counters for one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Records held.
    pub depth: u64,
    /// Bytes held (encoded records, header included: what the budget counts).
    pub bytes: u64,
    /// Records removed to make room for higher-priority or newer ones.
    pub evicted: u64,
    /// Records refused on arrival because everything held ranked higher.
    pub rejected: u64,
}

/// A database that would not open and was moved aside for a fresh queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where the old directory now is.
    pub moved_to: PathBuf,
    /// Why it would not open (sled's error or panic message).
    pub reason: String,
    /// Files in the old directory.
    pub lost_files: u64,
    /// Their total size, in bytes.
    pub lost_bytes: u64,
    /// Records it held, when that could still be read (state unreadable but records intact).
    pub lost_records: Option<u64>,
}

/// A snapshot of the queue's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue's epoch.
    pub epoch: u64,
    /// The next sequence number to be given out.
    pub next_seq: Seq,
    /// Per class, indexed by [`Class::index`]; evicted/rejected count since the queue was made.
    pub classes: [ClassStats; 4],
    /// The byte budget (`queue.max_bytes`).
    pub max_bytes: u64,
    /// Records dropped because they failed their CRC or header check, since the queue was made.
    pub crc_failures: u64,
    /// Accepted records found missing when the queue was opened (its files were damaged:
    /// sled's state behind the watermark, or a database moved aside), since the queue was made.
    pub lost: u64,
    /// Records leased and not yet acknowledged or released.
    pub leased: u64,
    /// Flushes since this process opened the queue.
    pub flushes: u64,
    /// Set when this process found the database unusable and started a fresh queue.
    pub recovery: Option<Recovery>,
}

impl QueueStats {
    /// One class's counters.
    pub fn class(&self, c: Class) -> ClassStats {
        self.classes[c.index()]
    }

    /// Records held.
    pub fn depth(&self) -> u64 {
        self.classes.iter().map(|c| c.depth).sum()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.classes.iter().map(|c| c.bytes).sum()
    }

    /// Records evicted, all classes.
    pub fn evicted(&self) -> u64 {
        self.classes.iter().map(|c| c.evicted).sum()
    }
}
