//! One model's generations: an append-only list whose last entry is the one serving.
//!
//! A hot swap appends; readers take the last entry with three atomic loads and no lock, so the
//! request path stays as cheap as a map lookup. Entries are never removed while the list
//! lives, so a reference handed out (`Engine::model`) stays valid for the engine's life; a
//! replaced handle keeps only its description (manifest, labels: kilobytes) once its workers
//! and sessions are gone.
//!
//! Storage: chunk `k` holds `2^k` slots, allocated on first use, so index `i` sits in chunk
//! `floor(log2(i + 1))` and nothing ever moves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

const CHUNKS: usize = 32;

/// The list is full (2^32 - 1 generations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many generations of one model in this process")]
pub struct Full;

/// An append-only list readable without locks.
pub struct Generations<T> {
    chunks: [OnceLock<Box<[OnceLock<T>]>>; CHUNKS],
    len: AtomicUsize,
    append: Mutex<()>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Generations<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generations")
            .field("len", &self.len())
            .field("current", &self.current())
            .finish()
    }
}

fn locate(i: usize) -> (usize, usize) {
    let n = i + 1;
    let k = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (k, n - (1 << k))
}

impl<T> Generations<T> {
    /// A list holding `first`.
    pub fn new(first: T) -> Self {
        let g = Self {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            append: Mutex::new(()),
        };
        // The first append cannot be full.
        let _ = g.push(first);
        g
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Never: a list starts with one entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len() {
            return None;
        }
        let (k, off) = locate(i);
        self.chunks.get(k)?.get()?.get(off)?.get()
    }

    /// The last entry: the one serving.
    pub fn current(&self) -> Option<&T> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    /// Appends `value`, which becomes current; returns its index.
    pub fn push(&self, value: T) -> Result<usize, Full> {
        let _g = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let i = self.len.load(Ordering::Acquire);
        let (k, off) = locate(i);
        let chunk = self
            .chunks
            .get(k)
            .ok_or(Full)?
            .get_or_init(|| (0..1usize << k).map(|_| OnceLock::new()).collect());
        chunk.get(off).ok_or(Full)?.set(value).map_err(|_| Full)?;
        // Published only once the slot is filled: a reader that sees the new length finds it.
        self.len.store(i + 1, Ordering::Release);
        Ok(i)
    }

    /// Every entry, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::{Generations, locate};
    use std::sync::Arc;

    #[test]
    fn indexes_land_in_growing_chunks() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1), (1, 0));
        assert_eq!(locate(2), (1, 1));
        assert_eq!(locate(3), (2, 0));
        assert_eq!(locate(6), (2, 3));
        assert_eq!(locate(7), (3, 0));
    }

    #[test]
    fn the_last_push_is_current_and_older_ones_stay() {
        let g = Generations::new("1.0.0".to_string());
        let first: &String = g.current().expect("current");
        for v in 1..100 {
            g.push(format!("1.0.{v}")).expect("room");
        }
        assert_eq!(g.current().map(String::as_str), Some("1.0.99"));
        assert_eq!(first, "1.0.0");
        assert_eq!(g.iter().count(), 100);
        assert_eq!(g.get(57).map(String::as_str), Some("1.0.57"));
        assert!(g.get(100).is_none());
    }

    #[test]
    fn readers_never_see_a_missing_current_while_pushing() {
        let g = Arc::new(Generations::new(0usize));
        let reader = {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..200_000 {
                    let now = *g.current().expect("always one");
                    assert!(now >= last);
                    last = now;
                }
            })
        };
        for v in 1..=2000 {
            g.push(v).expect("room");
        }
        reader.join().expect("reader");
    }
}
