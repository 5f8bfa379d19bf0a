//! The recent requests a person may correct: input and answers by request id, bounded by count
//! and by input bytes (the oldest go first). The input is a reference-counted buffer shared
//! with the request, not a copy.
//!
//! One correction per request: [`Recent::claim`] marks a request taken under the ring's lock
//! (so two concurrent corrections cannot both pass), [`Recent::settle`] records the queue
//! sequence number and lets the input go (its bytes leave the budget), [`Recent::release`]
//! gives the claim back when the correction could not be stored. A corrected request stays
//! in the ring (its answers, not its input) so a second correction is told which one won.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use tandem_shared::record::Outcome;

/// One remembered request.
#[derive(Debug, Clone)]
pub struct Remembered {
    /// Model.
    pub model: String,
    /// `image` or `text`.
    pub input_kind: &'static str,
    /// The input as the caller sent it.
    pub input: Bytes,
    /// The device's answer.
    pub local: Option<Outcome>,
    /// The hub's answer.
    pub cloud: Option<Outcome>,
    /// Routing reason.
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
}

/// Where a request's correction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrected {
    /// A correction is being stored.
    Pending,
    /// Corrected: the correction's queue sequence number.
    Stored(u64),
}

/// Why a request cannot be corrected now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Unknown, or no longer kept.
    #[error("unknown or no longer remembered")]
    Unknown,
    /// Already corrected (or a correction of it is being stored).
    #[error("already corrected")]
    Taken(Corrected),
}

#[derive(Debug)]
struct Entry {
    r: Remembered,
    corrected: Option<Corrected>,
}

/// The ring.
#[derive(Debug)]
pub struct Recent {
    max: usize,
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<String>,
    by_id: HashMap<String, Entry>,
}

impl Recent {
    /// At most `max` requests and `max_bytes` of input.
    pub fn new(max: usize, max_bytes: usize) -> Self {
        Self {
            max,
            max_bytes,
            bytes: 0,
            order: VecDeque::new(),
            by_id: HashMap::new(),
        }
    }

    /// Remembers a request (an input larger than the whole budget is not kept).
    pub fn insert(&mut self, id: String, r: Remembered) {
        if self.max == 0 || r.input.len() > self.max_bytes {
            return;
        }
        self.bytes += r.input.len();
        let entry = Entry { r, corrected: None };
        if let Some(old) = self.by_id.insert(id.clone(), entry) {
            self.bytes -= old.r.input.len();
        } else {
            self.order.push_back(id);
        }
        while self.order.len() > self.max || self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(e) = self.by_id.remove(&old) {
                self.bytes -= e.r.input.len();
            }
        }
    }

    /// The request `id`, if still kept (the input is empty once it was corrected).
    pub fn get(&self, id: &str) -> Option<&Remembered> {
        self.by_id.get(id).map(|e| &e.r)
    }

    /// Takes the right to correct `id`: its request, once.
    pub fn claim(&mut self, id: &str) -> Result<Remembered, ClaimError> {
        let e = self.by_id.get_mut(id).ok_or(ClaimError::Unknown)?;
        if let Some(c) = e.corrected {
            return Err(ClaimError::Taken(c));
        }
        e.corrected = Some(Corrected::Pending);
        Ok(e.r.clone())
    }

    /// The correction of `id` is stored as `seq`: the input is no longer needed.
    pub fn settle(&mut self, id: &str, seq: u64) {
        if let Some(e) = self.by_id.get_mut(id) {
            e.corrected = Some(Corrected::Stored(seq));
            self.bytes -= e.r.input.len();
            e.r.input = Bytes::new();
        }
    }

    /// The correction of `id` could not be stored: it may be tried again.
    pub fn release(&mut self, id: &str) {
        if let Some(e) = self.by_id.get_mut(id)
            && e.corrected == Some(Corrected::Pending)
        {
            e.corrected = None;
        }
    }

    /// Input bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Requests kept.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: usize) -> Remembered {
        Remembered {
            model: "m".into(),
            input_kind: "image",
            input: Bytes::from(vec![0u8; n]),
            local: None,
            cloud: None,
            reason: "confident".into(),
            time_ms: 0,
        }
    }

    #[test]
    fn bounded_by_count_and_bytes_oldest_first() {
        let mut q = Recent::new(3, 100);
        for i in 0..5 {
            q.insert(format!("r{i}"), r(10));
        }
        assert_eq!(q.len(), 3);
        assert!(q.get("r1").is_none() && q.get("r2").is_some());
        q.insert("big".into(), r(90));
        assert!(q.get("big").is_some());
        assert!(
            q.get("r2").is_none() && q.get("r3").is_none(),
            "bytes evict the oldest"
        );
        q.insert("huge".into(), r(101));
        assert!(q.get("huge").is_none(), "over the whole budget: not kept");
    }

    #[test]
    fn one_correction_per_request() {
        let mut q = Recent::new(3, 100);
        q.insert("a".into(), r(40));
        assert_eq!(q.claim("b").err(), Some(ClaimError::Unknown));
        let got = q.claim("a").expect("first claim");
        assert_eq!(got.input.len(), 40);
        assert_eq!(
            q.claim("a").err(),
            Some(ClaimError::Taken(Corrected::Pending)),
            "a concurrent second correction"
        );
        q.release("a");
        q.claim("a").expect("claimable again after a failed store");
        q.settle("a", 7);
        assert_eq!(
            q.claim("a").err(),
            Some(ClaimError::Taken(Corrected::Stored(7)))
        );
        assert_eq!(q.bytes(), 0, "the corrected input left the budget");
        assert_eq!(q.get("a").map(|r| r.input.len()), Some(0));
        q.release("a");
        assert!(
            q.claim("a").is_err(),
            "release does not undo a stored correction"
        );
        // Settled entries still leave in order, and the byte count stays true.
        for i in 0..3 {
            q.insert(format!("n{i}"), r(30));
        }
        assert!(q.get("a").is_none());
        assert_eq!(q.bytes(), 90);
    }
}
