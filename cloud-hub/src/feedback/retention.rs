//! Retention of the feedback store: past `feedback.max_records` records, or for records older
//! than `feedback.max_age_ms`, the oldest arrivals are evicted with their index entries, and an
//! input file once no record names it; every eviction counted
//! (`tandem_hub_feedback_evicted_total`) and each round logged. Checked after every commit and
//! once a minute while the hub runs. Also numbers records stored before arrivals were.

use super::index::{Entry, parse_arrival};
use super::store::{FeedbackError, Store, StoredRecord};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the running hub applies the age limit when nothing is delivered.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

fn digest_of(rec: &StoredRecord) -> Option<[u8; 32]> {
    let hex_digest = rec.digest.clone().or_else(|| {
        let name = rec.input.as_deref()?.strip_prefix("inputs/")?;
        Some(name.split('.').next()?.to_string())
    })?;
    hex::decode(hex_digest).ok()?.try_into().ok()
}

impl Store {
    /// Evicts what the retention limits say must go at `now_ms`; how many went.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<u64, FeedbackError> {
        let (max, age) = (self.cfg.max_records, self.cfg.max_age_ms);
        if max == 0 && age == 0 {
            return Ok(0);
        }
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = 0u64;
        loop {
            let over = max > 0 && self.held.load(Ordering::Relaxed) > max;
            let Some((k, v)) = self.index.arrivals.first().map_err(|e| self.db_err(e))? else {
                break;
            };
            let arrival = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            let (received_ms, key) =
                parse_arrival(&v).ok_or_else(|| self.db_err("an arrivals entry is too short"))?;
            let old = age > 0 && now_ms.saturating_sub(received_ms) > age;
            if !over && !old {
                break;
            }
            let rec: Option<StoredRecord> = self
                .records_tree()
                .get(key)
                .map_err(|e| self.db_err(e))?
                .and_then(|v| serde_json::from_slice(&v).ok());
            let digest = rec.as_ref().and_then(digest_of);
            let request = rec
                .as_ref()
                .and_then(|r| Some((r.device.as_str(), r.example.as_ref()?.request_id.as_str())));
            let entry = Entry {
                key,
                value: &[],
                arrival,
                received_ms,
                digest,
                request,
            };
            self.index
                .remove(self.records_tree(), &entry)
                .map_err(|e| self.db_err(e))?;
            self.held.fetch_sub(1, Ordering::Relaxed);
            evicted += 1;
            if let (Some(d), Some(name)) = (digest, rec.as_ref().and_then(|r| r.input.as_ref()))
                && self.index.copies(&d) == 0
            {
                let _ = std::fs::remove_file(self.dir().join(name));
            }
        }
        if evicted > 0 {
            self.flush_index()?;
            self.stats().evicted.fetch_add(evicted, Ordering::Relaxed);
            tracing::info!(
                evicted,
                held = self.held.load(Ordering::Relaxed),
                max_records = max,
                max_age_ms = age,
                "feedback records evicted by the retention limits"
            );
        }
        Ok(evicted)
    }

    /// Gives arrival numbers (and digests) to records stored before the store numbered them,
    /// in key order; once, at open.
    pub(super) fn number_old_records(&self) -> Result<(), FeedbackError> {
        if !self.index.arrivals.is_empty() || self.records_tree().is_empty() {
            return Ok(());
        }
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        for kv in self.records_tree().iter() {
            let (key, v) = kv.map_err(|e| self.db_err(e))?;
            let Ok(mut rec) = serde_json::from_slice::<StoredRecord>(&v) else {
                continue;
            };
            let digest = digest_of(&rec);
            rec.digest = digest.map(hex::encode);
            rec.arrival = self.next_arrival()?;
            let value = serde_json::to_vec(&rec).map_err(|e| self.db_err(e))?;
            let entry = Entry {
                key: &key,
                value: &value,
                arrival: rec.arrival,
                received_ms: rec.received_ms,
                digest,
                request: rec
                    .example
                    .as_ref()
                    .map(|ex| (rec.device.as_str(), ex.request_id.as_str())),
            };
            self.index
                .insert(self.records_tree(), &entry, true)
                .map_err(|e| self.db_err(e))?;
        }
        self.flush_index()
    }
}

/// Applies the age limit every [`CHECK_EVERY`] until `stop`.
pub async fn run(store: Arc<Store>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let s = store.clone();
        let now = crate::fleet::link::now_ms();
        match tokio::task::spawn_blocking(move || s.enforce_retention(now)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "feedback retention failed"),
            Err(e) => tracing::error!(error = %e, "feedback retention task failed"),
        }
    }
}
