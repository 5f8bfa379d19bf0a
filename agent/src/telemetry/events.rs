//! Per-inference events (`tandem/{device}/events`), sampled at `mqtt.events_sample_rate`.
//! The sampler is exact and deterministic (request n is sampled when `floor(n × rate)`
//! steps up): a rate of 0.1 sends every tenth answer, 1 every answer, 0 none.

use crate::hybrid::Answer;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tandem_shared::mqtt::{Event, VERSION};

/// Picks a fraction of requests, evenly spread.
#[derive(Debug)]
pub struct Sampler {
    rate: f64,
    seen: AtomicU64,
}

impl Sampler {
    /// A sampler at `rate` (clamped to 0..=1).
    pub fn new(rate: f64) -> Self {
        Self {
            rate: if rate.is_finite() {
                rate.clamp(0.0, 1.0)
            } else {
                0.0
            },
            seen: AtomicU64::new(0),
        }
    }

    /// Whether this request is sampled.
    pub fn take(&self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let n = self.seen.fetch_add(1, Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }
}

/// Where sampled events go: a non-blocking publish (the MQTT link's outgoing queue).
pub struct EventSink {
    sampler: Sampler,
    publish: Box<dyn Fn(Vec<u8>) + Send + Sync>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("sampler", &self.sampler)
            .finish_non_exhaustive()
    }
}

impl EventSink {
    /// A sink sampling at `rate` and handing each event's payload to `publish` (which must not
    /// block: it runs on the request path).
    pub fn new(rate: f64, publish: impl Fn(Vec<u8>) + Send + Sync + 'static) -> Self {
        Self {
            sampler: Sampler::new(rate),
            publish: Box::new(publish),
        }
    }

    /// Offers one answered request.
    pub fn offer(&self, a: &Answer, took: Duration) {
        if !self.sampler.take() {
            return;
        }
        let Some(p) = a.prediction() else {
            return;
        };
        let version = match (&a.cloud, &a.local) {
            (Some(c), _) => c.version.clone(),
            (None, Some(l)) => l.version.clone(),
            (None, None) => String::new(),
        };
        let event = Event {
            v: VERSION,
            ts_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            model: a.model.clone(),
            version,
            label: p.label.clone(),
            score: p.score,
            route: if a.cloud.is_some() { "cloud" } else { "local" }.into(),
            reason: super::counters::reason_name(Some(a.reason)),
            degraded: a.degraded,
            latency_ms: took.as_secs_f64() * 1000.0,
        };
        (self.publish)(event.encode());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_exactly_the_rate() {
        for (rate, want) in [(0.0, 0), (0.1, 100), (0.25, 250), (1.0, 1000), (7.0, 1000)] {
            let s = Sampler::new(rate);
            let got = (0..1000).filter(|_| s.take()).count();
            assert_eq!(got, want, "rate {rate}");
        }
    }
}
