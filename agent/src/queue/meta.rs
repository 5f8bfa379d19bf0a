//! The queue's persisted state: epoch, next sequence number and counters, stored under
//! [`STATE_KEY`](super::record::STATE_KEY) in the same sled tree as the records and rewritten
//! in every write batch, so it changes atomically with the records it counts. Pure code.
//!
//! # Layout (version 2, little-endian)
//! `version u8`, `epoch u64`, `next_seq u64`, four times (per class, highest priority first)
//! `depth u64, bytes u64, evicted u64, rejected u64`, `crc_failures u64`, `lost u64`, then a
//! `crc32` over everything before it: 165 bytes. Version 1 (157 bytes, no `lost`) is read too.
//!
//! # Invariants
//! - `next_seq` is greater than every sequence number ever given out in this epoch (it is
//!   written in the same atomic batch as the records that used the numbers before it).
//! - `epoch` is never 0. It changes only when opening finds that sled lost flushed batches
//!   (`watermark.rs`): seqs after sled's were already handed out, so a new epoch starts.

use super::contract::ClassStats;
use super::record::{Class, Seq, le_u32, le_u64};

const VERSION: u8 = 2;
const LEN: usize = 1 + 8 + 8 + 4 * 32 + 8 + 8 + 4;
const LEN_V1: usize = LEN - 8;

/// Why the stored state cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not the expected length.
    #[error("queue state has {0} bytes, expected {LEN}")]
    Length(usize),
    /// An unknown format version.
    #[error("queue state version {0} is not supported")]
    Version(u8),
    /// The CRC does not match.
    #[error("queue state crc mismatch")]
    Crc,
}

/// What the queue persists besides its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Random id made when the queue was created; never 0.
    pub epoch: u64,
    /// The next sequence number to give out.
    pub next_seq: Seq,
    /// Per class, indexed by [`Class::index`].
    pub classes: [ClassStats; 4],
    /// Records dropped because they failed their integrity check.
    pub crc_failures: u64,
    /// Acknowledged records found missing at open (sled lost flushed batches).
    pub lost: u64,
}

impl State {
    /// The state of a new, empty queue. Sequence numbers start at 1.
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            next_seq: 1,
            classes: [ClassStats::default(); 4],
            crc_failures: 0,
            lost: 0,
        }
    }

    /// Bytes held by every record.
    pub fn bytes(&self) -> u64 {
        self.classes.iter().map(|c| c.bytes).sum()
    }

    /// Records held.
    pub fn depth(&self) -> u64 {
        self.classes.iter().map(|c| c.depth).sum()
    }

    /// Counts a record of `len` encoded bytes in.
    pub fn add(&mut self, class: Class, len: usize) {
        let c = &mut self.classes[class.index()];
        c.depth += 1;
        c.bytes += len as u64;
    }

    /// Counts a record of `len` encoded bytes out (saturating: counters never wrap).
    pub fn remove(&mut self, class: Class, len: usize) {
        let c = &mut self.classes[class.index()];
        c.depth = c.depth.saturating_sub(1);
        c.bytes = c.bytes.saturating_sub(len as u64);
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(LEN);
        v.push(VERSION);
        v.extend_from_slice(&self.epoch.to_le_bytes());
        v.extend_from_slice(&self.next_seq.to_le_bytes());
        for c in &self.classes {
            for n in [c.depth, c.bytes, c.evicted, c.rejected] {
                v.extend_from_slice(&n.to_le_bytes());
            }
        }
        v.extend_from_slice(&self.crc_failures.to_le_bytes());
        v.extend_from_slice(&self.lost.to_le_bytes());
        let crc = crc32fast::hash(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    /// Reads stored bytes back.
    pub fn decode(b: &[u8]) -> Result<Self, StateError> {
        let len = b.len();
        if len != LEN && len != LEN_V1 {
            return Err(StateError::Length(len));
        }
        if crc32fast::hash(&b[..len - 4]) != le_u32(&b[len - 4..]) {
            return Err(StateError::Crc);
        }
        match (b[0], len) {
            (VERSION, LEN) | (1, LEN_V1) => {}
            (v, _) => return Err(StateError::Version(v)),
        }
        let n = |i: usize| le_u64(&b[1 + 8 * i..]);
        let mut classes = [ClassStats::default(); 4];
        for (ci, c) in classes.iter_mut().enumerate() {
            let base = 2 + 4 * ci;
            *c = ClassStats {
                depth: n(base),
                bytes: n(base + 1),
                evicted: n(base + 2),
                rejected: n(base + 3),
            };
        }
        Ok(Self {
            epoch: n(0),
            next_seq: n(1),
            classes,
            crc_failures: n(18),
            lost: if len == LEN { n(19) } else { 0 },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut s = State::new(0xdead_beef);
        s.add(Class::Event, 100);
        s.add(Class::Telemetry, 30);
        s.classes[Class::Telemetry.index()].evicted = 5;
        s.classes[Class::Correction.index()].rejected = 2;
        s.crc_failures = 9;
        s.next_seq = 77;
        s.lost = 3;
        let b = s.encode();
        assert_eq!(b.len(), LEN);
        assert_eq!(State::decode(&b), Ok(s));
        assert_eq!((s.bytes(), s.depth()), (130, 2));
        let mut bad = b.clone();
        bad[20] ^= 4;
        assert_eq!(State::decode(&bad), Err(StateError::Crc));
        assert_eq!(State::decode(&b[1..]), Err(StateError::Length(LEN - 1)));
        // A version-1 state (no `lost`) still reads.
        let mut v1 = b[..LEN - 12].to_vec();
        v1[0] = 1;
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(State::decode(&v1), Ok(State { lost: 0, ..s }));
        s.remove(Class::Event, 500);
        assert_eq!(s.classes[Class::Event.index()].bytes, 0);
    }
}
