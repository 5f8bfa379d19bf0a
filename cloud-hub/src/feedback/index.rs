//! The feedback store's secondary trees, written in one sled transaction with each record:
//! - `arrivals`: arrival number (u64 BE, increasing in commit order) → `received_ms` (u64 BE)
//!   and the record's key: the cursor order of listing and export, and the eviction order;
//! - `inputs`: input digest (32 bytes) + arrival → record key: the records of one input
//!   (duplicates collapse on it; its file is deleted when the last one goes);
//! - `requests`: device + request id (length-prefixed) + arrival → record key: an answer and
//!   the corrections that name its request id, linked.
//!
//! Arrival numbers come from sled's `generate_id` under the store's write lock, so a reader
//! paging by arrival never sees a later number before an earlier one is committed.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// Why an index write failed or found the record already there.
#[derive(Debug, thiserror::Error)]
pub(super) enum IndexError {
    /// The key was already present (a redelivery).
    #[error("already stored")]
    Present,
    /// sled.
    #[error("{0}")]
    Db(String),
}

/// The three trees beside `records`.
#[derive(Debug, Clone)]
pub(super) struct Index {
    pub(super) arrivals: sled::Tree,
    pub(super) inputs: sled::Tree,
    pub(super) requests: sled::Tree,
    /// The cloud model's answers to inputs delivered without one: digest ‖ model → JSON
    /// (`super::teacher`).
    pub(super) teacher: sled::Tree,
    /// Small state: the teacher's cursor.
    pub(super) state: sled::Tree,
}

/// What one record adds to the index.
#[derive(Debug, Clone)]
pub(super) struct Entry<'a> {
    /// The record's key (device, epoch, seq).
    pub(super) key: &'a [u8],
    /// Its JSON.
    pub(super) value: &'a [u8],
    /// Its arrival number.
    pub(super) arrival: u64,
    /// When stored (ms since the Unix epoch).
    pub(super) received_ms: u64,
    /// Its input's sha256, for an example.
    pub(super) digest: Option<[u8; 32]>,
    /// (device, request id), for an example.
    pub(super) request: Option<(&'a str, &'a str)>,
}

/// `device` and `request_id`, length-prefixed: the prefix of a request's `requests` keys.
pub(super) fn request_prefix(device: &str, request_id: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + device.len() + request_id.len());
    for s in [device, request_id] {
        let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        v.extend_from_slice(&(b.len() as u16).to_be_bytes());
        v.extend_from_slice(b);
    }
    v
}

fn with_arrival(prefix: &[u8], arrival: u64) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(&arrival.to_be_bytes());
    v
}

/// An `arrivals` value: received_ms, then the record's key.
pub(super) fn arrival_value(received_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut v = received_ms.to_be_bytes().to_vec();
    v.extend_from_slice(key);
    v
}

/// (received_ms, record key) of an `arrivals` value.
pub(super) fn parse_arrival(v: &[u8]) -> Option<(u64, &[u8])> {
    let (ms, key) = v.split_at_checked(8)?;
    Some((u64::from_be_bytes(ms.try_into().ok()?), key))
}

/// The arrival number at the end of an `inputs` or `requests` key.
pub(super) fn trailing_arrival(k: &[u8]) -> Option<u64> {
    let tail = k.get(k.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

impl Index {
    pub(super) fn open(db: &sled::Db) -> sled::Result<Self> {
        Ok(Self {
            arrivals: db.open_tree("arrivals")?,
            inputs: db.open_tree("inputs")?,
            requests: db.open_tree("requests")?,
            teacher: db.open_tree("teacher")?,
            state: db.open_tree("state")?,
        })
    }

    /// Inserts the record and its index entries, or [`IndexError::Present`] when its key is
    /// already in `records` (nothing written then) unless `replace` (numbering a record stored
    /// before arrivals were).
    pub(super) fn insert(
        &self,
        records: &sled::Tree,
        e: &Entry<'_>,
        replace: bool,
    ) -> Result<(), IndexError> {
        let arrival = arrival_value(e.received_ms, e.key);
        let input = e.digest.map(|d| with_arrival(&d, e.arrival));
        let request = e
            .request
            .map(|(d, r)| with_arrival(&request_prefix(d, r), e.arrival));
        let r = (records, &self.arrivals, &self.inputs, &self.requests).transaction(
            |(rec, arr, inp, req)| {
                if !replace && rec.get(e.key)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                rec.insert(e.key, e.value)?;
                arr.insert(&e.arrival.to_be_bytes(), arrival.as_slice())?;
                if let Some(k) = &input {
                    inp.insert(k.as_slice(), e.key)?;
                }
                if let Some(k) = &request {
                    req.insert(k.as_slice(), e.key)?;
                }
                Ok(())
            },
        );
        match r {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => Err(IndexError::Present),
            Err(TransactionError::Storage(e)) => Err(IndexError::Db(e.to_string())),
        }
    }

    /// Removes a record and its index entries in one transaction.
    pub(super) fn remove(&self, records: &sled::Tree, e: &Entry<'_>) -> Result<(), IndexError> {
        let input = e.digest.map(|d| with_arrival(&d, e.arrival));
        let request = e
            .request
            .map(|(d, r)| with_arrival(&request_prefix(d, r), e.arrival));
        (records, &self.arrivals, &self.inputs, &self.requests)
            .transaction(|(rec, arr, inp, req)| {
                rec.remove(e.key)?;
                arr.remove(&e.arrival.to_be_bytes())?;
                if let Some(k) = &input {
                    inp.remove(k.as_slice())?;
                }
                if let Some(k) = &request {
                    req.remove(k.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| IndexError::Db(format!("{e:?}")))
    }

    /// How many records name the input with this digest.
    pub(super) fn copies(&self, digest: &[u8; 32]) -> u64 {
        self.inputs.scan_prefix(digest).count() as u64
    }

    /// The keys of every record of one request (its answer and its corrections), oldest first.
    pub(super) fn request_records(&self, device: &str, request_id: &str) -> Vec<(u64, Vec<u8>)> {
        self.requests
            .scan_prefix(request_prefix(device, request_id))
            .filter_map(Result::ok)
            .filter_map(|(k, v)| Some((trailing_arrival(&k)?, v.to_vec())))
            .collect()
    }
}
