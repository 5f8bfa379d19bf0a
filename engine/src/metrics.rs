//! One set of counters and latency histograms, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

#[derive(Debug, Default)]
struct Inner {
    inferences: BTreeMap<String, BTreeMap<&'static str, u64>>,
    latency: BTreeMap<String, Histogram>,
    rejected: BTreeMap<String, u64>,
    http: BTreeMap<String, BTreeMap<u16, u64>>,
}

/// The entry for `key`, allocating the key only the first time it is seen (the hot path
/// finds it without a `String`).
fn slot<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// Process-wide counters. Cheap to update (one uncontended lock).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// A gauge sampled at render time: `(name, help, labels, value)`.
pub type Gauge = (&'static str, &'static str, Vec<(&'static str, String)>, f64);

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// One finished inference (`outcome` is `ok` or an error kind).
    pub fn inference(&self, model: &str, outcome: &'static str, took: Duration) {
        self.with(|i| {
            *slot(&mut i.inferences, model).entry(outcome).or_default() += 1;
            if outcome == "ok" {
                slot(&mut i.latency, model).observe(took.as_secs_f64());
            }
        });
    }

    /// A request refused because the model's queue was full.
    pub fn rejected(&self, model: &str) {
        self.with(|i| *slot(&mut i.rejected, model) += 1);
    }

    /// One HTTP response.
    pub fn http(&self, route: &str, status: u16) {
        self.with(|i| *slot(&mut i.http, route).entry(status).or_default() += 1);
    }

    /// Total inferences of a model with an outcome (for tests and telemetry).
    pub fn inference_count(&self, model: &str, outcome: &'static str) -> u64 {
        self.with(|i| {
            i.inferences
                .get(model)
                .and_then(|m| m.get(outcome))
                .copied()
                .unwrap_or(0)
        })
    }

    /// Renders every metric, plus the given gauges, in the Prometheus text format.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        self.with(|i| {
            out.push_str("# HELP tandem_inferences_total Inferences finished, by model and outcome.\n# TYPE tandem_inferences_total counter\n");
            for (m, outcomes) in &i.inferences {
                for (o, n) in outcomes {
                    let _ = writeln!(out, "tandem_inferences_total{{model=\"{m}\",outcome=\"{o}\"}} {n}");
                }
            }
            out.push_str("# HELP tandem_inference_duration_seconds Time from submission to answer of successful inferences.\n# TYPE tandem_inference_duration_seconds histogram\n");
            for (m, h) in &i.latency {
                let mut cum = 0;
                for (b, c) in BUCKETS.iter().zip(h.counts) {
                    cum += c;
                    let _ = writeln!(out, "tandem_inference_duration_seconds_bucket{{model=\"{m}\",le=\"{b}\"}} {cum}");
                }
                let _ = writeln!(out, "tandem_inference_duration_seconds_bucket{{model=\"{m}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "tandem_inference_duration_seconds_sum{{model=\"{m}\"}} {}", h.sum);
                let _ = writeln!(out, "tandem_inference_duration_seconds_count{{model=\"{m}\"}} {}", h.count);
            }
            out.push_str("# HELP tandem_queue_rejected_total Requests refused because the model queue was full.\n# TYPE tandem_queue_rejected_total counter\n");
            for (m, n) in &i.rejected {
                let _ = writeln!(out, "tandem_queue_rejected_total{{model=\"{m}\"}} {n}");
            }
            out.push_str("# HELP tandem_http_responses_total HTTP responses of the local API, by route and status.\n# TYPE tandem_http_responses_total counter\n");
            for (r, statuses) in &i.http {
                for (s, n) in statuses {
                    let _ = writeln!(out, "tandem_http_responses_total{{route=\"{r}\",status=\"{s}\"}} {n}");
                }
            }
        });
        let mut last = "";
        for (name, help, labels, value) in gauges {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                last = name;
            }
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let _ = writeln!(out, "{name}{{{}}} {value}", l.join(","));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.inference("a", "ok", Duration::from_micros(700));
        m.inference("a", "ok", Duration::from_millis(3));
        m.rejected("a");
        let text = m.render(&[(
            "tandem_queue_depth",
            "Waiting requests.",
            vec![("model", "a".into())],
            2.0,
        )]);
        assert!(text.contains("tandem_inferences_total{model=\"a\",outcome=\"ok\"} 2"));
        assert!(text.contains("le=\"0.001\"} 1"));
        assert!(text.contains("le=\"0.005\"} 2"));
        assert!(text.contains("tandem_queue_rejected_total{model=\"a\"} 1"));
        assert!(text.contains("tandem_queue_depth{model=\"a\"} 2"));
    }
}
