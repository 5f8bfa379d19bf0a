//! The feedback store: one sled tree keyed by the delivery's identity
//! ([`tandem_shared::dedup::DeliveryKey`]: device, epoch, seq) whose values are the records'
//! metadata (JSON), and the examples' inputs as files named by their sha256 under `inputs/`.
//!
//! # Invariants
//! - A delivery is stored at most once: a key already present is a duplicate, acknowledged
//!   again and counted, never stored twice.
//! - [`Store::ingest`] returns only after the batch is durable (input files fsynced, then the
//!   index flushed): the hub acknowledges nothing that a crash could lose.
//! - A payload that does not decode is kept as `rejected` (with the reason) and acknowledged:
//!   sending it again would not help, and it is counted and logged rather than lost silently.
//! - The device always comes from the connection's certificate, never from a payload.
//! - Telemetry delivered late (snapshots a device queued while its broker was unreachable)
//!   goes to the [`TelemetrySink`] (the fleet state) once, when first stored and durable; a
//!   duplicate does not.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tandem_shared::dedup::DeliveryKey;
use tandem_shared::record::{self, ExampleMeta, Record};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The sled database.
    #[error("feedback index {path}: {message}")]
    Db {
        /// Its folder.
        path: PathBuf,
        /// What sled said.
        message: String,
    },
    /// Another process (a running hub) holds the store.
    #[error(
        "the feedback store {path} is in use by another process (a running hub?): stop it first"
    )]
    Locked {
        /// Its folder.
        path: PathBuf,
    },
    /// A file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Stored now.
    New,
    /// Already stored earlier (a redelivery).
    Duplicate,
    /// Stored as rejected: the payload did not decode.
    Rejected,
}

/// One stored record (the index value, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The device (from its certificate).
    pub device: String,
    /// Its queue epoch.
    pub epoch: u64,
    /// Sequence number in the epoch.
    pub seq: u64,
    /// When the hub stored it, milliseconds since the Unix epoch.
    pub received_ms: u64,
    /// `example`, `event`, `telemetry` or `rejected`.
    pub kind: String,
    /// An example's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<ExampleMeta>,
    /// An example's input file, relative to the store (`inputs/<sha256>.<ext>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// An event's or a telemetry snapshot's JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// Why a rejected payload did not decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct FeedbackStats {
    /// Deliveries stored.
    pub stored: AtomicU64,
    /// Redeliveries recognised.
    pub duplicates: AtomicU64,
    /// Payloads that did not decode.
    pub rejected: AtomicU64,
}

/// Told of each telemetry snapshot newly stored: (device, the telemetry JSON as the device
/// wrote it). Runs on the ingest thread after the batch is durable; keep it quick.
pub type TelemetrySink = Box<dyn Fn(&str, &serde_json::Value) + Send + Sync>;

struct Sink(std::sync::OnceLock<TelemetrySink>);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Sink(set)"
        } else {
            "Sink(none)"
        })
    }
}

/// The store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    records: sled::Tree,
    db: sled::Db,
    stats: FeedbackStats,
    telemetry_sink: Sink,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The file extension for an input, from its first bytes.
pub(super) fn extension(kind: &str, bytes: &[u8]) -> &'static str {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => "png",
        [0xFF, 0xD8, 0xFF, ..] => "jpg",
        _ if kind == "text" => "txt",
        _ => "bin",
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, FeedbackError> {
        let inputs = dir.join("inputs");
        std::fs::create_dir_all(&inputs).map_err(|source| FeedbackError::Io {
            path: inputs.clone(),
            source,
        })?;
        let index = dir.join("index");
        let db_err = |e: sled::Error| FeedbackError::Db {
            path: index.clone(),
            message: e.to_string(),
        };
        let db = sled::Config::new()
            .path(&index)
            .cache_capacity(32 << 20)
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    FeedbackError::Locked {
                        path: dir.to_path_buf(),
                    }
                }
                _ => db_err(e),
            })?;
        let records = db.open_tree("records").map_err(db_err)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            records,
            db,
            stats: FeedbackStats::default(),
            telemetry_sink: Sink(std::sync::OnceLock::new()),
        })
    }

    /// Sends each telemetry snapshot stored from now on to `sink` (the fleet state); set once,
    /// `false` when one was already set.
    pub fn on_telemetry(&self, sink: TelemetrySink) -> bool {
        self.telemetry_sink.0.set(sink).is_ok()
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since start.
    pub fn stats(&self) -> &FeedbackStats {
        &self.stats
    }

    /// Records stored (all kinds).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every stored record, in key order (device, epoch, seq).
    pub fn iter(&self) -> impl Iterator<Item = Result<StoredRecord, FeedbackError>> + '_ {
        self.records.iter().map(|r| {
            let (_, v) = r.map_err(|e| FeedbackError::Db {
                path: self.dir.join("index"),
                message: e.to_string(),
            })?;
            serde_json::from_slice(&v).map_err(|e| FeedbackError::Db {
                path: self.dir.join("index"),
                message: format!("a stored record does not parse: {e}"),
            })
        })
    }

    fn write_input(&self, kind: &str, bytes: &[u8]) -> Result<String, FeedbackError> {
        let name = format!(
            "inputs/{}.{}",
            hex::encode(Sha256::digest(bytes)),
            extension(kind, bytes)
        );
        let path = self.dir.join(&name);
        if path.is_file() {
            return Ok(name);
        }
        let tmp = path.with_extension("part");
        let io = |source| FeedbackError::Io {
            path: tmp.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(name)
    }

    /// Stores a batch of deliveries from `device` — `(epoch, seq, payload)` each — and returns
    /// once they are durable; duplicates are recognised and not stored again.
    pub fn ingest(
        &self,
        device: &str,
        batch: &[(u64, u64, &[u8])],
    ) -> Result<Vec<Ingested>, FeedbackError> {
        let db_err = |e: sled::Error| FeedbackError::Db {
            path: self.dir.join("index"),
            message: e.to_string(),
        };
        let mut out = Vec::with_capacity(batch.len());
        let mut writes = sled::Batch::default();
        let mut seen_in_batch = std::collections::HashSet::new();
        let mut any = false;
        let sink = self.telemetry_sink.0.get();
        let mut telemetry = Vec::new();
        for &(epoch, seq, payload) in batch {
            let key = DeliveryKey {
                device: device.to_string(),
                epoch,
                seq,
            }
            .to_bytes();
            if !seen_in_batch.insert(key.clone())
                || self.records.contains_key(&key).map_err(db_err)?
            {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                out.push(Ingested::Duplicate);
                continue;
            }
            let mut rec = StoredRecord {
                device: device.to_string(),
                epoch,
                seq,
                received_ms: now_ms(),
                kind: String::new(),
                example: None,
                input: None,
                payload: None,
                error: None,
            };
            let outcome = match record::decode(payload) {
                Ok(Record::Example { meta, input }) => {
                    rec.input = Some(self.write_input(&meta.input_kind, &input)?);
                    rec.kind = "example".into();
                    rec.example = Some(*meta);
                    Ingested::New
                }
                Ok(Record::Event(v)) => {
                    rec.kind = "event".into();
                    rec.payload = Some(v);
                    Ingested::New
                }
                Ok(Record::Telemetry(v)) => {
                    rec.kind = "telemetry".into();
                    if sink.is_some() {
                        telemetry.push(v.clone());
                    }
                    rec.payload = Some(v);
                    Ingested::New
                }
                Err(e) => {
                    tracing::warn!(device, epoch, seq, error = %e, "delivered record does not decode: kept as rejected");
                    rec.kind = "rejected".into();
                    rec.error = Some(e.to_string());
                    Ingested::Rejected
                }
            };
            let value = serde_json::to_vec(&rec).map_err(|e| FeedbackError::Db {
                path: self.dir.join("index"),
                message: e.to_string(),
            })?;
            writes.insert(key, value);
            any = true;
            out.push(outcome);
        }
        if any {
            self.records.apply_batch(writes).map_err(db_err)?;
            self.db.flush().map_err(db_err)?;
        }
        if let Some(sink) = sink {
            for v in &telemetry {
                sink(device, v);
            }
        }
        for o in &out {
            match o {
                Ingested::New => self.stats.stored.fetch_add(1, Ordering::Relaxed),
                Ingested::Rejected => self.stats.rejected.fetch_add(1, Ordering::Relaxed),
                Ingested::Duplicate => 0,
            };
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::record::{ExampleKind, Outcome};

    fn example(label: Option<&str>) -> Vec<u8> {
        record::encode(&Record::Example {
            meta: Box::new(ExampleMeta {
                kind: if label.is_some() {
                    ExampleKind::Correction
                } else {
                    ExampleKind::Hard
                },
                request_id: "r-7".into(),
                model: "vision-fashion".into(),
                time_ms: 1,
                input_kind: "image".into(),
                reason: "low_confidence".into(),
                local: Some(Outcome {
                    version: "1.0.0".into(),
                    label: "Shirt".into(),
                    index: 6,
                    score: 0.4,
                    top_k: vec![],
                }),
                cloud: None,
                label: label.map(str::to_string),
            }),
            input: b"\x89PNG....".to_vec(),
        })
    }

    #[test]
    fn stores_once_per_device_epoch_seq() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(dir.path()).expect("open");
        let (a, b) = (example(None), example(Some("T-shirt/top")));
        let got = s
            .ingest("cam-1", &[(7, 1, &a), (7, 2, &b), (7, 1, &a)])
            .expect("ingest");
        assert_eq!(got, vec![Ingested::New, Ingested::New, Ingested::Duplicate]);
        assert_eq!(
            s.ingest("cam-1", &[(7, 2, &b)]).expect("again"),
            vec![Ingested::Duplicate]
        );
        // Another epoch (the queue was recreated) or another device is not a duplicate.
        assert_eq!(
            s.ingest("cam-1", &[(8, 1, &a)]).expect("new epoch"),
            vec![Ingested::New]
        );
        assert_eq!(
            s.ingest("cam-2", &[(7, 1, &a)]).expect("other device"),
            vec![Ingested::New]
        );
        assert_eq!(s.len(), 4);
        // Same input bytes: one file.
        let files = std::fs::read_dir(dir.path().join("inputs"))
            .expect("inputs")
            .count();
        assert_eq!(files, 1);
        drop(s);
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.len(), 4, "durable across a reopen");
        assert_eq!(
            s.ingest("cam-1", &[(7, 1, &a)]).expect("after reopen"),
            vec![Ingested::Duplicate]
        );
    }

    #[test]
    fn new_telemetry_goes_to_the_sink_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(dir.path()).expect("open");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let got = seen.clone();
        assert!(s.on_telemetry(Box::new(move |device, v| {
            got.lock()
                .expect("lock")
                .push((device.to_string(), v["seq"].as_u64()));
        })));
        assert!(!s.on_telemetry(Box::new(|_, _| {})), "set once");
        let tm =
            |seq: u64| record::encode(&Record::Telemetry(serde_json::json!({"v": 1, "seq": seq})));
        let (t1, t2, ex) = (tm(1), tm(2), example(None));
        s.ingest("cam-1", &[(7, 1, &t1), (7, 2, &ex), (7, 3, &t2)])
            .expect("ingest");
        // Redelivered (an acknowledgement was lost): stored once, told once.
        s.ingest("cam-1", &[(7, 3, &t2), (7, 1, &t1)])
            .expect("again");
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![
                ("cam-1".to_string(), Some(1)),
                ("cam-1".to_string(), Some(2))
            ]
        );
    }

    #[test]
    fn undecodable_payloads_are_kept_as_rejected() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(dir.path()).expect("open");
        assert_eq!(
            s.ingest("cam-1", &[(1, 1, b"garbage")]).expect("ingest"),
            vec![Ingested::Rejected]
        );
        let r = s.iter().next().expect("one").expect("parses");
        assert_eq!(r.kind, "rejected");
        assert!(r.error.is_some());
        assert_eq!(s.stats().rejected.load(Ordering::Relaxed), 1);
    }
}
