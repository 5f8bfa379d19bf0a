//! Opening the queue's sled database: a small cache, the persisted [`State`] (or a new epoch),
//! and recovery from a database that will not open.
//!
//! # Invariants
//! - Corruption is never fatal. sled 0.34 panics on some corrupted files instead of returning
//!   an error, so opening and reading the state run under `catch_unwind`. A panic, a sled
//!   `Corruption`/`Unsupported`/`ReportableBug` error, or records without a readable state make
//!   the directory be renamed `<dir>.corrupt-<unix seconds>`, reported at ERROR with what was
//!   lost, and a fresh queue (new epoch) created in its place.
//! - Errors that are not about the files' content (another process holds the lock, permission
//!   denied, disk full) are returned and nothing is moved: a second agent on the same directory
//!   must not destroy the first one's queue.
//! - `next_seq` after opening is above every record present, even if the state lagged.
//! - sled's state behind the watermark (`watermark.rs`) means flushed batches were lost: the
//!   missing acknowledged records are counted (`State::lost`) and logged at ERROR, and a new
//!   epoch starts with `next_seq` past every seq handed out, so no `(epoch, seq)` is reused.
//!   The same when the mark is unreadable (a loss cannot be ruled out) or the database had to
//!   be moved aside (the mark then counts what it held).
//! - Payload files no index entry names are deleted (`payload.rs`).
//! - The folder is created 0700; sled's `db` and `conf` are created 0600 before sled opens
//!   them (sled creates its other files under the process umask, which the agent sets to 077).

use super::contract::Recovery;
use super::error::QueueError;
use super::meta::State;
use super::payload::{self, PayloadFiles};
use super::record::{self, Class, STATE_KEY};
use super::watermark::{self, Found, Mark, Verdict, Watermark};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An open database and its state.
#[derive(Debug)]
pub(crate) struct Opened {
    pub db: sled::Db,
    pub state: State,
    pub recovery: Option<Recovery>,
    pub files: PayloadFiles,
    pub mark: Watermark,
}

/// Why a first attempt did not give a usable queue.
enum Failure {
    /// The files are bad: move them aside.
    Corrupt {
        reason: String,
        records: Option<u64>,
    },
    /// Not about the files' content: give up, move nothing.
    Fatal(QueueError),
}

/// How long a lock held by someone else is waited for. sled 0.34 finishes some writes on its
/// own background threads after the last `Db` handle is dropped, so reopening at once in the
/// same process can find the lock still held for a few milliseconds.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens (or creates) the queue in `dir` with a sled cache of `cache_bytes`.
pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Opened, QueueError> {
    let (db, state, recovery) = open_db(dir, cache_bytes)?;
    finish(dir, db, state, recovery)
}

/// Checks sled's state against the watermark (a new epoch if flushed batches were lost),
/// writes the mark, and removes payload files nothing names.
fn finish(
    dir: &Path,
    db: sled::Db,
    mut state: State,
    recovery: Option<MovedAside>,
) -> Result<Opened, QueueError> {
    let io = |e: &dyn std::fmt::Display| QueueError::Open {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let files = PayloadFiles::open(dir).map_err(|e| io(&e))?;
    let (mut mark, found) = Watermark::open(dir).map_err(|e| io(&e))?;
    let (verdict, recovery) = match recovery {
        // A fresh database: what the old one's mark held is what was lost; seqs go on past
        // the old ones, so none repeats on this device even across the epochs.
        Some((r, Found::Mark(m))) => (
            Verdict::RolledBack {
                lost: m.live,
                next_seq: m.next_seq,
            },
            Some(r),
        ),
        Some((r, _)) => (Verdict::Consistent, Some(r)),
        None => (watermark::judge(&state, found), None),
    };
    if verdict != Verdict::Consistent {
        let old = state.epoch;
        let lost = match verdict {
            Verdict::RolledBack { lost, next_seq } => {
                state.next_seq = state.next_seq.max(next_seq);
                lost
            }
            _ => 0,
        };
        state.lost += lost;
        state.epoch = new_epoch();
        db.insert(STATE_KEY, state.encode())
            .and_then(|_| db.flush())
            .map_err(|e| io(&e))?;
        if recovery.is_none() {
            tracing::error!(
                lost,
                lost_total = state.lost,
                old_epoch = format_args!("{old:016x}"),
                epoch = format_args!("{:016x}", state.epoch),
                next_seq = state.next_seq,
                unknown = verdict == Verdict::Unknown,
                "queue: records the queue had accepted are missing (its files were damaged); they will not be delivered; a new epoch started"
            );
        }
    }
    mark.write(&Mark::of(&state)).map_err(|e| io(&e))?;
    let (orphans, orphan_bytes) = files
        .sweep(|c, s| db.contains_key(record::key(c, s)).unwrap_or(true))
        .map_err(|e| io(&e))?;
    if orphans > 0 {
        tracing::info!(
            files = orphans,
            bytes = orphan_bytes,
            "queue: removed payload files no record names (left by a crash)"
        );
    }
    Ok(Opened {
        db,
        state,
        recovery,
        files,
        mark,
    })
}

/// A database moved aside, with the watermark it held.
type MovedAside = (Recovery, Found);

/// Opens sled, moving a database that will not open aside (with the mark it held).
fn open_db(
    dir: &Path,
    cache_bytes: u64,
) -> Result<(sled::Db, State, Option<MovedAside>), QueueError> {
    let (reason, lost_records) = match attempt_waiting(dir, cache_bytes) {
        Ok((db, state)) => return Ok((db, state, None)),
        Err(Failure::Fatal(e)) => return Err(e),
        Err(Failure::Corrupt { reason, records }) => (reason, records),
    };
    let found = watermark::peek(dir);
    let lost_records = lost_records.or(match found {
        Found::Mark(m) => Some(m.live),
        _ => None,
    });
    let (lost_files, lost_bytes) = payload::folder_size(dir);
    let moved_to = move_aside(dir).map_err(|e| QueueError::MoveAside {
        path: dir.to_path_buf(),
        reason: reason.clone(),
        message: e.to_string(),
    })?;
    tracing::error!(
        dir = %dir.display(),
        moved_to = %moved_to.display(),
        reason = %reason,
        lost_files,
        lost_bytes,
        lost_records = lost_records.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
        "queue database unusable: moved aside and a fresh queue started; its records will not be delivered"
    );
    let (db, state) = attempt(dir, cache_bytes).map_err(|f| match f {
        Failure::Fatal(e) => e,
        Failure::Corrupt { reason, .. } => QueueError::Open {
            path: dir.to_path_buf(),
            message: format!("a fresh database is unusable too: {reason}"),
        },
    })?;
    let recovery = Recovery {
        moved_to,
        reason,
        lost_files,
        lost_bytes,
        lost_records,
    };
    Ok((db, state, Some((recovery, found))))
}

fn attempt_waiting(dir: &Path, cache_bytes: u64) -> Result<(sled::Db, State), Failure> {
    let start = Instant::now();
    loop {
        match attempt(dir, cache_bytes) {
            Err(Failure::Fatal(QueueError::Locked { .. })) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn attempt(dir: &Path, cache_bytes: u64) -> Result<(sled::Db, State), Failure> {
    prepare(dir).map_err(|e| {
        Failure::Fatal(QueueError::Open {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })
    })?;
    // sled's default mode (LowSpace): HighThroughput measured no faster here (within the
    // noise of `tandem-bench queue`) and lets the files grow more.
    let config = sled::Config::new().path(dir).cache_capacity(cache_bytes);
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<_, Failure> {
        let db = config.open().map_err(|e| classify(dir, e))?;
        let state = load_state(&db)?;
        Ok((db, state))
    }));
    match outcome {
        Ok(r) => r,
        Err(panic) => Err(Failure::Corrupt {
            reason: format!("sled panicked while opening: {}", panic_message(&*panic)),
            records: None,
        }),
    }
}

/// Creates the folder 0700 (narrowing one an older build made wider) and sled's `db` and
/// `conf` 0600, before sled creates them with the process's umask.
fn prepare(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    payload::create_private_dir(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::info!(dir = %dir.display(), mode = format_args!("{mode:o}"), "queue: folder was readable by others; set to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(payload::DIR_MODE))?;
    }
    payload::create_private_dir(&dir.join("blobs"))?;
    for f in ["db", "conf"] {
        payload::precreate_private_file(&dir.join(f))?;
    }
    Ok(())
}

fn classify(dir: &Path, e: sled::Error) -> Failure {
    match e {
        sled::Error::Io(io) => {
            let message = io.to_string();
            if message.contains("could not acquire lock") {
                Failure::Fatal(QueueError::Locked {
                    path: dir.to_path_buf(),
                    message,
                })
            } else if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) {
                Failure::Corrupt {
                    reason: format!("sled: {message}"),
                    records: None,
                }
            } else {
                Failure::Fatal(QueueError::Open {
                    path: dir.to_path_buf(),
                    message,
                })
            }
        }
        other => Failure::Corrupt {
            reason: format!("sled: {other}"),
            records: None,
        },
    }
}

/// Reads the state, or creates a new queue's in an empty database.
fn load_state(db: &sled::Db) -> Result<State, Failure> {
    let unusable = |reason: String| Failure::Corrupt {
        records: Some(db.range(..STATE_KEY).count() as u64),
        reason,
    };
    let stored = db
        .get(STATE_KEY)
        .map_err(|e| unusable(format!("reading the queue state: {e}")))?;
    let mut state = match stored {
        Some(v) => State::decode(&v).map_err(|e| unusable(e.to_string()))?,
        None if db.range(..STATE_KEY).next().is_none() => {
            let state = State::new(new_epoch());
            db.insert(STATE_KEY, state.encode())
                .and_then(|_| db.flush())
                .map_err(|e| unusable(format!("writing a new queue state: {e}")))?;
            tracing::info!(
                epoch = format_args!("{:016x}", state.epoch),
                "created a new queue"
            );
            return Ok(state);
        }
        None => return Err(unusable("records without a queue state".into())),
    };
    if state.epoch == 0 {
        return Err(unusable("queue state has epoch 0".into()));
    }
    for class in Class::ALL {
        let last = db
            .range(record::key(class, 0)..=record::key(class, u64::MAX))
            .next_back()
            .transpose()
            .map_err(|e| unusable(format!("reading the last record: {e}")))?;
        if let Some((k, _)) = last
            && let Ok((_, seq)) = record::parse_key(&k)
            && seq >= state.next_seq
        {
            tracing::warn!(
                class = class.as_str(),
                seq,
                next_seq = state.next_seq,
                "queue state behind its records; moving next_seq past them"
            );
            state.next_seq = seq.saturating_add(1);
        }
    }
    Ok(state)
}

/// A random non-zero epoch (from the OS's generator; the clock if that fails).
fn new_epoch() -> u64 {
    loop {
        let e = getrandom::u64().unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        });
        if e != 0 {
            return e;
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Renames `dir` to `<dir>.corrupt-<unix seconds>[-n]`.
fn move_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let base = format!("{}.corrupt-{secs}", dir.display());
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(dir, &target)?;
    Ok(target)
}
