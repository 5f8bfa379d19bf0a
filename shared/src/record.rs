//! Store-and-forward record payloads (flow 3): what an agent queues for the hub and sends in a
//! `Deliver` frame. The wire layer treats the payload as opaque bytes; this module gives it a
//! versioned shape both sides agree on.
//!
//! Layout: `version u8` (1), `tag u8` (1 example, 2 event, 3 telemetry), `meta_len u32`
//! little-endian, `meta` (UTF-8 JSON), then the rest: the example's raw input (image file bytes
//! or UTF-8 text; empty for events and telemetry).
//!
//! # Invariants
//! - [`decode`] never panics and accepts exactly what [`encode`] produces for the same
//!   version; anything else is a [`RecordError`].
//! - The input bytes are carried as they are (no base64 inflation, no re-encoding).

use serde::{Deserialize, Serialize};

/// The payload format version this build writes.
pub const RECORD_VERSION: u8 = 1;

/// Longest JSON metadata accepted, in bytes.
pub const MAX_META_BYTES: usize = 1 << 20;

/// Why a payload is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its header or its declared metadata.
    #[error("record truncated: {len} bytes, needs {needed}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header says are needed.
        needed: usize,
    },
    /// A version this build does not read.
    #[error("record version {0} is not supported (this build reads {RECORD_VERSION})")]
    Version(u8),
    /// An unknown tag.
    #[error("unknown record tag {0}")]
    Tag(u8),
    /// Metadata over [`MAX_META_BYTES`].
    #[error("record metadata of {0} bytes is over the {MAX_META_BYTES}-byte limit")]
    MetaTooLarge(usize),
    /// Metadata that is not the expected JSON.
    #[error("record metadata: {0}")]
    Meta(String),
}

/// Why an example was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExampleKind {
    /// The cascade offloaded it (the edge model was unsure): both models' answers are known.
    Hard,
    /// The policy wanted the hub but it could not answer: only the local answer is known.
    Degraded,
    /// A person gave the right label (`POST /v1/feedback`).
    Correction,
    /// A confident local answer sampled for the hub to judge with the cloud model (the agent's
    /// `feedback.shadow_*`): an unbiased sample of what the device answers alone. Only the local
    /// answer is known. A hub older than this kind keeps the record as rejected.
    Shadow,
}

/// One model's answer, as kept with an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Model version that answered.
    pub version: String,
    /// Best label.
    pub label: String,
    /// Its class index.
    pub index: usize,
    /// Its probability.
    pub score: f32,
    /// The best few, best first: `(label, probability)`.
    pub top_k: Vec<(String, f32)>,
}

/// An example's metadata (its input travels beside it, raw).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleMeta {
    /// Why it was kept.
    pub kind: ExampleKind,
    /// The agent's request id (a correction names the request it corrects).
    pub request_id: String,
    /// Model name.
    pub model: String,
    /// When the request was answered, milliseconds since the Unix epoch (device clock).
    pub time_ms: u64,
    /// `image` (the file bytes as sent: JPEG/PNG) or `text` (UTF-8).
    pub input_kind: String,
    /// The routing reason of the original answer (`low_confidence`, `hub_unreachable`, ...).
    pub reason: String,
    /// The device's answer, when it ran.
    pub local: Option<Outcome>,
    /// The hub's answer, when it gave one.
    pub cloud: Option<Outcome>,
    /// The right label (corrections only).
    pub label: Option<String>,
    /// A detection model's boxes (its `local`/`cloud` outcomes are then `None`); absent for
    /// classification and in records written before detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boxes: Option<ExampleBoxes>,
}

/// Both models' boxes of a detection example: a hard example carries both sets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExampleBoxes {
    /// The device's boxes, when it ran.
    pub local: Option<Vec<crate::detect::Detection>>,
    /// The hub's boxes, when it answered.
    pub cloud: Option<Vec<crate::detect::Detection>>,
}

/// A queued record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A hard example or a correction, with its raw input.
    Example {
        /// Metadata (boxed: it is much larger than the other variants).
        meta: Box<ExampleMeta>,
        /// The input as the caller sent it.
        input: Vec<u8>,
    },
    /// A per-inference event (the MQTT `events` payload), kept while the link is down.
    Event(serde_json::Value),
    /// A telemetry snapshot (the MQTT `telemetry` payload), kept while the link is down.
    Telemetry(serde_json::Value),
}

const TAG_EXAMPLE: u8 = 1;
const TAG_EVENT: u8 = 2;
const TAG_TELEMETRY: u8 = 3;
const HEADER: usize = 6;

/// The payload bytes of a record.
pub fn encode(r: &Record) -> Vec<u8> {
    let (tag, meta, input): (u8, Vec<u8>, &[u8]) = match r {
        Record::Example { meta, input } => (
            TAG_EXAMPLE,
            serde_json::to_vec(meta).unwrap_or_default(),
            input,
        ),
        Record::Event(v) => (TAG_EVENT, serde_json::to_vec(v).unwrap_or_default(), &[]),
        Record::Telemetry(v) => (
            TAG_TELEMETRY,
            serde_json::to_vec(v).unwrap_or_default(),
            &[],
        ),
    };
    let mut out = Vec::with_capacity(HEADER + meta.len() + input.len());
    out.push(RECORD_VERSION);
    out.push(tag);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(input);
    out
}

/// The record in `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
    if bytes.len() < HEADER {
        return Err(RecordError::Truncated {
            len: bytes.len(),
            needed: HEADER,
        });
    }
    if bytes[0] != RECORD_VERSION {
        return Err(RecordError::Version(bytes[0]));
    }
    let tag = bytes[1];
    let meta_len = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    if meta_len > MAX_META_BYTES {
        return Err(RecordError::MetaTooLarge(meta_len));
    }
    let needed = HEADER + meta_len;
    if bytes.len() < needed {
        return Err(RecordError::Truncated {
            len: bytes.len(),
            needed,
        });
    }
    let (meta, rest) = bytes[HEADER..].split_at(meta_len);
    let json = |m: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(m).map_err(|e| RecordError::Meta(e.to_string()))
    };
    match tag {
        TAG_EXAMPLE => Ok(Record::Example {
            meta: Box::new(
                serde_json::from_slice(meta).map_err(|e| RecordError::Meta(e.to_string()))?,
            ),
            input: rest.to_vec(),
        }),
        TAG_EVENT => Ok(Record::Event(json(meta)?)),
        TAG_TELEMETRY => Ok(Record::Telemetry(json(meta)?)),
        t => Err(RecordError::Tag(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example(input: Vec<u8>) -> Record {
        Record::Example {
            meta: Box::new(ExampleMeta {
                kind: ExampleKind::Hard,
                request_id: "r-1".into(),
                model: "vision-fashion".into(),
                time_ms: 1_700_000_000_000,
                input_kind: "image".into(),
                reason: "low_confidence".into(),
                local: Some(Outcome {
                    version: "1.0.0".into(),
                    label: "Shirt".into(),
                    index: 6,
                    score: 0.41,
                    top_k: vec![("Shirt".into(), 0.41), ("T-shirt/top".into(), 0.3)],
                }),
                cloud: None,
                label: None,
                boxes: None,
            }),
            input,
        }
    }

    #[test]
    fn round_trips_and_keeps_the_input_raw() {
        let r = example(b"\x89PNG raw bytes".to_vec());
        let bytes = encode(&r);
        assert!(bytes.ends_with(b"\x89PNG raw bytes"));
        assert_eq!(decode(&bytes), Ok(r));
        let t = Record::Telemetry(serde_json::json!({"v": 1, "rss_bytes": 1234}));
        assert_eq!(decode(&encode(&t)), Ok(t));
    }

    #[test]
    fn bad_payloads_are_errors() {
        let good = encode(&example(vec![1, 2, 3]));
        assert!(matches!(
            decode(&good[..3]),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&good[..10]),
            Err(RecordError::Truncated { .. })
        ));
        let mut v = good.clone();
        v[0] = 9;
        assert_eq!(decode(&v), Err(RecordError::Version(9)));
        let mut v = good.clone();
        v[1] = 77;
        assert_eq!(decode(&v), Err(RecordError::Tag(77)));
        let mut v = good;
        v[6] = b'!';
        assert!(matches!(decode(&v), Err(RecordError::Meta(_))));
        let mut huge = vec![RECORD_VERSION, TAG_EVENT];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(RecordError::MetaTooLarge(_))));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_input_round_trips(input in prop::collection::vec(any::<u8>(), 0..512)) {
            let r = example(input);
            prop_assert_eq!(decode(&encode(&r)), Ok(r));
        }
    }
}
