//! The promotion gate as a pure rule over evaluation reports: a candidate passes only when it
//! beats the serving version on the target set (held-out feedback) by more than
//! `train.min_gain`, and is not worse by more than `train.tolerance` on the original test set
//! nor on any slice of the target set that has at least `train.min_slice_items` items. Every
//! check is kept, passed or not, with the figures it compared.

use super::TrainConfig;
use crate::eval::report::Report;
use serde::{Deserialize, Serialize};

/// One comparison the gate made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `target`, `original`, or `slice <kind>=<value>`.
    pub what: String,
    /// Items compared.
    pub n: u64,
    /// The serving version's accuracy.
    pub serving: f64,
    /// The candidate's.
    pub candidate: f64,
    /// Whether the check passed.
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reason: String,
}

/// Judges a candidate from its reports and the serving version's on the same sets. Returns
/// the checks; the candidate passes when every one passed.
pub fn judge(
    cfg: &TrainConfig,
    target: (&Report, &Report),
    original: (&Report, &Report),
) -> Vec<Check> {
    let mut checks = Vec::new();
    let (ts, tc) = target;
    let n = ts.overall.n.min(tc.overall.n);
    let (s, c) = (ts.overall.accuracy, tc.overall.accuracy);
    let reason = if n < cfg.min_target_items {
        format!(
            "only {n} target items, fewer than train.min_target_items = {}",
            cfg.min_target_items
        )
    } else if c <= s + cfg.min_gain {
        format!(
            "not better on the target set: accuracy {c:.4} vs serving {s:.4} (train.min_gain = {})",
            cfg.min_gain
        )
    } else {
        String::new()
    };
    checks.push(Check {
        what: "target".into(),
        n,
        serving: s,
        candidate: c,
        passed: reason.is_empty(),
        reason,
    });
    let (os, oc) = original;
    let (s, c) = (os.overall.accuracy, oc.overall.accuracy);
    let reason = if c < s - cfg.tolerance {
        format!(
            "worse on the original set: accuracy {c:.4} vs serving {s:.4} (train.tolerance = {})",
            cfg.tolerance
        )
    } else {
        String::new()
    };
    checks.push(Check {
        what: "original".into(),
        n: os.overall.n.min(oc.overall.n),
        serving: s,
        candidate: c,
        passed: reason.is_empty(),
        reason,
    });
    for ss in &ts.slices {
        let Some(cs) = tc
            .slices
            .iter()
            .find(|x| x.kind == ss.kind && x.value == ss.value)
        else {
            continue;
        };
        let n = ss.metrics.n.min(cs.metrics.n);
        if n < cfg.min_slice_items {
            continue;
        }
        let (s, c) = (ss.metrics.accuracy, cs.metrics.accuracy);
        let what = format!("slice {}={}", ss.kind, ss.value);
        let reason = if c < s - cfg.tolerance {
            format!(
                "worse on {what}: accuracy {c:.4} vs serving {s:.4} (train.tolerance = {})",
                cfg.tolerance
            )
        } else {
            String::new()
        };
        checks.push(Check {
            what,
            n,
            serving: s,
            candidate: c,
            passed: reason.is_empty(),
            reason,
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::{Judged, compute};
    use crate::eval::report::{SetInfo, SliceMetrics};

    fn report(right: usize, n: usize, slices: &[(&str, usize, usize)]) -> Report {
        let labels = vec!["a".to_string(), "b".to_string()];
        let js = |right: usize, n: usize| -> Vec<Judged> {
            (0..n)
                .map(|i| Judged {
                    truth: 0,
                    predicted: usize::from(i >= right),
                    confidence: 0.9,
                })
                .collect()
        };
        Report {
            id: "r".into(),
            model: "m".into(),
            version: "1".into(),
            variant: "edge".into(),
            created_ms: 0,
            set: SetInfo {
                name: "s".into(),
                items: n as u64,
                label_sources: Default::default(),
            },
            overall: compute(&labels, &js(right, n)),
            slices: slices
                .iter()
                .map(|(v, r, n)| SliceMetrics {
                    kind: "device".into(),
                    value: (*v).into(),
                    metrics: compute(&labels, &js(*r, *n)),
                })
                .collect(),
            shifts: Vec::new(),
        }
    }

    #[test]
    fn passes_only_a_candidate_better_on_target_and_not_worse_elsewhere() {
        let cfg = TrainConfig::default();
        let pass = |c: &[Check]| c.iter().all(|c| c.passed);
        let orig = report(90, 100, &[]);
        // Better on target, same on the original and on each slice: passes.
        let c = judge(
            &cfg,
            (
                &report(50, 100, &[("d1", 25, 50)]),
                &report(80, 100, &[("d1", 40, 50)]),
            ),
            (&orig, &orig),
        );
        assert!(pass(&c), "{c:?}");
        // Equal on target: refused with the reason.
        let c = judge(
            &cfg,
            (&report(50, 100, &[]), &report(50, 100, &[])),
            (&orig, &orig),
        );
        assert!(!pass(&c) && c[0].reason.contains("not better"), "{c:?}");
        // Better on target, 2 points worse on the original (tolerance 1): refused.
        let c = judge(
            &cfg,
            (&report(50, 100, &[]), &report(80, 100, &[])),
            (&orig, &report(88, 100, &[])),
        );
        assert!(!pass(&c) && c[1].reason.contains("original"), "{c:?}");
        // Better overall but worse on a big slice: refused; on a small slice: not gated.
        let t = (
            &report(50, 100, &[("d1", 40, 50), ("d2", 9, 10)]),
            &report(70, 100, &[("d1", 30, 50), ("d2", 1, 10)]),
        );
        let c = judge(&cfg, t, (&orig, &orig));
        assert!(!pass(&c), "{c:?}");
        assert_eq!(
            c.iter()
                .filter(|c| !c.passed)
                .map(|c| c.what.as_str())
                .collect::<Vec<_>>(),
            ["slice device=d1"]
        );
        // Too few target items.
        let c = judge(
            &cfg,
            (&report(1, 5, &[]), &report(5, 5, &[])),
            (&orig, &orig),
        );
        assert!(
            !pass(&c) && c[0].reason.contains("min_target_items"),
            "{c:?}"
        );
    }
}
