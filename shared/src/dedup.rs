//! Hub-side deduplication of store-and-forward deliveries (flow 3): [`DeliveryKey`], the
//! identity of a queued record, and [`SeenSeqs`], the sequence numbers of one device's queue
//! epoch already stored, kept as merged ranges.
//!
//! The agent delivers at least once: a record whose acknowledgement was lost (connection
//! dropped, agent killed) is sent again, so the hub stores a `Deliver` only if its key is new
//! and acknowledges it either way. The key is `(device, epoch, seq)`: the device from its TLS
//! certificate, `epoch` a random id the agent's queue made when it was created, `seq` strictly
//! increasing within the epoch. A device whose queue is recreated (reinstall, corrupt database
//! moved aside) restarts its seqs under a new epoch, so its new records are not mistaken for
//! duplicates of old ones.
//!
//! # Invariants
//! - [`SeenSeqs::insert`] answers `true` exactly once per seq.
//! - Ranges are sorted, disjoint and never adjacent: memory grows with the number of gaps,
//!   not of records (the agent delivers by priority, not in seq order, so gaps open and close
//!   as its backlog drains).
//! - [`DeliveryKey::to_bytes`] keeps one `(device, epoch)`'s keys contiguous and in seq order,
//!   so a store keyed by it can also answer "everything from this epoch".

use std::collections::BTreeMap;

/// The identity of one queued record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    /// The device, as its certificate names it (never from a payload field).
    pub device: String,
    /// The agent queue's epoch (`Deliver.epoch`).
    pub epoch: u64,
    /// The record's sequence number (`Deliver.seq`).
    pub seq: u64,
}

impl DeliveryKey {
    /// A byte key for an ordered store: `u16` big-endian device length, the device's UTF-8
    /// bytes (at most `u16::MAX`; longer names are cut there), `epoch` and `seq` big-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let name = self.device.as_bytes();
        let name = &name[..name.len().min(usize::from(u16::MAX))];
        let mut v = Vec::with_capacity(2 + name.len() + 16);
        v.extend_from_slice(&(name.len() as u16).to_be_bytes());
        v.extend_from_slice(name);
        v.extend_from_slice(&self.epoch.to_be_bytes());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v
    }
}

/// The seqs of one `(device, epoch)` already stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenSeqs {
    /// start → end, both inclusive.
    ranges: BTreeMap<u64, u64>,
}

impl SeenSeqs {
    /// Nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `seq`; `true` if it is new (store the record), `false` for a duplicate (only
    /// acknowledge it again).
    pub fn insert(&mut self, seq: u64) -> bool {
        let before = self.ranges.range(..=seq).next_back().map(|(s, e)| (*s, *e));
        if let Some((_, end)) = before
            && end >= seq
        {
            return false;
        }
        let after = seq
            .checked_add(1)
            .and_then(|n| self.ranges.get(&n).map(|e| (n, *e)));
        let joins_before = before.filter(|(_, end)| end.checked_add(1) == Some(seq));
        match (joins_before, after) {
            (Some((start, _)), Some((next, end))) => {
                self.ranges.remove(&next);
                self.ranges.insert(start, end);
            }
            (Some((start, _)), None) => {
                self.ranges.insert(start, seq);
            }
            (None, Some((next, end))) => {
                self.ranges.remove(&next);
                self.ranges.insert(seq, end);
            }
            (None, None) => {
                self.ranges.insert(seq, seq);
            }
        }
        true
    }

    /// Whether `seq` was seen.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, end)| *end >= seq)
    }

    /// The seen seqs as inclusive ranges, ascending (to persist them).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(s, e)| (*s, *e))
    }

    /// Rebuilds from persisted ranges (any order, overlaps allowed).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut sorted: Vec<_> = ranges.into_iter().filter(|(s, e)| s <= e).collect();
        sorted.sort_unstable();
        let mut out = BTreeMap::new();
        let mut cur: Option<(u64, u64)> = None;
        for (s, e) in sorted {
            cur = match cur {
                Some((cs, ce)) if ce.checked_add(1).is_none_or(|n| s <= n) => Some((cs, ce.max(e))),
                Some((cs, ce)) => {
                    out.insert(cs, ce);
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        if let Some((s, e)) = cur {
            out.insert(s, e);
        }
        Self { ranges: out }
    }

    /// Number of ranges held (its memory, in entries).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn out_of_order_deliveries_merge_into_one_range() {
        let mut s = SeenSeqs::new();
        for seq in [5, 3, 4, 1, 2, 9, 7, 8, 6] {
            assert!(s.insert(seq));
        }
        assert!(!s.insert(4), "a redelivery is a duplicate");
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(1, 9)]);
        assert!(s.insert(u64::MAX) && s.insert(0) && !s.insert(u64::MAX));
    }

    #[test]
    fn keys_of_one_epoch_are_contiguous_and_in_seq_order() {
        let k = |d: &str, e, s| {
            DeliveryKey {
                device: d.into(),
                epoch: e,
                seq: s,
            }
            .to_bytes()
        };
        assert!(k("cam-1", 7, 2) < k("cam-1", 7, 256));
        assert!(k("cam-1", 7, u64::MAX) < k("cam-1", 8, 0));
        assert_ne!(
            k("cam-1", 7, 1),
            k("cam-1", 8, 1),
            "a new epoch is a new key"
        );
    }

    proptest! {
        #[test]
        fn matches_a_set(seqs in prop::collection::vec(0u64..64, 0..200)) {
            let mut s = SeenSeqs::new();
            let mut model = BTreeSet::new();
            for q in seqs {
                prop_assert_eq!(s.insert(q), model.insert(q));
                prop_assert!(s.contains(q));
            }
            for q in 0..70 {
                prop_assert_eq!(s.contains(q), model.contains(&q));
            }
            let rs: Vec<_> = s.ranges().collect();
            for w in rs.windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "disjoint and not adjacent: {:?}", rs);
            }
            prop_assert_eq!(SeenSeqs::from_ranges(rs.iter().rev().copied()), s);
        }
    }
}
