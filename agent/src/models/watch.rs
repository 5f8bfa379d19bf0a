//! The watch window after a swap: the new version's answers compared with the version it
//! replaced (each generation keeps its own counters, `tandem_engine::version_stats`). Pure:
//! [`judge`] takes two snapshots and the margins; [`Recent`] keeps timed snapshots of the
//! serving version so that the old side of the comparison is what it did in the same length of
//! time before the swap as the window after it (like with like: not its lifetime, which may be
//! days of other traffic, input drift or a quieter hour), the times handed in by the caller.

use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tandem_engine::settings::ModelsConfig;
use tandem_engine::version_stats::VersionSnapshot;

/// Most snapshots [`Recent`] keeps (a bound whatever the sampling period).
pub const MAX_SAMPLES: usize = 256;

/// Timed snapshots of one version's counters, covering at least the last `window`.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    samples: VecDeque<(Instant, VersionSnapshot)>,
}

impl Recent {
    /// Adds the counters as they were at `at`, and forgets what is no longer needed: every
    /// sample older than the newest one that is at least `window` old.
    pub fn push(&mut self, at: Instant, snapshot: VersionSnapshot, window: Duration) {
        self.samples.push_back((at, snapshot));
        while self.samples.len() >= 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= window)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// Snapshots held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The watch window's baseline at `now`, when the version's counters are `current`: what
    /// it did since the newest sample at least `window` old. Its lifetime counters instead when
    /// no sample is that old (it has served about a window or less: they are that window) or
    /// when that recent stretch saw fewer than `min_requests` requests (too few to judge
    /// against: a quiet device).
    pub fn baseline(
        &self,
        now: Instant,
        current: &VersionSnapshot,
        window: Duration,
        min_requests: u64,
    ) -> VersionSnapshot {
        let anchor = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= window);
        match anchor {
            Some((_, then)) => {
                let recent = current.since(then);
                if recent.requests() >= min_requests.max(1) {
                    recent
                } else {
                    current.clone()
                }
            }
            None => current.clone(),
        }
    }
}

/// How much worse the new version may do (the `models.watch_*` keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margins {
    /// Answers needed before judging.
    pub min_requests: u64,
    /// Largest rise of the runtime-error share.
    pub max_error_increase: f64,
    /// Largest p99 ratio (new / old), applied only beyond 2 ms of difference.
    pub max_p99_ratio: f64,
    /// Largest rise of the share of answers below the threshold (offloaded).
    pub max_offload_increase: f64,
    /// Largest drop of the mean top-1 probability.
    pub max_confidence_drop: f64,
}

impl From<&ModelsConfig> for Margins {
    fn from(m: &ModelsConfig) -> Self {
        Self {
            min_requests: m.watch_min_requests,
            max_error_increase: m.watch_max_error_increase,
            max_p99_ratio: m.watch_max_p99_ratio,
            max_offload_increase: m.watch_max_offload_increase,
            max_confidence_drop: m.watch_max_confidence_drop,
        }
    }
}

/// What the comparison says.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough answers yet to judge.
    TooFew {
        /// Requests the new version has seen.
        requests: u64,
    },
    /// No worse than the old version by any margin.
    Keep,
    /// Worse: roll back.
    RollBack {
        /// `errors`, `latency`, `offload` or `confidence`.
        reason: &'static str,
        /// The figures, in words.
        detail: String,
    },
}

/// Compares the new version (`new`, since the swap) with the old one (`old`: what it did while
/// it served). `threshold`: the model's confidence threshold on `max_prob`, for the offload
/// share (`None`: not compared). A figure the old version has no data for is not compared.
pub fn judge(
    old: &VersionSnapshot,
    new: &VersionSnapshot,
    threshold: Option<f32>,
    m: &Margins,
) -> Verdict {
    if new.requests() < m.min_requests.max(1) {
        return Verdict::TooFew {
            requests: new.requests(),
        };
    }
    let roll = |reason, detail| Verdict::RollBack { reason, detail };
    let (eo, en) = (old.error_rate(), new.error_rate());
    if en > eo + m.max_error_increase {
        return roll(
            "errors",
            format!(
                "runtime errors {:.2}% vs {:.2}% before",
                en * 100.0,
                eo * 100.0
            ),
        );
    }
    if let (Some(po), Some(pn)) = (old.p99_ms(), new.p99_ms())
        && pn > po * m.max_p99_ratio
        && pn - po > 2.0
    {
        return roll("latency", format!("p99 {pn:.1} ms vs {po:.1} ms before"));
    }
    if let Some(t) = threshold
        && let (Some(so), Some(sn)) = (old.share_below(t), new.share_below(t))
        && sn > so + m.max_offload_increase
    {
        return roll(
            "offload",
            format!(
                "{:.1}% of answers below the threshold {t} vs {:.1}% before",
                sn * 100.0,
                so * 100.0
            ),
        );
    }
    if let (Some(co), Some(cn)) = (old.mean_confidence(), new.mean_confidence())
        && cn < co - m.max_confidence_drop
    {
        return roll(
            "confidence",
            format!("mean top-1 probability {cn:.3} vs {co:.3} before"),
        );
    }
    Verdict::Keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_engine::version_stats::VersionStats;

    fn stats(n: u64, errors: u64, ms: u64, confidence: f32) -> VersionSnapshot {
        let s = VersionStats::default();
        for _ in 0..n {
            s.answered(Duration::from_millis(ms), [confidence].into_iter());
        }
        for _ in 0..errors {
            s.failed();
        }
        s.snapshot()
    }

    fn margins() -> Margins {
        Margins::from(&ModelsConfig::default())
    }

    /// `n` answers of `ms` at `confidence` added to `s`; its counters after.
    fn more(s: &VersionStats, n: u64, ms: u64, confidence: f32) -> VersionSnapshot {
        for _ in 0..n {
            s.answered(Duration::from_millis(ms), [confidence].into_iter());
        }
        s.snapshot()
    }

    #[test]
    fn the_baseline_is_the_old_versions_last_window_not_its_lifetime() {
        let window = Duration::from_secs(300);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let old = VersionStats::default();
        let mut recent = Recent::default();
        // Sampled every 60 s: a long confident past (easy inputs), then the inputs got harder:
        // the last 300 s before the swap answer at 0.62.
        for minute in 0..65 {
            recent.push(at(minute * 60), old.snapshot(), window);
            more(&old, 1000, 3, if minute < 60 { 0.95 } else { 0.62 });
        }
        let now = at(65 * 60);
        let current = old.snapshot();
        assert!(
            recent.len() <= 7,
            "only the window is kept: {}",
            recent.len()
        );
        let base = recent.baseline(now, &current, window, 100);
        assert_eq!(base.requests(), 5000, "the last 300 s only");
        let lifetime_mean = current.mean_confidence().expect("answers");
        let recent_mean = base.mean_confidence().expect("answers");
        assert!(
            lifetime_mean > 0.85 && recent_mean < 0.65,
            "{lifetime_mean} {recent_mean}"
        );

        // The new version, after the swap, meets the same hard inputs just as well: against
        // the same window before the swap it is kept; against the lifetime counters it would
        // have been rolled back for a drop it did not cause.
        let new = stats(500, 0, 3, 0.62);
        let m = margins();
        assert_eq!(judge(&base, &new, Some(0.7), &m), Verdict::Keep);
        assert!(matches!(
            judge(&current, &new, Some(0.7), &m),
            Verdict::RollBack { .. }
        ));
        // And a version worse than what the old one did lately is still caught.
        let worse = stats(500, 0, 3, 0.45);
        assert!(matches!(
            judge(&base, &worse, Some(0.7), &m),
            Verdict::RollBack { .. }
        ));
    }

    #[test]
    fn a_short_or_quiet_past_falls_back_to_the_lifetime_counters() {
        let window = Duration::from_secs(300);
        let t0 = Instant::now();
        let old = VersionStats::default();
        let mut recent = Recent::default();
        // Served 120 s only: no sample is a window old, the lifetime is the window.
        recent.push(t0, more(&old, 500, 3, 0.9), window);
        recent.push(
            t0 + Duration::from_secs(60),
            more(&old, 500, 3, 0.9),
            window,
        );
        let now = t0 + Duration::from_secs(120);
        let current = more(&old, 10, 3, 0.9);
        assert_eq!(recent.baseline(now, &current, window, 100), current);
        // A window old, but quiet since (10 requests < 100): the lifetime again.
        let later = t0 + Duration::from_secs(400);
        assert_eq!(recent.baseline(later, &current, window, 100), current);
        // Busy since: the recent stretch.
        let busy = more(&old, 300, 3, 0.9);
        assert_eq!(recent.baseline(later, &busy, window, 100).requests(), 310);
        assert!(Recent::default().is_empty());
    }

    #[test]
    fn each_margin_rolls_back_on_its_own() {
        let old = stats(1000, 0, 3, 0.91);
        let m = margins();
        assert_eq!(
            judge(&old, &stats(500, 0, 3, 0.91), Some(0.7), &m),
            Verdict::Keep
        );
        assert_eq!(
            judge(&old, &stats(50, 0, 3, 0.91), Some(0.7), &m),
            Verdict::TooFew { requests: 50 }
        );
        let reason = |v: Verdict| match v {
            Verdict::RollBack { reason, .. } => reason,
            other => panic!("expected a rollback, got {other:?}"),
        };
        assert_eq!(
            reason(judge(&old, &stats(500, 20, 3, 0.91), Some(0.7), &m)),
            "errors"
        );
        assert_eq!(
            reason(judge(&old, &stats(500, 0, 40, 0.91), Some(0.7), &m)),
            "latency"
        );
        assert_eq!(
            reason(judge(&old, &stats(500, 0, 3, 0.66), Some(0.7), &m)),
            "offload"
        );
        assert_eq!(
            reason(judge(&old, &stats(500, 0, 3, 0.76), None, &m)),
            "confidence"
        );
    }

    #[test]
    fn small_latency_changes_do_not_count() {
        // 0.5 ms -> 1 ms doubles the p99 but is within the 2 ms floor.
        let old = stats(1000, 0, 0, 0.9);
        let new = {
            let s = VersionStats::default();
            for _ in 0..500 {
                s.answered(Duration::from_micros(900), [0.9f32].into_iter());
            }
            s.snapshot()
        };
        assert_eq!(judge(&old, &new, Some(0.7), &margins()), Verdict::Keep);
    }
}
