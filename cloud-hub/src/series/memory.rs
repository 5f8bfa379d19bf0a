//! [`MemorySeries`]: the embedded [`SeriesStore`], in memory. Per device, at most
//! `points_per_device` points, `markers_per_device` markers and `events_per_device` events, the
//! oldest evicted first; in all, at most `max_bytes` as accounted here (a point is
//! `size_of::<Point>()`, a marker or an event its size and strings, a device its name, baseline and a fixed 256 bytes): over it, the oldest
//! point of the device with the most points goes, and a device with no points left is
//! dropped whole (least recently heard first). Every eviction is counted.

use super::derive::{Baseline, derive};
use super::{Heard, Marker, Point, SeriesAnswer, SeriesConfig, SeriesStats, SeriesStore};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tandem_shared::mqtt::{Event, Telemetry};

/// Bytes a point takes.
pub const POINT_BYTES: usize = std::mem::size_of::<Point>();

fn marker_bytes(m: &Marker) -> usize {
    std::mem::size_of::<Marker>()
        + m.model.len()
        + m.to.len()
        + m.from.as_ref().map_or(0, String::len)
}

fn event_bytes(h: &Heard) -> usize {
    let e = &h.event;
    std::mem::size_of::<Heard>()
        + e.model.len()
        + e.version.len()
        + e.label.len()
        + e.route.len()
        + e.reason.len()
}

#[derive(Debug, Default)]
struct Device {
    points: VecDeque<Point>,
    markers: VecDeque<Marker>,
    events: VecDeque<Heard>,
    base: Option<Baseline>,
    evicted_points: u64,
    heard_ms: u64,
}

impl Device {
    fn bytes(&self, name: &str) -> usize {
        256 + name.len()
            + self.points.len() * POINT_BYTES
            + self.markers.iter().map(marker_bytes).sum::<usize>()
            + self.events.iter().map(event_bytes).sum::<usize>()
            + self.base.as_ref().map_or(0, Baseline::bytes)
    }
}

#[derive(Debug, Default)]
struct Inner {
    devices: HashMap<String, Device>,
    bytes: usize,
    stats: SeriesStats,
}

/// In-memory per-device series, bounded as the module says.
#[derive(Debug)]
pub struct MemorySeries {
    cfg: SeriesConfig,
    inner: Mutex<Inner>,
}

impl MemorySeries {
    /// An empty store with these bounds.
    pub fn new(cfg: SeriesConfig) -> Self {
        Self {
            cfg,
            inner: Mutex::new(Inner::default()),
        }
    }
}

impl Inner {
    /// Evicts until under `max` bytes (never the device `keep`'s last point).
    fn shrink(&mut self, max: usize, keep: &str) {
        while self.bytes > max {
            let fullest = self
                .devices
                .iter()
                .filter(|(n, d)| d.points.len() > usize::from(n.as_str() == keep))
                .max_by_key(|(_, d)| d.points.len())
                .map(|(n, _)| n.clone());
            if let Some(n) = fullest {
                let d = self.devices.get_mut(&n).expect("the name was just found");
                d.points.pop_front();
                d.evicted_points += 1;
                self.bytes -= POINT_BYTES;
                self.stats.evicted_points += 1;
                continue;
            }
            let idle = self
                .devices
                .iter()
                .filter(|(n, d)| n.as_str() != keep && d.points.is_empty())
                .min_by_key(|(_, d)| d.heard_ms)
                .map(|(n, _)| n.clone());
            let Some(n) = idle else { return };
            if let Some(d) = self.devices.remove(&n) {
                self.bytes = self.bytes.saturating_sub(d.bytes(&n));
                self.stats.evicted_devices += 1;
            }
        }
    }
}

impl SeriesStore for MemorySeries {
    fn record(&self, device: &str, tm: &Telemetry, at_ms: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        let d = inner.devices.entry(device.to_string()).or_default();
        let before = d.bytes(device);
        let (point, markers, base) = derive(d.base.as_ref(), tm, at_ms);
        d.base = Some(base);
        d.heard_ms = at_ms;
        d.points.push_back(point);
        while d.points.len() > self.cfg.points_per_device {
            d.points.pop_front();
            d.evicted_points += 1;
            inner.stats.evicted_points += 1;
        }
        d.markers.extend(markers);
        while d.markers.len() > self.cfg.markers_per_device {
            d.markers.pop_front();
            inner.stats.evicted_markers += 1;
        }
        let after = d.bytes(device);
        inner.bytes = (inner.bytes + after).saturating_sub(before);
        inner.shrink(self.cfg.max_bytes, device);
    }

    fn record_event(&self, device: &str, event: &Event, at_ms: u64) {
        if self.cfg.events_per_device == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        let d = inner.devices.entry(device.to_string()).or_default();
        let before = d.bytes(device);
        d.heard_ms = d.heard_ms.max(at_ms);
        d.events.push_back(Heard {
            at_ms,
            event: event.clone(),
        });
        while d.events.len() > self.cfg.events_per_device {
            d.events.pop_front();
        }
        let after = d.bytes(device);
        inner.bytes = (inner.bytes + after).saturating_sub(before);
        inner.shrink(self.cfg.max_bytes, device);
    }

    fn read(&self, device: &str, since_ms: u64, until_ms: u64) -> Option<SeriesAnswer> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let d = g.devices.get(device)?;
        let within = |at: u64| (since_ms..=until_ms).contains(&at);
        Some(SeriesAnswer {
            device: device.to_string(),
            points: d
                .points
                .iter()
                .filter(|p| within(p.at_ms))
                .copied()
                .collect(),
            markers: d
                .markers
                .iter()
                .filter(|m| within(m.at_ms))
                .cloned()
                .collect(),
            events: d
                .events
                .iter()
                .filter(|e| within(e.at_ms))
                .cloned()
                .collect(),
            evicted_points: d.evicted_points,
            oldest_ms: d.points.front().map(|p| p.at_ms),
        })
    }

    fn stats(&self) -> SeriesStats {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        SeriesStats {
            devices: g.devices.len() as u64,
            points: g.devices.values().map(|d| d.points.len() as u64).sum(),
            bytes: g.bytes as u64,
            ..g.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture() -> Telemetry {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/tests/fixtures/mqtt/telemetry.json");
        Telemetry::decode(&std::fs::read(p).expect("fixture")).expect("decodes")
    }

    /// The fixture `n` messages later: 10 more local and 5 more cloud answers each time.
    fn later(n: u64, version: &str) -> Telemetry {
        let mut t = fixture();
        t.seq += n;
        t.uptime_s += 10 * n;
        t.routes[0].count += 10 * n;
        t.routes[1].count += 5 * n;
        if let Some(m) = t.models.get_mut("vision-fashion") {
            m.version = version.to_string();
        }
        t
    }

    #[test]
    fn points_are_intervals_and_versions_are_marked() {
        let s = MemorySeries::new(SeriesConfig::default());
        s.record("cam-01", &later(0, "1.0.0"), 1_000);
        s.record("cam-01", &later(1, "1.0.0"), 2_000);
        s.record("cam-01", &later(2, "1.1.0"), 3_000);
        let a = s.read("cam-01", 0, u64::MAX).expect("series");
        assert_eq!(a.points.len(), 3);
        assert!(a.points[0].reset && !a.points[1].reset);
        // The first point: the whole run so far (1010 + 20 local, 170 cloud).
        assert_eq!(
            (a.points[0].local, a.points[0].cloud, a.points[0].degraded),
            (1030, 170, 20)
        );
        assert_eq!((a.points[1].local, a.points[1].cloud), (10, 5));
        assert_eq!(a.points[1].offload_share, Some(5.0 / 15.0));
        assert_eq!(a.points[0].queue_bytes, Some(40960));
        assert!(
            a.points[0]
                .latency_p50_s
                .is_some_and(|p| p > 0.0005 && p <= 0.001)
        );
        // Latency histogram unchanged in the interval: no latency.
        assert_eq!(a.points[1].latency_p99_s, None);
        let m: Vec<_> = a
            .markers
            .iter()
            .map(|m| (m.at_ms, m.from.as_deref(), m.to.as_str()))
            .collect();
        assert_eq!(m, [(1_000, None, "1.0.0"), (3_000, Some("1.0.0"), "1.1.0")]);
        // A restart: counters start again.
        s.record("cam-01", &later(0, "1.1.0"), 4_000);
        let a = s.read("cam-01", 3_500, u64::MAX).expect("series");
        assert!(
            a.points[0].reset && a.points[0].local == 1030,
            "{:?}",
            a.points
        );
        assert!(s.read("cam-02", 0, u64::MAX).is_none());
    }

    #[test]
    fn per_device_bound_evicts_oldest_first_and_counts() {
        let cfg = SeriesConfig {
            points_per_device: 5,
            markers_per_device: 2,
            events_per_device: 32,
            ..SeriesConfig::default()
        };
        let s = MemorySeries::new(cfg);
        for i in 0..12u64 {
            s.record("cam-01", &later(i, &format!("1.0.{i}")), 1_000 * (i + 1));
        }
        let a = s.read("cam-01", 0, u64::MAX).expect("series");
        let at: Vec<u64> = a.points.iter().map(|p| p.at_ms).collect();
        assert_eq!(at, [8_000, 9_000, 10_000, 11_000, 12_000]);
        assert_eq!((a.evicted_points, a.oldest_ms), (7, Some(8_000)));
        assert_eq!(
            a.markers.iter().map(|m| m.to.as_str()).collect::<Vec<_>>(),
            ["1.0.10", "1.0.11"]
        );
        let st = s.stats();
        assert_eq!(
            (st.points, st.evicted_points, st.evicted_markers),
            (5, 7, 10)
        );
    }

    fn event(label: &str) -> Event {
        Event {
            v: 1,
            ts_ms: 1,
            model: "vision-fashion".into(),
            version: "1.0.0".into(),
            label: label.into(),
            score: 0.9,
            route: "local".into(),
            reason: "confident".into(),
            degraded: false,
            latency_ms: 1.5,
        }
    }

    #[test]
    fn the_last_events_are_kept_oldest_evicted_first() {
        let s = MemorySeries::new(SeriesConfig {
            events_per_device: 3,
            ..SeriesConfig::default()
        });
        for i in 0..5u64 {
            s.record_event("cam-01", &event(&format!("e{i}")), 1_000 * (i + 1));
        }
        let a = s.read("cam-01", 0, u64::MAX).expect("an event-only device");
        let labels: Vec<&str> = a.events.iter().map(|e| e.event.label.as_str()).collect();
        assert_eq!(labels, ["e2", "e3", "e4"]);
        assert!(a.points.is_empty());
        let a = s.read("cam-01", 4_000, u64::MAX).expect("series");
        assert_eq!(a.events.len(), 2, "the window applies");
        assert!(s.stats().bytes > 0);
        let off = MemorySeries::new(SeriesConfig {
            events_per_device: 0,
            ..SeriesConfig::default()
        });
        off.record_event("cam-01", &event("x"), 1);
        assert!(off.read("cam-01", 0, u64::MAX).is_none(), "none kept");
    }

    #[test]
    fn total_bound_holds_under_many_devices() {
        let cfg = SeriesConfig {
            max_bytes: 1024 * 1024,
            ..SeriesConfig::default()
        };
        let s = MemorySeries::new(cfg);
        for i in 0..20_000u64 {
            s.record(&format!("cam-{}", i % 500), &later(i / 500, "1.0.0"), i);
            assert!(s.stats().bytes <= 1024 * 1024, "{:?}", s.stats());
        }
        let st = s.stats();
        assert!(st.evicted_points > 0, "{st:?}");
        // The fullest device loses first: every device keeps points, within one of each other.
        let lens: Vec<usize> = (0..500)
            .filter_map(|i| s.read(&format!("cam-{i}"), 0, u64::MAX))
            .map(|a| a.points.len())
            .collect();
        assert_eq!(lens.len(), 500);
        let (lo, hi) = (lens.iter().min().copied(), lens.iter().max().copied());
        assert!(
            lo.is_some_and(|l| l >= 1) && hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
            "{lo:?} {hi:?}"
        );
    }
}
