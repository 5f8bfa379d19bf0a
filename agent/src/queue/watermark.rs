//! The high-water mark: a small file beside sled's (`<queue dir>/watermark`) holding the
//! epoch, the next seq and the live record count as of the last flushed batch, written and
//! fsynced after every flush and before any producer hears of it. At open it is compared with
//! the state sled recovered: sled behind the mark means sled lost flushed batches (damage to
//! its files), so acknowledged records are gone and seqs after sled's were already handed out.
//!
//! # Layout
//! Two 64-byte slots, written alternately, so a torn write leaves the other one valid. A slot
//! (little-endian): `version u8` (1), `generation u64`, `epoch u64`, `next_seq u64`,
//! `live u64`, `crc32` over the bytes before it; the valid slot with the higher generation is
//! the mark.
//!
//! # Invariants
//! - The mark is never ahead of what sled flushed (it is written after the flush); it may lag
//!   by one batch after a crash, which is not a loss.
//! - The file is created 0600.

use super::meta::State;
use super::payload::FILE_MODE;
use super::record::{Seq, le_u32, le_u64};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const VERSION: u8 = 1;
const SLOT: usize = 64;
/// Where the CRC starts: after the version and four u64s.
const CRC_AT: usize = 1 + 8 * 4;

/// The mark's file could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} the queue's watermark {}: {source}", .path.display())]
pub(crate) struct WatermarkError {
    /// What was being done.
    pub op: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// What the mark says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The queue's epoch.
    pub epoch: u64,
    /// Every seq below this was handed out in `epoch`.
    pub next_seq: Seq,
    /// Records accepted and not yet acknowledged, evicted or dropped.
    pub live: u64,
}

impl Mark {
    /// The mark of a state.
    pub fn of(s: &State) -> Self {
        Self {
            epoch: s.epoch,
            next_seq: s.next_seq,
            live: s.depth(),
        }
    }
}

/// What was found in the file at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// No file (a new queue, or one made before marks existed).
    Missing,
    /// A file with no valid slot.
    Unreadable,
    /// The mark.
    Mark(Mark),
}

/// The open mark file.
#[derive(Debug)]
pub(crate) struct Watermark {
    file: File,
    path: PathBuf,
    generation: u64,
}

fn encode(generation: u64, m: &Mark) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[0] = VERSION;
    for (i, n) in [generation, m.epoch, m.next_seq, m.live].iter().enumerate() {
        b[1 + 8 * i..9 + 8 * i].copy_from_slice(&n.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[..CRC_AT]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(u64, Mark)> {
    if b.len() < SLOT || b[0] != VERSION {
        return None;
    }
    if crc32fast::hash(&b[..CRC_AT]) != le_u32(&b[CRC_AT..]) {
        return None;
    }
    let n = |i: usize| le_u64(&b[1 + 8 * i..]);
    Some((
        n(0),
        Mark {
            epoch: n(1),
            next_seq: n(2),
            live: n(3),
        },
    ))
}

/// Reads the mark in `dir` without opening it for writing (a directory being moved aside).
pub(crate) fn peek(dir: &Path) -> Found {
    match std::fs::read(dir.join("watermark")) {
        Ok(b) => best(&b).map_or(Found::Unreadable, |(_, m)| Found::Mark(m)),
        Err(_) => Found::Missing,
    }
}

fn best(b: &[u8]) -> Option<(u64, Mark)> {
    let a = b.get(..SLOT).and_then(decode);
    let z = b.get(SLOT..2 * SLOT).and_then(decode);
    match (a, z) {
        (Some(x), Some(y)) => Some(if y.0 > x.0 { y } else { x }),
        (x, y) => x.or(y),
    }
}

impl Watermark {
    /// Opens (or creates, 0600) the mark file in `dir` and reads what it holds.
    pub fn open(dir: &Path) -> Result<(Self, Found), WatermarkError> {
        let path = dir.join("watermark");
        let err = |op, source| WatermarkError {
            op,
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| err("open", e))?;
        let len = file.metadata().map_err(|e| err("read", e))?.len();
        let mut b = vec![0u8; usize::try_from(len.min(2 * SLOT as u64)).unwrap_or(0)];
        file.read_exact_at(&mut b, 0).map_err(|e| err("read", e))?;
        let (generation, found) = match best(&b) {
            Some((g, m)) => (g, Found::Mark(m)),
            None if len == 0 => (0, Found::Missing),
            None => (0, Found::Unreadable),
        };
        Ok((
            Self {
                file,
                path,
                generation,
            },
            found,
        ))
    }

    /// Writes `m` into the older slot and fsyncs it.
    pub fn write(&mut self, m: &Mark) -> Result<(), WatermarkError> {
        let generation = self.generation + 1;
        let slot = (generation % 2) * SLOT as u64;
        self.file
            .write_all_at(&encode(generation, m), slot)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| WatermarkError {
                op: "write",
                path: self.path.clone(),
                source,
            })?;
        self.generation = generation;
        Ok(())
    }
}

/// What opening concludes from sled's state and the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// sled holds everything the mark knows of.
    Consistent,
    /// sled lost flushed batches: at least `lost` acknowledged records are gone and seqs up to
    /// `next_seq` were already handed out. `lost` is exact unless acknowledgements were lost
    /// with them (records back from the dead then hide as many lost ones).
    RolledBack { lost: u64, next_seq: Seq },
    /// The mark cannot be read: whether anything was lost cannot be told.
    Unknown,
}

/// Compares sled's recovered state with the mark.
pub(crate) fn judge(state: &State, found: Found) -> Verdict {
    match found {
        Found::Missing => Verdict::Consistent,
        Found::Unreadable => Verdict::Unknown,
        // sled at or past the mark (the mark lags by one batch after a crash, possibly one
        // that started a new epoch): nothing flushed is missing.
        Found::Mark(m) if state.next_seq >= m.next_seq => Verdict::Consistent,
        Found::Mark(m) => Verdict::RolledBack {
            lost: if state.epoch == m.epoch {
                m.live.saturating_sub(state.depth())
            } else {
                m.live
            },
            next_seq: m.next_seq,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::record::Class;

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_one_is_ignored() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut w, found) = Watermark::open(tmp.path()).expect("open");
        assert_eq!(found, Found::Missing);
        let m = |n| Mark {
            epoch: 9,
            next_seq: n,
            live: n - 1,
        };
        for n in 1..=5 {
            w.write(&m(n)).expect("write");
        }
        drop(w);
        assert_eq!(peek(tmp.path()), Found::Mark(m(5)));
        // Tear the newest slot (generation 5 is in slot 1): the previous mark is read.
        let path = tmp.path().join("watermark");
        let mut b = std::fs::read(&path).expect("read");
        b[SLOT + 3] ^= 0xff;
        std::fs::write(&path, &b).expect("tear");
        let (_, found) = Watermark::open(tmp.path()).expect("reopen");
        assert_eq!(found, Found::Mark(m(4)));
        std::fs::write(&path, [0xAAu8; 128]).expect("garbage");
        assert_eq!(peek(tmp.path()), Found::Unreadable);
    }

    #[test]
    fn sled_behind_the_mark_is_a_rollback_with_the_missing_records_counted() {
        let mut s = State::new(7);
        s.next_seq = 4;
        for _ in 0..3 {
            s.add(Class::Correction, 100);
        }
        let mark = |next_seq, live, epoch| {
            Found::Mark(Mark {
                epoch,
                next_seq,
                live,
            })
        };
        assert_eq!(
            judge(&s, mark(31, 30, 7)),
            Verdict::RolledBack {
                lost: 27,
                next_seq: 31
            }
        );
        assert_eq!(judge(&s, mark(4, 3, 7)), Verdict::Consistent);
        assert_eq!(judge(&s, mark(3, 2, 7)), Verdict::Consistent);
        assert_eq!(
            judge(&s, mark(9, 8, 5)),
            Verdict::RolledBack {
                lost: 8,
                next_seq: 9
            }
        );
        assert_eq!(judge(&s, Found::Missing), Verdict::Consistent);
        assert_eq!(judge(&s, Found::Unreadable), Verdict::Unknown);
    }
}
