//! The queue's single writer thread: takes commands from a bounded channel, applies each batch
//! of them as one atomic sled batch (records, removals and the queue state together), flushes
//! once per batch that appended, and only then answers the producers.
//!
//! # Invariants
//! - A producer hears `Ok(seq)` only after `Db::flush` returned for the batch holding its
//!   record (the flush hook in tests checks the order).
//! - Every mutation goes through this thread, so the persisted counters and `next_seq` change
//!   in the same atomic batch as the records they describe.
//! - `durable_next` (readers deliver only seqs below it) moves only after a flush, so a record
//!   is never delivered before it is on disk, and a seq is never delivered, lost in a crash and
//!   then reused for another record.
//! - Evictions, refusals and corrupt records are counted in the state and logged at ERROR
//!   (evictions at most once per 10 s, with the counts since the last line).

use super::budget::{Evictor, Stored, Victim};
use super::error::QueueError;
use super::meta::State;
use super::record::{self, Class, STATE_KEY, Seq};
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
        Ok(next.and_then(|(k, v)| record::parse_key(&k).ok().map(|(_, s)| (s, v.len()))))
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
        let mut batch = sled::Batch::default();
        let mut state = self.state;
        let mut ev = Evictor::default();
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
                    let outcome =
                        self.append(&mut batch, &mut state, &mut ev, &mut slots, class, &payload);
                    slots.push(Slot { reply, outcome });
                }
                Cmd::Ack { seqs, reply } => {
                    let n = self.ack(&mut batch, &mut state, &mut ev, &seqs);
                    acks.push((reply, n));
                }
                Cmd::DropCorrupt { class, seq, reply } => {
                    self.drop_corrupt(&mut batch, &mut state, &mut ev, class, seq);
                    dropped.push(reply);
                }
            }
        }
        let appended = slots.iter().any(|s| s.outcome.is_ok());
        if acks.is_empty() && dropped.is_empty() && state == self.state {
            for s in slots {
                let _ = s.reply.send(s.outcome);
            }
            return;
        }
        batch.insert(STATE_KEY, state.encode());
        let applied = self
            .db
            .apply_batch(batch)
            .map_err(|e| QueueError::storage("apply a batch", &e));
        if applied.is_ok() {
            self.state = state;
            *self.shared.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        }
        let flushed = applied.and_then(|()| {
            if appended {
                self.flush(state.next_seq)
            } else {
                Ok(())
            }
        });
        if let Err(e) = &flushed {
            tracing::error!(error = %e, records = slots.len(), "queue: a write batch failed; its records were not accepted");
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

    fn flush(&self, next_seq: Seq) -> Result<(), QueueError> {
        if let Some(h) = &self.hook {
            h(FlushStage::Before, next_seq);
        }
        self.db
            .flush()
            .map_err(|e| QueueError::storage("flush", &e))?;
        self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.hook {
            h(FlushStage::After, next_seq);
        }
        self.shared.durable_next.store(next_seq, Ordering::Release);
        Ok(())
    }

    /// Makes room and adds one record to the batch; returns its seq.
    fn append(
        &mut self,
        batch: &mut sled::Batch,
        state: &mut State,
        ev: &mut Evictor,
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
        while state.bytes() + len as u64 > self.settings.max_bytes {
            match ev.victim(&Tree(&self.db), class)? {
                Victim::Stored { class: c, seq, len } => {
                    batch.remove(&record::key(c, seq)[..]);
                    state.remove(c, len);
                    state.classes[c.index()].evicted += 1;
                    self.losses.evicted[c.index()] += 1;
                }
                Victim::Pending {
                    class: c,
                    seq,
                    len,
                    slot,
                } => {
                    batch.remove(&record::key(c, seq)[..]);
                    state.remove(c, len);
                    state.classes[c.index()].evicted += 1;
                    self.losses.evicted[c.index()] += 1;
                    if let Some(s) = slots.get_mut(slot) {
                        s.outcome = Err(QueueError::Evicted { class: c });
                    }
                }
                Victim::Incoming => {
                    state.classes[class.index()].rejected += 1;
                    self.losses.rejected[class.index()] += 1;
                    return Err(QueueError::NoRoom { class });
                }
            }
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        batch.insert(
            &record::key(class, seq)[..],
            record::encode(class, seq, payload),
        );
        state.add(class, len);
        ev.accepted(class, seq, len, slots.len());
        Ok(seq)
    }

    fn ack(
        &self,
        batch: &mut sled::Batch,
        state: &mut State,
        ev: &mut Evictor,
        seqs: &[(Option<Class>, Seq)],
    ) -> usize {
        let mut n = 0;
        for &(known, seq) in seqs {
            let one = known.map(|c| [c]);
            let classes: &[Class] = one.as_ref().map_or(&Class::ALL, |c| c);
            for &class in classes {
                if ev.is_removed(class, seq) {
                    continue;
                }
                let k = record::key(class, seq);
                if let Ok(Some(v)) = self.db.get(k) {
                    batch.remove(&k[..]);
                    state.remove(class, v.len());
                    ev.mark_removed(class, seq);
                    n += 1;
                    break;
                }
            }
        }
        n
    }

    fn drop_corrupt(
        &self,
        batch: &mut sled::Batch,
        state: &mut State,
        ev: &mut Evictor,
        class: Class,
        seq: Seq,
    ) {
        if ev.is_removed(class, seq) {
            return;
        }
        let k = record::key(class, seq);
        let Ok(Some(v)) = self.db.get(k) else { return };
        let Err(e) = record::decode(&k, &v) else {
            return;
        };
        batch.remove(&k[..]);
        state.remove(class, v.len());
        state.crc_failures += 1;
        ev.mark_removed(class, seq);
        tracing::error!(
            class = class.as_str(),
            seq,
            bytes = v.len(),
            error = %e,
            "queue: corrupt record skipped and removed; it will not be delivered"
        );
    }
}

/// Evictions and refusals not yet logged.
#[derive(Debug, Default)]
pub(crate) struct LossLog {
    pub evicted: [u64; 4],
    pub rejected: [u64; 4],
    last: Option<Instant>,
}

impl LossLog {
    const EVERY: Duration = Duration::from_secs(10);

    /// Logs the counts since the last line if there are any and 10 s passed (or `now`).
    fn report(&mut self, now: bool) {
        if self.evicted == [0; 4] && self.rejected == [0; 4] {
            return;
        }
        if !now && self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        let fmt = |a: &[u64; 4]| {
            Class::ALL
                .iter()
                .filter(|c| a[c.index()] > 0)
                .map(|c| format!("{}={}", c.as_str(), a[c.index()]))
                .collect::<Vec<_>>()
                .join(",")
        };
        tracing::error!(
            evicted = %fmt(&self.evicted),
            rejected = %fmt(&self.rejected),
            "queue: byte budget full; lowest-priority, oldest records dropped (queue.max_bytes)"
        );
        self.evicted = [0; 4];
        self.rejected = [0; 4];
        self.last = Some(Instant::now());
    }
}
