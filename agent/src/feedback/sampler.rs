//! Which eligible answers become hard examples: a sampling rate, then caps per minute, hour and
//! day (fixed windows). Pure: the caller passes the time and the random draw.

use super::config::FeedbackConfig;

/// A fixed window counter.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start_ms: u64,
    count: u32,
}

impl Window {
    fn roll(&mut self, now_ms: u64, len_ms: u64) {
        if now_ms.saturating_sub(self.start_ms) >= len_ms {
            self.start_ms = now_ms - now_ms % len_ms;
            self.count = 0;
        }
    }
}

/// The sampler's state.
#[derive(Debug, Clone)]
pub struct Sampler {
    rate: f64,
    caps: [(u64, u32); 3],
    windows: [Window; 3],
    /// Eligible answers dropped by the rate or a cap, since start.
    pub skipped: u64,
}

impl Sampler {
    /// A sampler for `cfg`.
    pub fn new(cfg: &FeedbackConfig) -> Self {
        Self {
            rate: cfg.sample_rate,
            caps: [
                (60_000, cfg.max_per_minute),
                (3_600_000, cfg.max_per_hour),
                (86_400_000, cfg.max_per_day),
            ],
            windows: [Window::default(); 3],
            skipped: 0,
        }
    }

    /// Whether to keep an eligible answer at `now_ms`, given a uniform draw in `[0, 1)`.
    pub fn take(&mut self, now_ms: u64, draw: f64) -> bool {
        if draw >= self.rate {
            self.skipped += 1;
            return false;
        }
        for (w, (len, cap)) in self.windows.iter_mut().zip(self.caps) {
            w.roll(now_ms, len);
            if cap > 0 && w.count >= cap {
                self.skipped += 1;
                return false;
            }
        }
        for w in &mut self.windows {
            w.count += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_window_and_reset() {
        let cfg = FeedbackConfig {
            max_per_minute: 3,
            max_per_hour: 5,
            max_per_day: 0,
            ..Default::default()
        };
        let mut s = Sampler::new(&cfg);
        let kept = (0..10).filter(|_| s.take(1_000, 0.0)).count();
        assert_eq!(kept, 3, "per-minute cap");
        let kept = (0..10).filter(|_| s.take(61_000, 0.0)).count();
        assert_eq!(kept, 2, "the hour cap bites before the new minute's");
        assert!(!s.take(3_599_000, 0.0));
        assert!(s.take(3_600_000, 0.0), "a new hour");
        assert_eq!(s.skipped, 7 + 8 + 1);
    }

    #[test]
    fn rate_samples() {
        let cfg = FeedbackConfig {
            sample_rate: 0.25,
            max_per_minute: 0,
            max_per_hour: 0,
            max_per_day: 0,
            ..Default::default()
        };
        let mut s = Sampler::new(&cfg);
        let kept = (0..100)
            .filter(|i| s.take(0, f64::from(*i) / 100.0))
            .count();
        assert_eq!(kept, 25);
    }
}
