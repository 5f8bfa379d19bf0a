//! Telemetry (counters cumulative since the agent started) to interval [`Point`]s and version
//! [`Marker`]s, against the [`Baseline`] kept from the device's previous message. A sequence
//! number or uptime that went back means the agent restarted: the counters start again.

use super::{Marker, Point};
use std::collections::BTreeMap;
use tandem_shared::mqtt::Telemetry;

/// The cumulative counters of a device's previous message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    seq: u64,
    uptime_s: u64,
    routes: [u64; 4],
    le_s: Vec<f64>,
    counts: Vec<u64>,
    count: u64,
    versions: BTreeMap<String, String>,
}

impl Baseline {
    /// Bytes it takes, roughly (for the store's total bound).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.le_s.len() * 8
            + self.counts.len() * 8
            + self
                .versions
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
    }
}

/// Route totals: local, cloud, failed, degraded.
pub fn routes(tm: &Telemetry) -> [u64; 4] {
    let mut r = [0; 4];
    for c in &tm.routes {
        match c.route.as_str() {
            "local" => r[0] += c.count,
            "cloud" => r[1] += c.count,
            _ => r[2] += c.count,
        }
        if c.degraded {
            r[3] += c.count;
        }
    }
    r
}

/// The models' latency histograms summed (those with the bounds of the first model that has
/// any: a model that never ran reports an empty histogram).
fn latency(tm: &Telemetry) -> (Vec<f64>, Vec<u64>, u64) {
    let mut it = tm
        .models
        .values()
        .map(|m| &m.latency)
        .filter(|h| !h.le_s.is_empty());
    let Some(first) = it.next() else {
        return (Vec::new(), Vec::new(), 0);
    };
    let (le, mut counts, mut count) = (first.le_s.clone(), first.counts.clone(), first.count);
    let n = counts.len();
    for h in it.filter(|h| h.le_s == le && h.counts.len() == n) {
        for (c, n) in counts.iter_mut().zip(&h.counts) {
            *c += n;
        }
        count += h.count;
    }
    (le, counts, count)
}

/// The `q` quantile of a cumulative histogram (`counts[i]` observations `<= le_s[i]`, `total`
/// in all), linear within a bucket as Prometheus' `histogram_quantile`; the last bound when it
/// falls beyond; `None` without observations.
pub fn quantile(q: f64, le_s: &[f64], counts: &[u64], total: u64) -> Option<f64> {
    if total == 0 || le_s.is_empty() {
        return None;
    }
    let rank = q * total as f64;
    let (mut lo, mut below) = (0.0, 0u64);
    for (&le, &c) in le_s.iter().zip(counts) {
        if c as f64 >= rank {
            let inside = c.saturating_sub(below);
            if inside == 0 {
                return Some(le);
            }
            return Some(lo + (le - lo) * (rank - below as f64) / inside as f64);
        }
        (lo, below) = (le, c);
    }
    le_s.last().copied()
}

/// The point and markers `tm` makes after `base` (`None`: first heard), and the new baseline.
pub fn derive(
    base: Option<&Baseline>,
    tm: &Telemetry,
    at_ms: u64,
) -> (Point, Vec<Marker>, Baseline) {
    let (le_s, counts, count) = latency(tm);
    let now = Baseline {
        seq: tm.seq,
        uptime_s: tm.uptime_s,
        routes: routes(tm),
        le_s,
        counts,
        count,
        versions: tm
            .models
            .iter()
            .map(|(k, m)| (k.clone(), m.version.clone()))
            .collect(),
    };
    let reset = base.is_none_or(|b| tm.seq < b.seq || tm.uptime_s < b.uptime_s);
    let zero = Baseline::default();
    let b = if reset { &zero } else { base.unwrap_or(&zero) };
    let d = |i: usize| now.routes[i].saturating_sub(b.routes[i]);
    let (local, cloud, failed, degraded) = (d(0), d(1), d(2), d(3));
    let answers = local + cloud + failed;
    let (hist, total) = if !reset && b.le_s == now.le_s && b.counts.len() == now.counts.len() {
        let h: Vec<u64> = now
            .counts
            .iter()
            .zip(&b.counts)
            .map(|(n, o)| n.saturating_sub(*o))
            .collect();
        (h, now.count.saturating_sub(b.count))
    } else {
        (now.counts.clone(), now.count)
    };
    let point = Point {
        at_ms,
        ts_ms: tm.ts_ms,
        seq: tm.seq,
        reset,
        local,
        cloud,
        failed,
        degraded,
        offload_share: (answers > 0).then(|| cloud as f64 / answers as f64),
        latency_p50_s: quantile(0.5, &now.le_s, &hist, total),
        latency_p99_s: quantile(0.99, &now.le_s, &hist, total),
        model_queue_depth: tm.models.values().map(|m| m.queue_depth).sum(),
        queue_depth: tm.queue.map(|q| q.depth),
        queue_bytes: tm.queue.map(|q| q.bytes),
    };
    let markers = now
        .versions
        .iter()
        .filter_map(|(model, to)| {
            let from = base.and_then(|b| b.versions.get(model));
            (from != Some(to)).then(|| Marker {
                at_ms,
                model: model.clone(),
                from: from.cloned(),
                to: to.clone(),
            })
        })
        .collect();
    (point, markers, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let le = [0.001, 0.002, 0.005];
        // 100 observations: 50 under 1 ms, 40 in (1, 2] ms, 10 in (2, 5] ms.
        assert_eq!(quantile(0.5, &le, &[50, 90, 100], 100), Some(0.001));
        let p99 = quantile(0.99, &le, &[50, 90, 100], 100).expect("p99");
        assert!((p99 - 0.0047).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &le, &[0, 0, 0], 0), None);
        // Beyond the last bound: the last bound.
        assert_eq!(quantile(0.99, &le, &[1, 1, 1], 10), Some(0.005));
    }

    #[test]
    fn a_model_that_never_ran_does_not_hide_the_others_latency() {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/tests/fixtures/mqtt/telemetry.json");
        let mut tm = Telemetry::decode(&std::fs::read(p).expect("fixture")).expect("decodes");
        let mut idle = tm.models.values().next().expect("a model").clone();
        idle.latency = tandem_shared::mqtt::Histogram {
            le_s: Vec::new(),
            counts: Vec::new(),
            count: 0,
            sum_s: 0.0,
        };
        // Sorted first, as a detection model that never ran is in a real agent's telemetry.
        tm.models.insert("aaa-idle".into(), idle);
        let (point, _, _) = derive(None, &tm, 1);
        assert!(point.latency_p50_s.is_some(), "{point:?}");
    }
}
