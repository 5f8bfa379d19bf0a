//! [`LossLog`]: evictions and refusals not yet logged, reported at ERROR at most once per
//! 10 s with the counts since the last line.

use super::record::Class;
use std::time::{Duration, Instant};

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
    pub fn report(&mut self, now: bool) {
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
