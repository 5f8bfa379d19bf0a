//! The watch window after a swap: the new version's answers compared with the version it
//! replaced (each generation keeps its own counters, `tandem_engine::version_stats`). Pure:
//! [`judge`] takes two snapshots and the margins.

use tandem_engine::settings::ModelsConfig;
use tandem_engine::version_stats::VersionSnapshot;

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
    use std::time::Duration;
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
