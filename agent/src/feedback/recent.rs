//! The recent requests a person may correct: input and answers by request id, bounded by count
//! and by input bytes (the oldest go first). The input is a reference-counted buffer shared
//! with the request, not a copy.

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

/// The ring.
#[derive(Debug)]
pub struct Recent {
    max: usize,
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<String>,
    by_id: HashMap<String, Remembered>,
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
        if let Some(old) = self.by_id.insert(id.clone(), r) {
            self.bytes -= old.input.len();
        } else {
            self.order.push_back(id);
        }
        while self.order.len() > self.max || self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.by_id.remove(&old) {
                self.bytes -= r.input.len();
            }
        }
    }

    /// The request `id`, if still kept.
    pub fn get(&self, id: &str) -> Option<&Remembered> {
        self.by_id.get(id)
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
}
