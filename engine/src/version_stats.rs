//! What one version of a model did while it served: answers, runtime errors, latency and the
//! confidence (top-1 probability) of its answers, kept per generation so a new version can be
//! compared with the one it replaced (the agent's watch window). Relaxed atomics only: a few
//! additions per answer on the worker thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in milliseconds (the last bucket is open).
pub const LATENCY_LE_MS: [f64; 16] = [
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    32.0,
    64.0,
    128.0,
    256.0,
    512.0,
    1024.0,
    2048.0,
    4096.0,
    f64::INFINITY,
];
/// Confidence buckets: `[i/20, (i+1)/20)`, the last one closed at 1.
pub const CONFIDENCE_BUCKETS: usize = 20;

/// Counters of one version.
#[derive(Debug, Default)]
pub struct VersionStats {
    answers: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_LE_MS.len()],
    confidence: [AtomicU64; CONFIDENCE_BUCKETS],
}

impl VersionStats {
    /// An answer: its latency and the top-1 probability of each row.
    pub fn answered(&self, took: Duration, top1: impl Iterator<Item = f32>) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        let ms = took.as_secs_f64() * 1000.0;
        let i = LATENCY_LE_MS
            .iter()
            .position(|le| ms <= *le)
            .unwrap_or(LATENCY_LE_MS.len() - 1);
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        for p in top1 {
            let b =
                ((f64::from(p) * CONFIDENCE_BUCKETS as f64) as usize).min(CONFIDENCE_BUCKETS - 1);
            self.confidence[b].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A failure of the model itself (ONNX Runtime), not of the caller's input.
    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> VersionSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VersionSnapshot {
            answers: load(&self.answers),
            errors: load(&self.errors),
            latency: self.latency.iter().map(load).collect(),
            confidence: self.confidence.iter().map(load).collect(),
        }
    }
}

/// A copy of a version's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionSnapshot {
    /// Requests answered.
    pub answers: u64,
    /// Requests the model failed (runtime errors).
    pub errors: u64,
    /// Answers per latency bucket ([`LATENCY_LE_MS`]).
    pub latency: Vec<u64>,
    /// Rows per confidence bucket ([`CONFIDENCE_BUCKETS`]).
    pub confidence: Vec<u64>,
}

impl VersionSnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Self) -> Self {
        let sub = |a: &[u64], b: &[u64]| {
            a.iter()
                .enumerate()
                .map(|(i, x)| x.saturating_sub(b.get(i).copied().unwrap_or(0)))
                .collect()
        };
        Self {
            answers: self.answers.saturating_sub(earlier.answers),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: sub(&self.latency, &earlier.latency),
            confidence: sub(&self.confidence, &earlier.confidence),
        }
    }

    /// Requests seen (answered or failed).
    pub fn requests(&self) -> u64 {
        self.answers + self.errors
    }

    /// Failed share of the requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.errors as f64 / n as f64,
        }
    }

    /// The latency under which 99% of the answers came, in milliseconds: the upper bound of
    /// its bucket (the last finite bound for the open bucket); `None` without answers.
    pub fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let le = LATENCY_LE_MS[i.min(LATENCY_LE_MS.len() - 1)];
                return Some(if le.is_finite() { le } else { 8192.0 });
            }
        }
        None
    }

    /// Mean top-1 probability (bucket midpoints); `None` without answers.
    pub fn mean_confidence(&self) -> Option<f64> {
        let total: u64 = self.confidence.iter().sum();
        (total > 0).then(|| {
            self.confidence
                .iter()
                .enumerate()
                .map(|(i, n)| (i as f64 + 0.5) / CONFIDENCE_BUCKETS as f64 * *n as f64)
                .sum::<f64>()
                / total as f64
        })
    }

    /// Share of answers whose top-1 probability is below `threshold` (what a cascade on
    /// `max_prob` would offload; the threshold rounds to the nearest bucket edge, 0.05 apart).
    pub fn share_below(&self, threshold: f32) -> Option<f64> {
        let total: u64 = self.confidence.iter().sum();
        let edge = ((f64::from(threshold) * CONFIDENCE_BUCKETS as f64).round() as usize)
            .min(CONFIDENCE_BUCKETS);
        (total > 0).then(|| self.confidence[..edge].iter().sum::<u64>() as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_follow_the_buckets() {
        let s = VersionStats::default();
        for _ in 0..99 {
            s.answered(Duration::from_micros(700), [0.96f32].into_iter());
        }
        s.answered(Duration::from_millis(30), [0.30f32].into_iter());
        s.failed();
        let snap = s.snapshot();
        assert_eq!(snap.requests(), 101);
        assert!((snap.error_rate() - 1.0 / 101.0).abs() < 1e-9);
        assert_eq!(snap.p99_ms(), Some(1.0));
        let mean = snap.mean_confidence().expect("answers");
        assert!(
            (mean - (99.0 * 0.975 + 0.325) / 100.0).abs() < 1e-9,
            "{mean}"
        );
        assert_eq!(snap.share_below(0.7), Some(0.01));
        let later = {
            s.answered(Duration::from_secs(9), [1.0f32].into_iter());
            s.snapshot()
        };
        let d = later.since(&snap);
        assert_eq!((d.answers, d.errors), (1, 0));
        assert_eq!(d.p99_ms(), Some(8192.0));
        assert_eq!(d.confidence[CONFIDENCE_BUCKETS - 1], 1);
    }
}
