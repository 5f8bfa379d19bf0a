//! Which confident answers become shadow samples: a sampling rate, then a cap per minute and
//! a budget of input bytes per hour (fixed windows). Pure: the caller passes the time, the
//! random draw and the input's size.

use super::config::FeedbackConfig;

/// The shadow sampler's state.
#[derive(Debug, Clone)]
pub struct ShadowSampler {
    rate: f64,
    per_minute: u32,
    bytes_per_hour: u64,
    minute: (u64, u32),
    hour: (u64, u64),
    /// Confident answers not sent (rate, cap or byte budget), since start.
    pub skipped: u64,
}

impl ShadowSampler {
    /// A sampler for `cfg` (`shadow_rate`, `shadow_max_per_minute`, `shadow_max_bytes_per_hour`).
    pub fn new(cfg: &FeedbackConfig) -> Self {
        Self {
            rate: cfg.shadow_rate,
            per_minute: cfg.shadow_max_per_minute,
            bytes_per_hour: cfg.shadow_max_bytes_per_hour,
            minute: (0, 0),
            hour: (0, 0),
            skipped: 0,
        }
    }

    /// Whether to send a confident answer of `bytes` input bytes at `now_ms`, given a uniform
    /// draw in `[0, 1)`.
    pub fn take(&mut self, now_ms: u64, draw: f64, bytes: u64) -> bool {
        if now_ms.saturating_sub(self.minute.0) >= 60_000 {
            self.minute = (now_ms - now_ms % 60_000, 0);
        }
        if now_ms.saturating_sub(self.hour.0) >= 3_600_000 {
            self.hour = (now_ms - now_ms % 3_600_000, 0);
        }
        let over_count = self.per_minute > 0 && self.minute.1 >= self.per_minute;
        let over_bytes =
            self.bytes_per_hour > 0 && self.hour.1.saturating_add(bytes) > self.bytes_per_hour;
        if draw >= self.rate || over_count || over_bytes {
            self.skipped += 1;
            return false;
        }
        self.minute.1 += 1;
        self.hour.1 += bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_count_and_bytes_each_limit() {
        let cfg = FeedbackConfig {
            shadow_rate: 0.5,
            shadow_max_per_minute: 3,
            shadow_max_bytes_per_hour: 1000,
            ..Default::default()
        };
        let mut s = ShadowSampler::new(&cfg);
        assert!(!s.take(1_000, 0.5, 10), "draw at the rate: not sent");
        assert_eq!(
            (0..10).filter(|_| s.take(1_000, 0.1, 100)).count(),
            3,
            "3 a minute"
        );
        // The next minute: 3 more would be 600 bytes, but the hour holds 1000 in all.
        assert!(s.take(61_000, 0.1, 300) && s.take(61_000, 0.1, 300));
        assert!(!s.take(61_000, 0.1, 300), "over the hour's bytes");
        assert!(s.take(61_000, 0.1, 100), "a smaller one still fits");
        assert!(s.take(3_600_000, 0.1, 900), "a new hour");
        assert_eq!(s.skipped, 1 + 7 + 1);
        let off = ShadowSampler::new(&FeedbackConfig {
            shadow_rate: 0.0,
            ..Default::default()
        });
        assert!(!off.clone().take(0, 0.0, 1), "rate 0: none");
    }
}
