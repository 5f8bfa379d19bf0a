//! Payload files: each record whose payload is above
//! [`INLINE_MAX_BYTES`](super::record::INLINE_MAX_BYTES) is kept in a file of its own,
//! `<queue dir>/payloads/<class rank>-<seq, 16 hex digits>`, holding its whole encoded value
//! (header with CRC, then the payload); sled keeps only the index entry that names it.
//!
//! # Invariants
//! - A file is written and fsynced, and the folder fsynced, before the sled batch holding its
//!   index entry is applied and flushed; so an index entry never names a missing file, except
//!   through damage (read as a corrupt record: counted, logged, removed).
//! - A file is deleted only after the batch removing its index entry (ack, eviction, CRC
//!   failure) was flushed; a crash in between leaves an orphan, which `sweep` at open removes.
//! - The folder is created 0700 and every file 0600 (created with that mode, never widened):
//!   queued inputs are camera images and people's corrections.

use super::record::{self, Class, RecordError, Seq};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file the queue creates.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of every folder the queue creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// A payload file that could not be written, read or removed, or whose bytes are not the
/// record its index names.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The stored bytes fail their checks.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The payload files of one queue.
#[derive(Debug)]
pub(crate) struct PayloadFiles {
    dir: PathBuf,
}

/// Creates `dir` (and missing parents) with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `path` empty with mode 0600 if it does not exist (for files another library
/// creates with the process's umask: sled's `db` and `conf`).
pub(crate) fn precreate_private_file(path: &Path) -> std::io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl PayloadFiles {
    /// The payload folder of the queue in `queue_dir`, created 0700 if missing.
    pub fn open(queue_dir: &Path) -> Result<Self, PayloadError> {
        let dir = queue_dir.join("payloads");
        create_private_dir(&dir).map_err(|source| PayloadError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The file of `(class, seq)`.
    pub fn path(&self, class: Class, seq: Seq) -> PathBuf {
        self.dir.join(format!("{}-{seq:016x}", class.rank()))
    }

    /// The record a file name stands for.
    fn parse_name(name: &str) -> Option<(Class, Seq)> {
        let (rank, seq) = name.split_once('-')?;
        let class = Class::from_rank(rank.parse().ok()?)?;
        (seq.len() == 16)
            .then(|| Seq::from_str_radix(seq, 16).ok())
            .flatten()
            .map(|s| (class, s))
    }

    /// Writes `encoded` as the file of `(class, seq)` (mode 0600) and fsyncs it. The folder
    /// still needs [`PayloadFiles::sync_dir`] before the index entry is flushed.
    pub fn write(&self, class: Class, seq: Seq, encoded: &[u8]) -> Result<(), PayloadError> {
        let path = self.path(class, seq);
        let err = |op, source| PayloadError::Io {
            op,
            path: path.clone(),
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| err("create", e))?;
        f.write_all(encoded).map_err(|e| err("write", e))?;
        f.sync_all().map_err(|e| err("fsync", e))
    }

    /// Fsyncs the folder, making created and deleted names durable.
    pub fn sync_dir(&self) -> Result<(), PayloadError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| PayloadError::Io {
                op: "fsync",
                path: self.dir.clone(),
                source,
            })
    }

    /// The bytes of `(class, seq)`'s file, at most `max` of them (a file longer than its
    /// record is damaged: reading `max + 1` shows it without reading a huge file whole).
    pub fn read(&self, class: Class, seq: Seq, max: usize) -> Result<Vec<u8>, PayloadError> {
        let path = self.path(class, seq);
        let mut buf = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut buf))
            .map_err(|source| PayloadError::Io {
                op: "read",
                path,
                source,
            })?;
        Ok(buf)
    }

    /// The payload of the record stored under `key` with index value `value`: from the value
    /// itself, or from its payload file, every check applied.
    pub fn load(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, PayloadError> {
        if !record::is_external(value) {
            return Ok(record::decode(key, value)?.payload.to_vec());
        }
        record::check_index(key, value)?;
        let (class, seq) = record::parse_key(key)?;
        let file = self.read(class, seq, record::held_len(value))?;
        Ok(record::decode_external(key, value, &file)?.payload.to_vec())
    }

    /// Deletes the file of `(class, seq)` if there is one.
    pub fn remove(&self, class: Class, seq: Seq) {
        let path = self.path(class, seq);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "queue: cannot delete a payload file; it is removed at the next start");
        }
    }

    /// Deletes every file in the folder that `indexed` does not claim (a crash between an
    /// index removal and the file's deletion, or a write whose batch never flushed), and any
    /// name that is not a payload file's. Returns the files and bytes removed.
    pub fn sweep(&self, indexed: impl Fn(Class, Seq) -> bool) -> Result<(u64, u64), PayloadError> {
        let list_err = |source| PayloadError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        };
        let (mut files, mut bytes) = (0, 0);
        for entry in std::fs::read_dir(&self.dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let keep = entry
                .file_name()
                .to_str()
                .and_then(Self::parse_name)
                .is_some_and(|(c, s)| indexed(c, s));
            if keep {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|source| PayloadError::Io {
                op: "delete",
                path,
                source,
            })?;
            files += 1;
            bytes += len;
        }
        if files > 0 {
            self.sync_dir()?;
        }
        Ok((files, bytes))
    }
}

/// Files under `dir` and their total bytes (apparent sizes; best effort): the queue's
/// footprint.
pub(crate) fn folder_size(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_named_by_record_and_swept_when_unclaimed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = PayloadFiles::open(tmp.path()).expect("open");
        p.write(Class::HardExample, 7, b"seven").expect("write");
        p.write(Class::Correction, 8, b"eight").expect("write");
        std::fs::write(tmp.path().join("payloads/stray.tmp"), b"x").expect("stray");
        p.sync_dir().expect("sync");
        let mode = |path: &Path| std::fs::metadata(path).expect("stat").permissions().mode();
        assert_eq!(mode(&tmp.path().join("payloads")) & 0o777, DIR_MODE);
        assert_eq!(mode(&p.path(Class::HardExample, 7)) & 0o777, FILE_MODE);
        assert_eq!(p.read(Class::HardExample, 7, 100).expect("read"), b"seven");
        assert_eq!(p.read(Class::HardExample, 7, 2).expect("read").len(), 3);
        let (files, bytes) = p
            .sweep(|c, s| (c, s) == (Class::Correction, 8))
            .expect("sweep");
        assert_eq!((files, bytes), (2, 6));
        assert!(p.read(Class::HardExample, 7, 100).is_err());
        assert_eq!(p.read(Class::Correction, 8, 100).expect("kept"), b"eight");
        p.remove(Class::Correction, 8);
        p.remove(Class::Correction, 8); // a missing file is not an error
        assert_eq!(folder_size(tmp.path()), (0, 0));
    }
}
