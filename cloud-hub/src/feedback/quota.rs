//! `[feedback]` in the config (quota, retention, splits) and the per-device byte quota on
//! delivered records.
//!
//! Policy: each device may have at most `quota_bytes_per_device` bytes of *new* records
//! (delivered payloads, duplicates not counted) stored per window of `quota_window_ms`; the
//! window starts at the device's first delivery after the previous one ended. Over it, the hub
//! stores nothing more from that device and answers the delivery stream with the `Ack`s of what
//! it stored, then `Busy { request_id: 0, retry_after_ms }` (the time left in the window): the
//! agent keeps the records and sends them again later, so nothing is lost. The counters live in
//! memory: a hub restart starts every device's window afresh (at most one extra window's bytes
//! per restart, which only an operator can cause).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// `[feedback]`: limits on what devices may deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Bytes of new records one device may have stored per window (default 268435456,
    /// 256 MiB); over it, its deliveries are refused with `Busy` until the window ends. 0: no
    /// quota.
    pub quota_bytes_per_device: u64,
    /// Length of the quota window in milliseconds (default 3600000, one hour).
    pub quota_window_ms: u64,
    /// Records kept at most (default 1000000); past it the oldest arrivals are evicted
    /// (`tandem_hub_feedback_evicted_total`). 0: no limit.
    pub max_records: u64,
    /// Records older than this (since the hub stored them) are evicted, in milliseconds
    /// (default 7776000000, 90 days). 0: kept whatever their age.
    pub max_age_ms: u64,
    /// Share of inputs (by content digest) in the training split, in percent (default 70).
    pub split_train_pct: u64,
    /// Share of inputs in the calibration split, in percent (default 15); the rest is the test
    /// split.
    pub split_calibration_pct: u64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            quota_bytes_per_device: 256 << 20,
            quota_window_ms: 3_600_000,
            max_records: 1_000_000,
            max_age_ms: 90 * 24 * 3_600_000,
            split_train_pct: 70,
            split_calibration_pct: 15,
        }
    }
}

impl FeedbackConfig {
    /// What is wrong with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.quota_window_ms == 0 {
            p.push("feedback.quota_window_ms must be > 0".into());
        }
        if self.split_train_pct + self.split_calibration_pct > 100 {
            p.push(
                "feedback.split_train_pct + feedback.split_calibration_pct must be <= 100".into(),
            );
        }
        p
    }
}

/// A device over its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    /// Bytes stored in the current window.
    pub used: u64,
    /// The quota.
    pub quota: u64,
    /// Milliseconds until the window ends.
    pub retry_after_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    bytes: u64,
}

/// Most devices tracked before windows that ended are dropped.
const PRUNE_AT: usize = 4096;

/// The quota's state: bytes per device in its current window.
#[derive(Debug)]
pub(super) struct Quota {
    cfg: FeedbackConfig,
    used: Mutex<HashMap<String, Window>>,
}

impl Quota {
    pub(super) fn new(cfg: FeedbackConfig) -> Self {
        Self {
            cfg,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `bytes` against `device`'s window at `now_ms`, or refuses when they would take
    /// it over the quota (a record larger than the whole quota is refused too).
    pub(super) fn reserve(&self, device: &str, bytes: u64, now_ms: u64) -> Result<(), OverQuota> {
        let quota = self.cfg.quota_bytes_per_device;
        if quota == 0 {
            return Ok(());
        }
        let window = self.cfg.quota_window_ms.max(1);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() >= PRUNE_AT {
            used.retain(|_, w| now_ms.saturating_sub(w.start_ms) < window);
        }
        let w = used.entry(device.to_string()).or_insert(Window {
            start_ms: now_ms,
            bytes: 0,
        });
        if now_ms.saturating_sub(w.start_ms) >= window {
            *w = Window {
                start_ms: now_ms,
                bytes: 0,
            };
        }
        if w.bytes.saturating_add(bytes) > quota {
            return Err(OverQuota {
                used: w.bytes,
                quota,
                retry_after_ms: (w.start_ms + window).saturating_sub(now_ms).max(1),
            });
        }
        w.bytes += bytes;
        Ok(())
    }

    /// Gives back bytes reserved for a record that was not stored (a duplicate, a failure).
    pub(super) fn release(&self, device: &str, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = used.get_mut(device) {
            w.bytes = w.bytes.saturating_sub(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_refused_over_its_quota_until_the_window_ends() {
        let q = Quota::new(FeedbackConfig {
            quota_bytes_per_device: 100,
            quota_window_ms: 1000,
            ..FeedbackConfig::default()
        });
        q.reserve("cam-1", 60, 10).expect("within");
        let over = q.reserve("cam-1", 50, 20).expect_err("over");
        assert_eq!(
            over,
            OverQuota {
                used: 60,
                quota: 100,
                retry_after_ms: 990
            }
        );
        q.reserve("cam-2", 100, 20)
            .expect("another device has its own quota");
        q.release("cam-1", 60);
        q.reserve("cam-1", 100, 30)
            .expect("released bytes count no more");
        q.reserve("cam-1", 1, 1009).expect_err("same window");
        q.reserve("cam-1", 100, 1010).expect("a new window");
        let off = Quota::new(FeedbackConfig {
            quota_bytes_per_device: 0,
            quota_window_ms: 1,
            ..FeedbackConfig::default()
        });
        off.reserve("cam-1", u64::MAX, 0).expect("0: no quota");
    }
}
