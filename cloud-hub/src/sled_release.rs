//! Closing a sled database so that it can be opened again at once: [`Released`], the last
//! field of every store that holds one (fleet, claims, rollouts, feedback).
//!
//! sled 0.34 releases its file lock (`<folder>/db`) only when its last handle to that file is
//! closed, and its thread pool (log writes, segment truncation, the flusher) may still hold
//! one for a moment after the last `Db` is dropped. Opening the database again in the same
//! process at once (an in-process hub restart, a test) could then fail as locked. Dropping a
//! [`Released`] waits until the file is unlocked (an exclusive `flock` poll), at most
//! [`RELEASE_PATIENCE`] (then a WARN).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long dropping a [`Released`] waits for sled's background work to close the file.
pub const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

/// Waits, when dropped, until the sled database in its folder is unlocked. Put it after the
/// sled handles (fields drop in declaration order); in a `Clone` store, behind an `Arc`, so
/// that the last clone waits.
#[derive(Debug)]
pub struct Released(PathBuf);

impl Released {
    /// For the sled database in folder `db_dir` (its lock file is `db_dir/db`).
    pub fn new(db_dir: &Path) -> Self {
        Self(db_dir.join("db"))
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        use rustix::fs::{FlockOperation, flock};
        let deadline = Instant::now() + RELEASE_PATIENCE;
        let Ok(file) = std::fs::File::open(&self.0) else {
            return;
        };
        loop {
            // Closing `file` releases the lock taken here.
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    tracing::warn!(file = %self.0.display(), error = %e, "a sled database is still locked after its store was closed");
                    return;
                }
            }
        }
    }
}
