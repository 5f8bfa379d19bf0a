//! How often download progress is published: the gate that decides which progress reports
//! move the manager's change counter (and so republish status and telemetry at once). A slow
//! download then shows on the hub as it goes, without a publish per chunk.

use std::time::{Duration, Instant};

/// Progress moves the change counter at most this often, besides a download's first and
/// last report.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Remembers when progress was last published.
#[derive(Debug, Default)]
pub struct ProgressGate {
    last: Option<Instant>,
}

impl ProgressGate {
    /// Whether a progress report of `done` of `total` bytes, made at `now`, is published: the
    /// first one, the last one (`done == total`), and otherwise once `every` has passed.
    pub fn due(&mut self, now: Instant, done: u64, total: u64, every: Duration) -> bool {
        let due = match self.last {
            None => true,
            Some(_) if done >= total => true,
            Some(last) => now.saturating_duration_since(last) >= every,
        };
        if due {
            self.last = (done < total).then_some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_and_last_reports_pass_and_the_rest_once_a_second() {
        let mut g = ProgressGate::default();
        let t0 = Instant::now();
        assert!(g.due(t0, 0, 100, EVERY), "first");
        assert!(!g.due(t0 + Duration::from_millis(10), 10, 100, EVERY));
        assert!(!g.due(t0 + Duration::from_millis(999), 20, 100, EVERY));
        assert!(g.due(t0 + Duration::from_millis(1000), 30, 100, EVERY));
        assert!(!g.due(t0 + Duration::from_millis(1500), 40, 100, EVERY));
        assert!(
            g.due(t0 + Duration::from_millis(1600), 100, 100, EVERY),
            "last"
        );
    }

    #[test]
    fn a_finished_download_leaves_the_gate_open_for_the_next() {
        let mut g = ProgressGate::default();
        let t0 = Instant::now();
        assert!(g.due(t0, 0, 10, EVERY));
        assert!(g.due(t0, 10, 10, EVERY));
        assert!(g.due(t0, 0, 50, EVERY), "the next download's first report");
    }
}
