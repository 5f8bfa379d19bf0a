//! One set of counters and histograms (latency, batch size), rendered in the Prometheus text
//! format.

use crate::exposition::write_sample;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Batch-size histogram bucket bounds, in requests per run.
const BATCH_BUCKETS: [f64; 6] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

#[derive(Debug, Clone)]
struct Histogram<const N: usize> {
    counts: [u64; N],
    count: u64,
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            counts: [0; N],
            count: 0,
            sum: 0.0,
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, bounds: &[f64; N], v: f64) {
        if let Some(i) = bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    /// Appends the series of one model: cumulative buckets, `+Inf`, sum and count.
    fn render(&self, out: &mut String, name: &str, model: &str, bounds: &[f64; N]) {
        let mut cum = 0;
        let bucket = format!("{name}_bucket");
        for (b, c) in bounds.iter().zip(self.counts) {
            cum += c;
            write_sample(
                out,
                &bucket,
                &[("model", model), ("le", &b.to_string())],
                cum,
            );
        }
        write_sample(
            out,
            &bucket,
            &[("model", model), ("le", "+Inf")],
            self.count,
        );
        write_sample(out, &format!("{name}_sum"), &[("model", model)], self.sum);
        write_sample(
            out,
            &format!("{name}_count"),
            &[("model", model)],
            self.count,
        );
    }
}

#[derive(Debug, Default)]
struct Inner {
    inferences: BTreeMap<String, BTreeMap<&'static str, u64>>,
    latency: BTreeMap<String, Histogram<{ BUCKETS.len() }>>,
    batch_size: BTreeMap<String, Histogram<{ BATCH_BUCKETS.len() }>>,
    rejected: BTreeMap<String, u64>,
    http: BTreeMap<String, BTreeMap<u16, u64>>,
    http_refused: BTreeMap<&'static str, u64>,
    http_connections: i64,
    http_inflight_bytes: i64,
}

/// The entry for `key`, allocating the key only the first time it is seen (the hot path
/// finds it without a `String`).
fn slot<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// One model's counters, copied out of [`Metrics`] (MQTT telemetry reports the same numbers
/// as `/metrics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSnapshot {
    /// Inferences finished, by outcome (`ok` or an error kind).
    pub inferences: BTreeMap<&'static str, u64>,
    /// Requests refused because the queue was full.
    pub rejected: u64,
    /// Latency bucket upper bounds, seconds.
    pub latency_le: Vec<f64>,
    /// Cumulative counts, one per bound.
    pub latency_counts: Vec<u64>,
    /// Successful inferences observed.
    pub latency_count: u64,
    /// Their total latency, seconds.
    pub latency_sum: f64,
}

/// Process-wide counters. Cheap to update (one uncontended lock).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// A value sampled at render time: `(name, help, labels, value)`; typed `counter` when the
/// name ends in `_total`, `gauge` otherwise.
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
                slot(&mut i.latency, model).observe(&BUCKETS, took.as_secs_f64());
            }
        });
    }

    /// One run of a model's session over `requests` requests (1 without batching).
    pub fn batch(&self, model: &str, requests: usize) {
        self.with(|i| slot(&mut i.batch_size, model).observe(&BATCH_BUCKETS, requests as f64));
    }

    /// A request refused because the model's queue was full.
    pub fn rejected(&self, model: &str) {
        self.with(|i| *slot(&mut i.rejected, model) += 1);
    }

    /// One HTTP response.
    pub fn http(&self, route: &str, status: u16) {
        self.with(|i| *slot(&mut i.http, route).entry(status).or_default() += 1);
    }

    /// A connection or request an HTTP listener refused or closed, by reason (connection cap,
    /// header or idle timeout, in-flight body bytes).
    pub fn http_refused(&self, reason: &'static str) {
        self.with(|i| *i.http_refused.entry(reason).or_default() += 1);
    }

    /// Refusals of one reason so far.
    pub fn http_refused_count(&self, reason: &'static str) -> u64 {
        self.with(|i| i.http_refused.get(reason).copied().unwrap_or(0))
    }

    /// Request body bytes taken (`+n`) or given back (`-n`) by the in-flight bound.
    pub fn http_inflight_bytes(&self, delta: i64) {
        self.with(|i| i.http_inflight_bytes += delta);
    }

    /// An HTTP connection opened (`+1`) or closed (`-1`).
    pub fn http_connections(&self, delta: i64) {
        self.with(|i| i.http_connections += delta);
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

    /// Every model's counters and latency histogram, by model name.
    pub fn snapshot(&self) -> BTreeMap<String, ModelSnapshot> {
        self.with(|i| {
            let mut out: BTreeMap<String, ModelSnapshot> = BTreeMap::new();
            for (m, outcomes) in &i.inferences {
                out.entry(m.clone()).or_default().inferences = outcomes.clone();
            }
            for (m, n) in &i.rejected {
                out.entry(m.clone()).or_default().rejected = *n;
            }
            for (m, h) in &i.latency {
                let s = out.entry(m.clone()).or_default();
                s.latency_le = BUCKETS.to_vec();
                s.latency_counts = h
                    .counts
                    .iter()
                    .scan(0, |cum, c| {
                        *cum += c;
                        Some(*cum)
                    })
                    .collect();
                s.latency_count = h.count;
                s.latency_sum = h.sum;
            }
            out
        })
    }

    /// Renders every metric, plus the given gauges, in the Prometheus text format.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        self.with(|i| {
            out.push_str("# HELP tandem_inferences_total Inferences finished, by model and outcome.\n# TYPE tandem_inferences_total counter\n");
            for (m, outcomes) in &i.inferences {
                for (o, n) in outcomes {
                    write_sample(&mut out, "tandem_inferences_total", &[("model", m), ("outcome", o)], n);
                }
            }
            out.push_str("# HELP tandem_inference_duration_seconds Time from submission to answer of successful inferences.\n# TYPE tandem_inference_duration_seconds histogram\n");
            for (m, h) in &i.latency {
                h.render(&mut out, "tandem_inference_duration_seconds", m, &BUCKETS);
            }
            out.push_str("# HELP tandem_batch_size Requests per run of a model's session (dynamic batching).\n# TYPE tandem_batch_size histogram\n");
            for (m, h) in &i.batch_size {
                h.render(&mut out, "tandem_batch_size", m, &BATCH_BUCKETS);
            }
            out.push_str("# HELP tandem_queue_rejected_total Requests refused because the model queue was full.\n# TYPE tandem_queue_rejected_total counter\n");
            for (m, n) in &i.rejected {
                write_sample(&mut out, "tandem_queue_rejected_total", &[("model", m)], n);
            }
            out.push_str("# HELP tandem_http_responses_total HTTP responses of the API, by route and status.\n# TYPE tandem_http_responses_total counter\n");
            for (r, statuses) in &i.http {
                for (s, n) in statuses {
                    write_sample(&mut out, "tandem_http_responses_total", &[("route", r), ("status", &s.to_string())], n);
                }
            }
            out.push_str("# HELP tandem_http_refused_total HTTP connections and requests refused or closed by the listener, by reason.\n# TYPE tandem_http_refused_total counter\n");
            for (r, n) in &i.http_refused {
                write_sample(&mut out, "tandem_http_refused_total", &[("reason", r)], n);
            }
            let _ = writeln!(
                out,
                "# HELP tandem_http_connections HTTP connections open.\n# TYPE tandem_http_connections gauge\ntandem_http_connections {}",
                i.http_connections
            );
            let _ = writeln!(
                out,
                "# HELP tandem_http_inflight_body_bytes Declared bytes of the request bodies in flight.\n# TYPE tandem_http_inflight_body_bytes gauge\ntandem_http_inflight_body_bytes {}",
                i.http_inflight_bytes
            );
        });
        let mut last = "";
        for (name, help, labels, value) in gauges {
            if *name != last {
                // A `_total` family counts up (per model version, so a swap starts a new series).
                let kind = if name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                last = name;
            }
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            write_sample(&mut out, name, &pairs, value);
        }
        out
    }
}

/// Appends one metric family in the Prometheus text format: its HELP and TYPE lines, then one
/// sample per `(labels, value)` (`labels` is `""` or `{k="v",...}`).
pub fn write_family(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// [`write_family`] for a family with a single unlabelled sample.
pub fn write_one(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    write_family(out, name, kind, help, &[(String::new(), value)]);
}

/// The per-model gauges both daemons show: queue depth, and the loaded model's version,
/// variant and execution provider.
pub fn model_gauges(engine: &crate::Engine) -> Vec<Gauge> {
    let depths = engine.models().map(|m| {
        (
            "tandem_queue_depth",
            "Requests waiting in a model's queue.",
            vec![("model", m.name().to_string())],
            m.queue_depth() as f64,
        )
    });
    let info = engine.models().map(|m| {
        (
            "tandem_model_info",
            "Loaded model, version, variant and execution provider in use.",
            vec![
                ("model", m.name().to_string()),
                ("version", m.files.manifest.version.clone()),
                ("variant", m.files.role.as_str().to_string()),
                ("ep", m.ep_now().to_string()),
            ],
            1.0,
        )
    });
    let measured = engine.models().flat_map(|m| {
        m.ep_measured.iter().flat_map(move |e| {
            let labels = || {
                vec![
                    ("model", m.name().to_string()),
                    ("ep", e.ep.to_string()),
                ]
            };
            let diff = e.max_abs_diff.map(|d| {
                (
                    "tandem_ep_reference_max_abs_diff",
                    "Largest |output - reference output| of a provider on a model's reference cases (the accuracy gate).",
                    labels(),
                    d,
                )
            });
            let speed = e.median_us.filter(|_| e.accurate).map(|t| {
                (
                    "tandem_ep_reference_median_seconds",
                    "Median run time of one reference case on a provider (what `auto` chooses by).",
                    labels(),
                    t / 1e6,
                )
            });
            diff.into_iter().chain(speed)
        })
    });
    let failovers = engine.models().map(|m| {
        (
            "tandem_ep_failovers_total",
            "Times the serving version's sessions moved to the next execution provider after run-time failures.",
            vec![
                ("model", m.name().to_string()),
                ("version", m.files.manifest.version.clone()),
            ],
            m.ep_failovers() as f64,
        )
    });
    depths
        .chain(info)
        .chain(measured)
        .chain(failovers)
        .collect()
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
        m.batch("a", 1);
        m.batch("a", 3);
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
        assert!(text.contains("tandem_batch_size_bucket{model=\"a\",le=\"2\"} 1"));
        assert!(text.contains("tandem_batch_size_bucket{model=\"a\",le=\"4\"} 2"));
        assert!(text.contains("tandem_batch_size_sum{model=\"a\"} 4"));
        let snap = m.snapshot();
        let a = &snap["a"];
        assert_eq!(a.inferences["ok"], 2);
        assert_eq!(a.rejected, 1);
        assert_eq!(
            (a.latency_count, a.latency_counts[1], a.latency_counts[3]),
            (2, 1, 2)
        );
        assert_eq!(a.latency_counts.len(), a.latency_le.len());
    }
}
