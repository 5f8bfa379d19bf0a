//! Operators' corrections (the console's gallery, `POST /v1/feedback/corrections`): a person
//! confirms or corrects the label of a stored example, and the hub stores the same record a
//! device's `/v1/feedback` makes — an example of kind `correction` with the corrected record's
//! request id, model, time, routing reason, both answers and input bytes, and the label — so
//! the listing links it to the answer it corrects, the examples take its label, and training
//! and evaluation read it like any other correction.
//!
//! It is stored under the corrected record's device with the reserved queue epoch
//! [`OPERATOR_EPOCH`] (0: an agent's queue never uses it) and a seq from the hub's clock (ms,
//! strictly increasing in this process), through [`Store::put`] and [`Store::commit`]: durable
//! when answered, counted against that device's quota like its own records.

use super::listing::Listed;
use super::store::{FeedbackError, Ingested, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use tandem_shared::dedup::DeliveryKey;
use tandem_shared::record::{self, ExampleKind, ExampleMeta, Record};

/// The queue epoch of operators' corrections.
pub const OPERATOR_EPOCH: u64 = 0;

/// Longest label accepted, in characters.
pub const MAX_LABEL_CHARS: usize = 200;

/// Why a correction was not stored.
#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    /// The id is not `device/epoch/seq`.
    #[error("`{0}` is not a record id (device/epoch/seq, as the listing gives it)")]
    BadId(String),
    /// No record has that id.
    #[error("no stored record `{0}` (evicted, or never delivered)")]
    NotFound(String),
    /// The record is not an example with its input (an event, telemetry, a rejected payload).
    #[error("record `{0}` is not an example with an input: only examples can be corrected")]
    NotExample(String),
    /// The label is empty, too long or holds control characters.
    #[error(
        "the label must be 1 to {MAX_LABEL_CHARS} characters without control characters: {0:?}"
    )]
    BadLabel(String),
    /// The store failed (or the device is over its quota).
    #[error(transparent)]
    Store(#[from] FeedbackError),
}

static LAST_SEQ: AtomicU64 = AtomicU64::new(0);

/// The next seq: the clock in ms, or one past the last one given.
fn next_seq() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let prev = LAST_SEQ
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(prev + 1)
}

fn parse_id(id: &str) -> Option<DeliveryKey> {
    let mut it = id.rsplitn(3, '/');
    let seq = it.next()?.parse().ok()?;
    let epoch = it.next()?.parse().ok()?;
    let device = it.next().filter(|d| !d.is_empty())?;
    Some(DeliveryKey {
        device: device.to_string(),
        epoch,
        seq,
    })
}

impl Store {
    /// Stores `operator`'s correction of record `id` to `label`; the stored correction as the
    /// listing shows it.
    pub fn correct(
        &self,
        id: &str,
        label: &str,
        operator: &str,
    ) -> Result<Listed, CorrectionError> {
        let label = label.trim();
        if label.is_empty()
            || label.chars().count() > MAX_LABEL_CHARS
            || label.chars().any(char::is_control)
        {
            return Err(CorrectionError::BadLabel(label.chars().take(40).collect()));
        }
        let key = parse_id(id).ok_or_else(|| CorrectionError::BadId(id.to_string()))?;
        let original = self
            .record_at(&key.to_bytes())?
            .ok_or_else(|| CorrectionError::NotFound(id.to_string()))?;
        let not_example = || CorrectionError::NotExample(id.to_string());
        let (Some(meta), Some(input)) = (&original.example, &original.input) else {
            return Err(not_example());
        };
        let path = self.dir().join(input);
        let bytes = std::fs::read(&path).map_err(|source| FeedbackError::Io { path, source })?;
        let payload = record::encode(&Record::Example {
            meta: Box::new(ExampleMeta {
                kind: ExampleKind::Correction,
                label: Some(label.to_string()),
                ..meta.clone()
            }),
            input: bytes,
        });
        let device = original.device.as_str();
        let (seq, put) = loop {
            let seq = next_seq();
            let put = self.put(device, OPERATOR_EPOCH, seq, &payload)?;
            // A seq stored before a restart with the clock set back: the next one.
            if put.outcome != Ingested::Duplicate {
                break (seq, put);
            }
        };
        self.commit(device, &[])?;
        if put.outcome == Ingested::Rejected {
            return Err(not_example());
        }
        let stored = DeliveryKey {
            device: device.to_string(),
            epoch: OPERATOR_EPOCH,
            seq,
        };
        let record = self
            .record_at(&stored.to_bytes())?
            .ok_or_else(|| CorrectionError::NotFound(format!("{device}/{OPERATOR_EPOCH}/{seq}")))?;
        tracing::info!(
            operator,
            corrects = id,
            label,
            device,
            seq,
            "operator correction stored"
        );
        Ok(self.listed(record)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_seqs() {
        let k = parse_id("cam-01/42/7").expect("id");
        assert_eq!((k.device.as_str(), k.epoch, k.seq), ("cam-01", 42, 7));
        for bad in ["cam-01/42", "/1/2", "cam/x/1", "", "cam/1/2/"] {
            assert!(parse_id(bad).is_none(), "{bad}");
        }
        let (a, b) = (next_seq(), next_seq());
        assert!(b > a);
    }
}
