//! Eviction order within one write batch: which record goes when the byte budget is full.
//!
//! # Policy
//! Appends are decided one at a time, in arrival order. While the queue's bytes plus the new
//! record's exceed `max_bytes`, the victim is the lowest-priority, oldest record among those
//! held and the new one: classes from the lowest priority up to the new record's own, and
//! within a class stored records (oldest first), then records accepted earlier in the same
//! batch, then the new record itself. So a record never evicts one of higher priority: if
//! everything held ranks higher, the new record is refused (`rejected`), and within a class the
//! oldest goes first (`evicted`).
//!
//! # Invariants
//! - Each stored record is offered as a victim at most once per batch; records the batch
//!   already removed (acks, earlier evictions) are skipped.
//! - Victim search walks each class's key range forward from a per-batch cursor, so a batch
//!   costs O(victims + removed) lookups, not a rescan per append.

use super::error::QueueError;
use super::record::{Class, Seq};
use std::collections::{HashSet, VecDeque};

/// Where the stored records are (sled in the queue, a map in tests).
pub(crate) trait Stored {
    /// The oldest stored record of `class` after `after` (from the start when `None`), as its
    /// seq and encoded length.
    fn next_after(
        &self,
        class: Class,
        after: Option<Seq>,
    ) -> Result<Option<(Seq, usize)>, QueueError>;
}

/// The record that has to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Victim {
    /// A record already on disk.
    Stored {
        /// Its class.
        class: Class,
        /// Its seq.
        seq: Seq,
        /// Its encoded length.
        len: usize,
    },
    /// A record accepted earlier in this batch, by the slot given to [`Evictor::accepted`].
    Pending {
        /// Its class.
        class: Class,
        /// Its seq.
        seq: Seq,
        /// Its encoded length.
        len: usize,
        /// The caller's slot for it.
        slot: usize,
    },
    /// The record being appended.
    Incoming,
}

/// Per-batch eviction state.
#[derive(Debug, Default)]
pub(crate) struct Evictor {
    cursor: [Option<Seq>; 4],
    removed: HashSet<(Class, Seq)>,
    pending: [VecDeque<(Seq, usize, usize)>; 4],
}

impl Evictor {
    /// A record of this batch was accepted (seq, encoded length, caller's slot).
    pub fn accepted(&mut self, class: Class, seq: Seq, len: usize, slot: usize) {
        self.pending[class.index()].push_back((seq, len, slot));
    }

    /// A stored record was removed by this batch (ack, corruption).
    pub fn mark_removed(&mut self, class: Class, seq: Seq) {
        self.removed.insert((class, seq));
    }

    /// Whether this batch already removed the stored record.
    pub fn is_removed(&self, class: Class, seq: Seq) -> bool {
        self.removed.contains(&(class, seq))
    }

    /// The next victim to make room for a record of class `incoming`.
    pub fn victim(&mut self, stored: &impl Stored, incoming: Class) -> Result<Victim, QueueError> {
        for class in Class::ALL.into_iter().rev().filter(|c| *c >= incoming) {
            let ci = class.index();
            while let Some((seq, len)) = stored.next_after(class, self.cursor[ci])? {
                self.cursor[ci] = Some(seq);
                if self.removed.insert((class, seq)) {
                    return Ok(Victim::Stored { class, seq, len });
                }
            }
            if let Some((seq, len, slot)) = self.pending[ci].pop_front() {
                return Ok(Victim::Pending {
                    class,
                    seq,
                    len,
                    slot,
                });
            }
        }
        Ok(Victim::Incoming)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Map(BTreeMap<(Class, Seq), usize>);

    impl Stored for Map {
        fn next_after(
            &self,
            class: Class,
            after: Option<Seq>,
        ) -> Result<Option<(Seq, usize)>, QueueError> {
            let from = after.map_or(0, |s| s + 1);
            Ok(self
                .0
                .range((class, from)..=(class, Seq::MAX))
                .next()
                .map(|((_, s), l)| (*s, *l)))
        }
    }

    #[test]
    fn lowest_class_oldest_first_then_pending_then_incoming() {
        let m = Map(BTreeMap::from([
            ((Class::Correction, 1), 10),
            ((Class::Telemetry, 2), 10),
            ((Class::Event, 3), 10),
            ((Class::Telemetry, 4), 10),
        ]));
        let mut e = Evictor::default();
        e.accepted(Class::Telemetry, 5, 10, 0);
        e.mark_removed(Class::Telemetry, 4); // acked earlier in the batch
        let mut order = Vec::new();
        loop {
            match e.victim(&m, Class::Event).expect("map") {
                Victim::Incoming => break,
                v => order.push(v),
            }
        }
        assert_eq!(
            order,
            vec![
                Victim::Stored {
                    class: Class::Telemetry,
                    seq: 2,
                    len: 10
                },
                Victim::Pending {
                    class: Class::Telemetry,
                    seq: 5,
                    len: 10,
                    slot: 0
                },
                Victim::Stored {
                    class: Class::Event,
                    seq: 3,
                    len: 10
                },
            ],
            "the correction outranks an incoming event and is never offered"
        );
    }

    #[test]
    fn a_low_priority_record_never_evicts_a_higher_one() {
        let m = Map(BTreeMap::from([((Class::HardExample, 1), 10)]));
        let mut e = Evictor::default();
        assert_eq!(
            e.victim(&m, Class::Telemetry).expect("map"),
            Victim::Incoming
        );
    }
}
