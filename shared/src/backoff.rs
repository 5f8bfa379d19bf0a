//! Retry waits with full jitter: after the n-th failure in a row, wait a uniform random time in
//! [0, min(cap, base · 2^(n-1))]; a success resets the count. Every retry loop of both daemons
//! (the agent's QUIC link, MQTT link, queue delivery and model downloads; the hub's fleet MQTT
//! client and broker restarts) waits with this type.
//!
//! Why full jitter: when a hub restarts, a fleet that lost it at the same moment must not come
//! back at the same moment. A spread of a few milliseconds (what a clock's low bits give) still
//! lands every device in one burst; uniform waits over the whole window spread the reconnects
//! evenly over it (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
//!
//! The random draw comes from the operating system (`getrandom`), never from a clock. No
//! sleeping and no clock here: callers sleep for what [`Backoff::next_delay`] returns.

use std::time::Duration;

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits of up to `base` after the first failure, doubling per failure, never above `cap`
    /// (a `cap` under `base` is raised to it).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The longest wait the next failure can give: min(cap, base · 2^failures).
    pub fn ceiling(&self) -> Duration {
        self.base
            .checked_mul(1u32 << self.failures.min(31))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// Records a failure and returns how long to wait before the next attempt: uniform in
    /// [0, ceiling], drawn from the operating system's random source.
    pub fn next_delay(&mut self) -> Duration {
        // A failing OS source (never seen on Linux) still gives a wait: the middle one.
        self.next_delay_with(getrandom::u64().unwrap_or(u64::MAX / 2))
    }

    /// [`Backoff::next_delay`] with the random draw handed in (uniform over all of `u64`).
    pub fn next_delay_with(&mut self, draw: u64) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        scale(ceiling, draw)
    }

    /// A success: the next failure waits up to `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// `draw` (uniform over all of `u64`) mapped onto [0, max].
fn scale(max: Duration, draw: u64) -> Duration {
    let nanos = max.as_nanos().min(u128::from(u64::MAX - 1)) as u64;
    // Multiply-shift maps the draw onto [0, nanos] with no modulo bias worth the name.
    let scaled = (u128::from(draw) * (u128::from(nanos) + 1)) >> 64;
    Duration::from_nanos(scaled as u64)
}

/// The wait before trying again when the other side said how long (`Busy { retry_after_ms }`):
/// uniform in [hint, 1.5 · hint], drawn from the operating system's random source. Never
/// earlier than asked; devices told the same moment spread over half the hint after it.
pub fn after_hint(hint: Duration) -> Duration {
    after_hint_with(hint, getrandom::u64().unwrap_or(u64::MAX / 2))
}

/// [`after_hint`] with the random draw handed in (uniform over all of `u64`).
pub fn after_hint_with(hint: Duration, draw: u64) -> Duration {
    hint.saturating_add(scale(hint / 2, draw))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_up_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::new(100 * MS, 1_000 * MS);
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= 1_000 * MS, "{d:?} over the cap");
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.failures(), 6);
        b.reset();
        assert_eq!((b.failures(), b.ceiling()), (0, 100 * MS));
        // Thousands of failures neither overflow nor pass the cap.
        for _ in 0..5_000 {
            assert!(b.next_delay() <= 1_000 * MS);
        }
        assert_eq!(b.ceiling(), 1_000 * MS);
        let mut huge = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        for _ in 0..70 {
            huge.next_delay();
        }
    }

    #[test]
    fn the_draw_spans_zero_to_the_ceiling() {
        let mut b = Backoff::new(1_000 * MS, 1_000 * MS);
        assert_eq!(b.next_delay_with(0), Duration::ZERO);
        let top = b.next_delay_with(u64::MAX);
        assert!(top <= 1_000 * MS && top > 999 * MS, "{top:?}");
        assert_eq!(b.next_delay_with(u64::MAX / 2 + 1).as_millis(), 500);
    }

    #[test]
    fn a_hinted_wait_is_never_shorter_than_the_hint() {
        let hint = 1_000 * MS;
        assert_eq!(after_hint_with(hint, 0), hint);
        let top = after_hint_with(hint, u64::MAX);
        assert!(top <= 1_500 * MS && top > 1_499 * MS, "{top:?}");
        assert_eq!(after_hint_with(hint, u64::MAX / 2 + 1).as_millis(), 1_250);
        for _ in 0..1_000 {
            let d = after_hint(hint);
            assert!((hint..=1_500 * MS).contains(&d), "{d:?}");
        }
        assert_eq!(after_hint_with(Duration::MAX, u64::MAX), Duration::MAX);
    }

    /// 1,000 devices losing the hub at once: their first waits spread over the whole window.
    #[test]
    fn a_fleet_spreads_over_the_whole_window() {
        let window = 10_000u128; // ms
        let buckets = 10usize;
        let mut counts = vec![0u32; buckets];
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let mut b = Backoff::new(Duration::from_millis(window as u64), Duration::MAX);
            let d = b.next_delay().as_millis();
            assert!(d <= window);
            distinct.insert(d);
            counts[((d * buckets as u128 / (window + 1)) as usize).min(buckets - 1)] += 1;
        }
        // Uniform: 100 per bucket expected; a real source stays within 45..=155 for every
        // bucket with overwhelming probability (each bucket ~ Binomial(1000, 0.1), sd 9.5).
        for (i, c) in counts.iter().enumerate() {
            assert!(
                (45..=155).contains(c),
                "bucket {i}: {c} of 1000 ({counts:?})"
            );
        }
        assert!(
            distinct.len() > 900,
            "only {} distinct waits in ms",
            distinct.len()
        );
    }
}
