//! Latency samples to p50 / p99 / throughput.

use std::time::Duration;

/// One measured cell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Calls completed.
    pub n: usize,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// Calls per second over the window.
    pub rps: f64,
    /// Failed calls.
    pub errors: usize,
}

/// The median of `v` (sorted in place): the mean of the middle two for an even count, NaN
/// for none.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Summarises latencies (any order) collected over `window`.
pub fn summarise(mut lat: Vec<Duration>, window: Duration, errors: usize) -> Stats {
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i].as_secs_f64() * 1e6
    };
    let mean_us = if lat.is_empty() {
        f64::NAN
    } else {
        lat.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e6 / lat.len() as f64
    };
    Stats {
        n: lat.len(),
        mean_us,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rps: lat.len() as f64 / window.as_secs_f64(),
        errors,
    }
}
