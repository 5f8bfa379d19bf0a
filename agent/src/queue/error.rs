//! [`QueueError`]: everything the durable queue can answer instead of success.

use super::record::Class;
use std::path::PathBuf;

/// Why the queue did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The payload is larger than one record may be (or than the whole budget).
    #[error("record of {len} bytes is larger than the limit of {limit} bytes")]
    RecordTooLarge {
        /// Payload bytes offered.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The budget is full of records of higher priority: the offered record is the lowest
    /// priority and newest, so it is the one dropped (counted as `rejected`).
    #[error("no room for a {} record: the queue's budget is full of higher-priority records", .class.as_str())]
    NoRoom {
        /// The refused record's class.
        class: Class,
    },
    /// The record was evicted by a higher-priority record that arrived in the same write
    /// batch, before its flush; it was never accepted (counted as `evicted`).
    #[error("{} record evicted before it was flushed: the queue's budget is full", .class.as_str())]
    Evicted {
        /// The record's class.
        class: Class,
    },
    /// The writer has stopped (the queue was closed or its thread died).
    #[error("the queue is closed")]
    Closed,
    /// sled failed to apply or flush a batch; the records of that batch were not accepted.
    #[error("queue storage failed to {op}: {message}")]
    Storage {
        /// What was being done.
        op: &'static str,
        /// sled's error.
        message: String,
    },
    /// Another process holds the database's lock (a second agent on the same `queue.dir`).
    #[error("the queue at {} is in use by another process: {message}", .path.display())]
    Locked {
        /// The queue directory.
        path: PathBuf,
        /// sled's message.
        message: String,
    },
    /// The database cannot be opened for a reason that is not corruption (permissions, a full
    /// disk): nothing was moved aside.
    #[error("cannot open the queue at {}: {message}", .path.display())]
    Open {
        /// The queue directory.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The database was corrupt and could not be moved aside to start a fresh one.
    #[error("the queue at {} is corrupt ({reason}) and cannot be moved aside: {message}", .path.display())]
    MoveAside {
        /// The queue directory.
        path: PathBuf,
        /// Why it was considered corrupt.
        reason: String,
        /// The rename error.
        message: String,
    },
}

impl QueueError {
    pub(crate) fn storage(op: &'static str, e: &sled::Error) -> Self {
        Self::Storage {
            op,
            message: e.to_string(),
        }
    }
}
