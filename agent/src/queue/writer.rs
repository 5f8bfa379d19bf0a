//! The queue's single writer thread: takes commands from a bounded channel, applies each batch
//! of them as one atomic sled batch (records, removals and the queue state together), flushes
//! once per batch, writes the high-water mark, and only then answers the producers.
//!
//! # Invariants
//! - A producer hears `Ok(seq)` only after its payload file (if any) and `Db::flush` for the
//!   batch holding its record, then the watermark, are on disk (the flush hook in tests checks
//!   the order).
//! - Payload files of removed records are deleted only after the removal was flushed.
//! - Every mutation goes through this thread, so the persisted counters and `next_seq` change
//!   in the same atomic batch as the records they describe.
//! - `durable_next` (readers deliver only seqs below it) moves only after a flush, so a record
//!   is never delivered before it is on disk, and a seq is never delivered, lost in a crash and
//!   then reused for another record.
//! - Evictions, refusals and corrupt records are counted in the state and logged at ERROR
//!   (evictions at most once per 10 s, with the counts since the last line).

use super::budget::{Evictor, Stored, Victim};
use super::error::QueueError;
use super::losses::LossLog;
use super::meta::State;
use super::payload::PayloadFiles;
use super::record::{self, Class, STATE_KEY, Seq};
use super::watermark::{Mark, Watermark};
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Append a record; answered after its flush.
    Append {
        class: Class,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Seq, QueueError>>,
    },
    /// Delete delivered records; answered once applied (not flushed: a lost ack means a
    /// redelivery, which the hub deduplicates).
    Ack {
        /// Each seq with its class when the reader knows it (leased), else every class is tried.
        seqs: Vec<(Option<Class>, Seq)>,
        reply: SyncSender<Result<usize, QueueError>>,
    },
    /// Remove a record a reader found corrupt (if it still is), counting it.
    DropCorrupt {
        class: Class,
        seq: Seq,
        reply: SyncSender<()>,
    },
}

/// Where in a flush the hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlushStage {
    /// The batch is applied, the flush is about to start.
    Before,
    /// The flush returned; producers are answered next.
    After,
}

/// Test instrumentation: called around every flush with the batch's `next_seq`.
pub(crate) type FlushHook = Arc<dyn Fn(FlushStage, Seq) + Send + Sync>;

/// What the writer publishes for readers.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Seqs below this are flushed and may be delivered.
    pub durable_next: AtomicU64,
    /// The state after the last applied batch.
    pub state: Mutex<State>,
    /// Flushes done.
    pub flushes: AtomicU64,
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub max_bytes: u64,
    pub flush_interval: Duration,
    pub flush_max_records: usize,
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub db: sled::Db,
    pub rx: Receiver<Cmd>,
    pub state: State,
    pub shared: Arc<Shared>,
    pub settings: Settings,
    pub hook: Option<FlushHook>,
    pub losses: LossLog,
    pub files: Arc<PayloadFiles>,
    pub mark: Watermark,
}

/// One write batch being built: the sled batch, the state after it, and the payload files it
/// wrote and the records it removed.
struct Pass {
    batch: sled::Batch,
    state: State,
    ev: Evictor,
    written: Vec<(Class, Seq)>,
    removed: Vec<(Class, Seq)>,
}

impl Pass {
    fn remove(&mut self, class: Class, seq: Seq, len: usize) {
        self.batch.remove(&record::key(class, seq)[..]);
        self.state.remove(class, len);
        self.removed.push((class, seq));
    }
}

struct Tree<'a>(&'a sled::Db);

impl Stored for Tree<'_> {
    fn next_after(
        &self,
        class: Class,
        after: Option<Seq>,
    ) -> Result<Option<(Seq, usize)>, QueueError> {
        let from = match after {
            None => 0,
            Some(Seq::MAX) => return Ok(None),
            Some(s) => s + 1,
        };
        let next = self
            .0
            .range(record::key(class, from)..=record::key(class, Seq::MAX))
            .next()
            .transpose()
            .map_err(|e| QueueError::storage("read for eviction", &e))?;
        Ok(next.and_then(|(k, v)| {
            record::parse_key(&k)
                .ok()
                .map(|(_, s)| (s, record::held_len(&v)))
        }))
    }
}

struct Slot {
    reply: oneshot::Sender<Result<Seq, QueueError>>,
    outcome: Result<Seq, QueueError>,
}

impl Writer {
    /// Runs until every sender is gone, then flushes.
    pub fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut batch = vec![first];
            self.gather(&mut batch);
            self.process(batch);
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "queue: final flush failed");
        }
        self.losses.report(true);
    }

    /// Adds what else is waiting (up to the interval after the first append) to the batch.
    fn gather(&self, batch: &mut Vec<Cmd>) {
        let max = self.settings.flush_max_records;
        let mut appends = batch
            .iter()
            .filter(|c| matches!(c, Cmd::Append { .. }))
            .count();
        let deadline = Instant::now() + self.settings.flush_interval;
        while appends < max && batch.len() < 2 * max {
            let waiting = appends > 0 && !self.settings.flush_interval.is_zero();
            let next = if waiting {
                self.rx.recv_deadline(deadline).ok()
            } else {
                self.rx.try_recv().ok()
            };
            let Some(cmd) = next else { break };
            appends += usize::from(matches!(cmd, Cmd::Append { .. }));
            batch.push(cmd);
        }
    }

    fn process(&mut self, cmds: Vec<Cmd>) {
        let mut pass = Pass {
            batch: sled::Batch::default(),
            state: self.state,
            ev: Evictor::default(),
            written: Vec::new(),
            removed: Vec::new(),
        };
        let mut slots: Vec<Slot> = Vec::new();
        let mut acks = Vec::new();
        let mut dropped = Vec::new();
        for cmd in cmds {
            match cmd {
                Cmd::Append {
                    class,
                    payload,
                    reply,
                } => {
                    // Every answer waits for the batch: counters are published first.
                    let outcome = self.append(&mut pass, &mut slots, class, &payload);
                    slots.push(Slot { reply, outcome });
                }
                Cmd::Ack { seqs, reply } => {
                    let n = self.ack(&mut pass, &seqs);
                    acks.push((reply, n));
                }
                Cmd::DropCorrupt { class, seq, reply } => {
                    self.drop_corrupt(&mut pass, class, seq);
                    dropped.push(reply);
                }
            }
        }
        if acks.is_empty() && dropped.is_empty() && pass.state == self.state {
            for s in slots {
                let _ = s.reply.send(s.outcome);
            }
            return;
        }
        let state = pass.state;
        pass.batch.insert(STATE_KEY, state.encode());
        let applied = if pass.written.is_empty() {
            Ok(())
        } else {
            self.files.sync_dir().map_err(|e| QueueError::Storage {
                op: "fsync the payload folder",
                message: e.to_string(),
            })
        }
        .and_then(|()| {
            self.db
                .apply_batch(pass.batch)
                .map_err(|e| QueueError::storage("apply a batch", &e))
        });
        if applied.is_ok() {
            self.state = state;
            *self.shared.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        } else {
            // Not applied: nothing names the files written for it.
            for (c, s) in pass.written {
                self.files.remove(c, s);
            }
        }
        let flushed = applied.and_then(|()| self.flush(&state));
        if let Err(e) = &flushed {
            tracing::error!(error = %e, records = slots.len(), "queue: a write batch failed; its records were not accepted");
        } else {
            for (c, s) in pass.removed {
                self.files.remove(c, s);
            }
        }
        for s in slots {
            let outcome = match (&flushed, s.outcome) {
                (Err(e), Ok(_)) => Err(e.clone()),
                (_, o) => o,
            };
            let _ = s.reply.send(outcome);
        }
        for (reply, n) in acks {
            let _ = reply.send(flushed.clone().map(|()| n));
        }
        for reply in dropped {
            let _ = reply.send(());
        }
        self.losses.report(false);
    }

    /// Flushes sled, then writes the watermark for `state`.
    fn flush(&mut self, state: &State) -> Result<(), QueueError> {
        let next_seq = state.next_seq;
        if let Some(h) = &self.hook {
            h(FlushStage::Before, next_seq);
        }
        self.db
            .flush()
            .map_err(|e| QueueError::storage("flush", &e))?;
        self.mark
            .write(&Mark::of(state))
            .map_err(|e| QueueError::Storage {
                op: "write the watermark",
                message: e.to_string(),
            })?;
        self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.hook {
            h(FlushStage::After, next_seq);
        }
        self.shared.durable_next.store(next_seq, Ordering::Release);
        Ok(())
    }

    /// Makes room and adds one record to the batch (its payload file written first when it
    /// has one); returns its seq.
    fn append(
        &mut self,
        pass: &mut Pass,
        slots: &mut [Slot],
        class: Class,
        payload: &[u8],
    ) -> Result<Seq, QueueError> {
        let budget = usize::try_from(self.settings.max_bytes).unwrap_or(usize::MAX);
        let limit = record::MAX_PAYLOAD_BYTES.min(budget.saturating_sub(record::HEADER_LEN));
        if payload.len() > limit {
            return Err(QueueError::RecordTooLarge {
                len: payload.len(),
                limit,
            });
        }
        let len = record::encoded_len(payload.len());
        while pass.state.bytes() + len as u64 > self.settings.max_bytes {
            match pass.ev.victim(&Tree(&self.db), class)? {
                Victim::Stored { class: c, seq, len } => {
                    pass.remove(c, seq, len);
                    pass.state.classes[c.index()].evicted += 1;
                    self.losses.evicted[c.index()] += 1;
                }
                Victim::Pending {
                    class: c,
                    seq,
                    len,
                    slot,
                } => {
                    pass.remove(c, seq, len);
                    pass.state.classes[c.index()].evicted += 1;
                    self.losses.evicted[c.index()] += 1;
                    if let Some(s) = slots.get_mut(slot) {
                        s.outcome = Err(QueueError::Evicted { class: c });
                    }
                }
                Victim::Incoming => {
                    pass.state.classes[class.index()].rejected += 1;
                    self.losses.rejected[class.index()] += 1;
                    return Err(QueueError::NoRoom { class });
                }
            }
        }
        let seq = pass.state.next_seq;
        let encoded = record::encode(class, seq, payload);
        let key = record::key(class, seq);
        if record::is_external_len(payload.len()) {
            self.files
                .write(class, seq, &encoded)
                .map_err(|e| QueueError::Storage {
                    op: "write a payload file",
                    message: e.to_string(),
                })?;
            pass.written.push((class, seq));
            pass.batch
                .insert(&key[..], &record::external_index(&encoded)[..]);
        } else {
            pass.batch.insert(&key[..], encoded);
        }
        pass.state.next_seq += 1;
        pass.state.add(class, len);
        pass.ev.accepted(class, seq, len, slots.len());
        Ok(seq)
    }

    fn ack(&self, pass: &mut Pass, seqs: &[(Option<Class>, Seq)]) -> usize {
        let mut n = 0;
        for &(known, seq) in seqs {
            let one = known.map(|c| [c]);
            let classes: &[Class] = one.as_ref().map_or(&Class::ALL, |c| c);
            for &class in classes {
                if pass.ev.is_removed(class, seq) {
                    continue;
                }
                if let Ok(Some(v)) = self.db.get(record::key(class, seq)) {
                    pass.remove(class, seq, record::held_len(&v));
                    pass.ev.mark_removed(class, seq);
                    n += 1;
                    break;
                }
            }
        }
        n
    }

    fn drop_corrupt(&self, pass: &mut Pass, class: Class, seq: Seq) {
        if pass.ev.is_removed(class, seq) {
            return;
        }
        let k = record::key(class, seq);
        let Ok(Some(v)) = self.db.get(k) else { return };
        let Err(e) = self.files.load(&k, &v) else {
            return;
        };
        let len = record::held_len(&v);
        pass.remove(class, seq, len);
        pass.state.crc_failures += 1;
        pass.ev.mark_removed(class, seq);
        tracing::error!(
            class = class.as_str(),
            seq,
            bytes = len,
            error = %e,
            "queue: corrupt record skipped and removed; it will not be delivered"
        );
    }
}
