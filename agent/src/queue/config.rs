//! `[queue]`: where the durable queue lives, its byte budget, sled's cache and flush batching.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[queue]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Directory of the queue's sled database, relative to the config file. A database that
    /// will not open is renamed `<dir>.corrupt-<unix seconds>` and a fresh one started.
    pub dir: PathBuf,
    /// Byte budget: encoded records (payload + 18-byte header). When full, the lowest-priority,
    /// oldest records are evicted (counted, logged). The folder on disk stays within 8 times
    /// this plus 16 MiB: payloads above 2 KiB live in files deleted with their record (1×);
    /// sled's log of smaller records takes up to ~7× their bytes.
    pub max_bytes: u64,
    /// sled's page cache, in bytes. sled's default is 1 GiB, far too much for an edge device;
    /// the queue reads mostly its head and tail, so a few MiB suffice.
    pub cache_bytes: u64,
    /// Longest the writer waits after the first record of a batch for more to share its flush,
    /// in milliseconds. 0: flush what is waiting at once (concurrent producers still share).
    pub flush_interval_ms: u64,
    /// Most records one flush covers.
    pub flush_max_records: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("queue"),
            max_bytes: 64 * 1024 * 1024,
            cache_bytes: 4 * 1024 * 1024,
            flush_interval_ms: 0,
            flush_max_records: 512,
        }
    }
}

impl QueueConfig {
    /// Every problem with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.dir.as_os_str().is_empty() {
            p.push("queue.dir must not be empty".into());
        }
        if self.max_bytes < 64 * 1024 {
            p.push("queue.max_bytes must be at least 65536".into());
        }
        if self.cache_bytes < 256 * 1024 {
            p.push("queue.cache_bytes must be at least 262144".into());
        }
        if self.flush_interval_ms > 1000 {
            p.push("queue.flush_interval_ms must be at most 1000".into());
        }
        if !(1..=65_536).contains(&self.flush_max_records) {
            p.push("queue.flush_max_records must be between 1 and 65536".into());
        }
        p
    }
}
