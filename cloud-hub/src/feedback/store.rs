//! The feedback store: one sled tree keyed by the delivery's identity
//! ([`tandem_shared::dedup::DeliveryKey`]: device, epoch, seq) whose values are the records'
//! metadata (JSON), and the examples' inputs as files named by their sha256 under `inputs/`.
//!
//! # Invariants
//! - A delivery is stored at most once, even when two streams of one device deliver it at the
//!   same moment: the index entry is inserted in a sled transaction that finds the key absent
//!   (with its arrival, input and request entries: `super::index`), and whoever finds it
//!   present reports a duplicate (acknowledged again and counted).
//! - [`Store::put`] writes one record as its frame arrives (its input file fsynced before its
//!   index entry exists); [`Store::commit`] makes every record put so far durable (index
//!   flushed). The hub acknowledges a record only after a commit that followed its put (or, for
//!   a duplicate, the other put): nothing acknowledged can be lost to a crash.
//! - A payload that does not decode is kept as `rejected` (with the reason) and acknowledged:
//!   sending it again would not help, and it is counted and logged rather than lost silently.
//! - The device always comes from the connection's certificate, never from a payload.
//! - Each device stores at most its quota of new bytes per window ([`super::quota`]).
//! - Files are created 0600 and folders 0700 (the store holds the fleet's inputs).
//! - Telemetry delivered late (snapshots a device queued while its broker was unreachable)
//!   goes to the [`TelemetrySink`] (the fleet state) once, when first stored and durable; a
//!   duplicate does not.

use super::quota::{FeedbackConfig, OverQuota, Quota};
use crate::sled_release::Released;
use crate::sled_store::SledError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    /// The device is over its byte quota ([`FeedbackConfig`]): nothing more is stored from it
    /// until its window ends.
    #[error(
        "device {device} is over its feedback quota ({used} of {quota} bytes stored in this window): retry in {retry_after_ms} ms"
    )]
    OverQuota {
        /// The device.
        device: String,
        /// Bytes stored in its current window.
        used: u64,
        /// The quota.
        quota: u64,
        /// Milliseconds until its window ends.
        retry_after_ms: u64,
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
    /// Its arrival number: increasing in the order records were committed (the listing's
    /// cursor); 0 in records stored before arrivals were numbered, until the store is opened.
    #[serde(default)]
    pub arrival: u64,
    /// An example's input digest (sha256, hex): the same input delivered twice has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
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
    /// Records evicted by the retention limits (`feedback.max_records`, `max_age_ms`).
    pub evicted: AtomicU64,
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

/// What [`Store::put`] did with one delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Put {
    /// New, duplicate or rejected.
    pub outcome: Ingested,
    /// A new telemetry snapshot, to hand to [`Store::commit`] (only when a sink is set).
    pub telemetry: Option<serde_json::Value>,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    records: sled::Tree,
    db: sled::Db,
    stats: FeedbackStats,
    telemetry_sink: Sink,
    quota: Quota,
    pub(super) cfg: FeedbackConfig,
    pub(super) index: super::index::Index,
    /// Held while records are added or evicted: arrival numbers commit in order, and an input
    /// file is never deleted between a writer seeing it and naming it.
    pub(super) writer: std::sync::Mutex<()>,
    /// Records held (kept in step with `records` under `writer`).
    pub(super) held: AtomicU64,
    /// Last: dropped after `records` and `db`, it waits until sled unlocked the index
    /// (`crate::sled_release`; reopening at once could otherwise fail as `Locked`).
    _released: std::sync::Arc<Released>,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Creates `dir` (and its parents) and makes it 0700.
fn private_dir(dir: &Path) -> Result<(), FeedbackError> {
    let io = |source| FeedbackError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
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
        private_dir(dir)?;
        private_dir(&dir.join("inputs"))?;
        let index = dir.join("index");
        private_dir(&index)?;
        let db_err = |e: sled::Error| FeedbackError::Db {
            path: index.clone(),
            message: e.to_string(),
        };
        let (db, released) = crate::sled_store::open(&index, 32 << 20).map_err(|e| match e {
            SledError::Locked(_) => FeedbackError::Locked {
                path: dir.to_path_buf(),
            },
            e => FeedbackError::Db {
                path: index.clone(),
                message: e.to_string(),
            },
        })?;
        let records = db.open_tree("records").map_err(db_err)?;
        let idx = super::index::Index::open(&db).map_err(db_err)?;
        let store = Self {
            dir: dir.to_path_buf(),
            held: AtomicU64::new(records.len() as u64),
            records,
            db,
            stats: FeedbackStats::default(),
            telemetry_sink: Sink(std::sync::OnceLock::new()),
            quota: Quota::new(FeedbackConfig::default()),
            cfg: FeedbackConfig::default(),
            index: idx,
            writer: std::sync::Mutex::new(()),
            _released: released,
        };
        store.number_old_records()?;
        Ok(store)
    }

    /// Applies `[feedback]` (the per-device quota; [`FeedbackConfig::default`] until called).
    pub fn with_config(mut self, cfg: FeedbackConfig) -> Self {
        self.quota = Quota::new(cfg);
        self.cfg = cfg;
        self
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

    /// Records held now (all kinds; kept in step as records are added and evicted).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
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

    /// Writes an input file named by its digest unless it is there; (its name, its digest).
    pub(super) fn write_input(
        &self,
        kind: &str,
        bytes: &[u8],
    ) -> Result<(String, [u8; 32]), FeedbackError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let name = format!("inputs/{}.{}", hex::encode(digest), extension(kind, bytes));
        let path = self.dir.join(&name);
        if path.is_file() {
            return Ok((name, digest));
        }
        // A name of its own: two streams may write the same content at once.
        let tmp = self.dir.join(format!(
            "{name}.{}-{}.part",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |source| FeedbackError::Io {
            path: tmp.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok((name, digest))
    }

    /// Stores a batch of deliveries from `device` — `(epoch, seq, payload)` each — and returns
    /// once they are durable ([`Store::put`] each, then [`Store::commit`]); duplicates are
    /// recognised and not stored again.
    pub fn ingest(
        &self,
        device: &str,
        batch: &[(u64, u64, &[u8])],
    ) -> Result<Vec<Ingested>, FeedbackError> {
        let mut out = Vec::with_capacity(batch.len());
        let mut telemetry = Vec::new();
        for &(epoch, seq, payload) in batch {
            let put = self.put(device, epoch, seq, payload)?;
            out.push(put.outcome);
            telemetry.extend(put.telemetry);
        }
        self.commit(device, &telemetry)?;
        Ok(out)
    }

    /// Makes every record put so far durable (the index flushed), then hands `telemetry` (the
    /// snapshots [`Store::put`] returned for `device`) to the sink.
    pub fn commit(
        &self,
        device: &str,
        telemetry: &[serde_json::Value],
    ) -> Result<(), FeedbackError> {
        self.db.flush().map_err(|e| self.db_err(e))?;
        self.enforce_retention(now_ms())?;
        if let Some(sink) = self.telemetry_sink.0.get() {
            for v in telemetry {
                sink(device, v);
            }
        }
        Ok(())
    }

    /// The records tree (device, epoch, seq → record JSON).
    pub(super) fn records_tree(&self) -> &sled::Tree {
        &self.records
    }

    /// Flushes the index to disk.
    pub(super) fn flush_index(&self) -> Result<(), FeedbackError> {
        self.db.flush().map_err(|e| self.db_err(e)).map(|_| ())
    }

    /// A new arrival number (from 1; increasing); call under `writer`.
    pub(super) fn next_arrival(&self) -> Result<u64, FeedbackError> {
        Ok(self.db.generate_id().map_err(|e| self.db_err(e))? + 1)
    }

    pub(super) fn db_err(&self, e: impl std::fmt::Display) -> FeedbackError {
        FeedbackError::Db {
            path: self.dir.join("index"),
            message: e.to_string(),
        }
    }

    /// Stores one delivery from `device` as its frame arrives: its input file (written and
    /// fsynced), then its index entry, inserted only where the key is absent. Durable after the
    /// next [`Store::commit`]. Refused with [`FeedbackError::OverQuota`] (nothing stored) when
    /// a new record would take the device over its quota; a duplicate is never refused.
    pub fn put(
        &self,
        device: &str,
        epoch: u64,
        seq: u64,
        payload: &[u8],
    ) -> Result<Put, FeedbackError> {
        let key = DeliveryKey {
            device: device.to_string(),
            epoch,
            seq,
        }
        .to_bytes();
        let duplicate = Put {
            outcome: Ingested::Duplicate,
            telemetry: None,
        };
        if self
            .records
            .contains_key(&key)
            .map_err(|e| self.db_err(e))?
        {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(duplicate);
        }
        let bytes = payload.len() as u64;
        self.quota
            .reserve(device, bytes, now_ms())
            .map_err(|o: OverQuota| FeedbackError::OverQuota {
                device: device.to_string(),
                used: o.used,
                quota: o.quota,
                retry_after_ms: o.retry_after_ms,
            })?;
        let put = self.put_new(device, epoch, seq, key, payload);
        match &put {
            Ok(p) if p.outcome == Ingested::Duplicate => self.quota.release(device, bytes),
            Err(_) => self.quota.release(device, bytes),
            Ok(_) => {}
        }
        let counter = match put.as_ref().map(|p| p.outcome) {
            Ok(Ingested::New) => &self.stats.stored,
            Ok(Ingested::Rejected) => &self.stats.rejected,
            Ok(Ingested::Duplicate) => &self.stats.duplicates,
            Err(_) => return put,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        put
    }

    fn put_new(
        &self,
        device: &str,
        epoch: u64,
        seq: u64,
        key: Vec<u8>,
        payload: &[u8],
    ) -> Result<Put, FeedbackError> {
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
            arrival: 0,
            digest: None,
        };
        let mut telemetry = None;
        let mut input = None;
        let outcome = match record::decode(payload) {
            Ok(Record::Example { meta, input: bytes }) => {
                let (name, digest) = self.write_input(&meta.input_kind, &bytes)?;
                rec.input = Some(name);
                rec.digest = Some(hex::encode(digest));
                input = Some((digest, bytes));
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
                if self.telemetry_sink.0.get().is_some() {
                    telemetry = Some(v.clone());
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
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(name), Some((_, bytes)), Some(ex)) = (&rec.input, &input, &rec.example)
            && !self.dir.join(name).is_file()
        {
            // Evicted between the write above and this lock: written again.
            self.write_input(&ex.input_kind, bytes)?;
        }
        rec.arrival = self.next_arrival()?;
        let value = serde_json::to_vec(&rec).map_err(|e| self.db_err(e))?;
        let entry = super::index::Entry {
            key: &key,
            value: &value,
            arrival: rec.arrival,
            received_ms: rec.received_ms,
            digest: input.as_ref().map(|(d, _)| *d),
            request: rec
                .example
                .as_ref()
                .map(|ex| (device, ex.request_id.as_str())),
        };
        // The one place a key becomes present: of two overlapping redeliveries, one wins.
        Ok(match self.index.insert(&self.records, &entry, false) {
            Ok(()) => {
                self.held.fetch_add(1, Ordering::Relaxed);
                Put { outcome, telemetry }
            }
            Err(super::index::IndexError::Present) => Put {
                outcome: Ingested::Duplicate,
                telemetry: None,
            },
            Err(super::index::IndexError::Db(e)) => return Err(self.db_err(e)),
        })
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
