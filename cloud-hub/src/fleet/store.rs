//! Fleet state in sled (`fleet.db` under `[fleet] dir`): per device, whether it is online,
//! when it was last heard from, its last status (agent version, models, execution providers)
//! and its last telemetry (counters). Values are JSON, keyed by device name.
//!
//! The state is derived (retained status comes back from the broker, telemetry every few
//! seconds), so a database that will not open is moved aside (`fleet.db.corrupt-<secs>`),
//! reported at ERROR, and a fresh one started; sled 0.34 panics on some corrupted files, hence
//! `catch_unwind`. A database locked by another hub is an error.

use serde::{Deserialize, Serialize};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use tandem_shared::mqtt::{Status, Telemetry};

/// Why the fleet store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled refused (e.g. another hub holds the database).
    #[error("fleet database {path}: {message}")]
    Open {
        /// The database folder.
        path: PathBuf,
        /// sled's error.
        message: String,
    },
    /// A read or write failed.
    #[error("fleet database: {0}")]
    Db(String),
}

/// What the hub knows about one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The device (certificate CN).
    pub device: String,
    /// Its last status said online (and no `offline` came since).
    pub online: bool,
    /// When the hub last received anything from it, milliseconds since the Unix epoch (hub
    /// clock).
    pub last_seen_ms: u64,
    /// Its last status message.
    pub status: Option<Status>,
    /// Its last telemetry.
    pub telemetry: Option<Telemetry>,
    /// Messages from it the hub could not read (malformed, another version).
    pub unreadable: u64,
    /// Why the last unreadable message was refused.
    pub last_error: Option<String>,
}

impl DeviceState {
    fn new(device: &str) -> Self {
        Self {
            device: device.to_string(),
            online: false,
            last_seen_ms: 0,
            status: None,
            telemetry: None,
            unreadable: 0,
            last_error: None,
        }
    }
}

/// The fleet database.
#[derive(Debug, Clone)]
pub struct FleetStore {
    db: sled::Db,
}

fn open_once(path: &Path, cache_bytes: u64) -> Result<sled::Db, (bool, String)> {
    let cfg = sled::Config::new().path(path).cache_capacity(cache_bytes);
    match catch_unwind(AssertUnwindSafe(|| cfg.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(e))) => Err((false, e.to_string())),
        Ok(Err(e)) => Err((true, e.to_string())),
        Err(p) => Err((
            true,
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "sled panicked".into()),
        )),
    }
}

impl FleetStore {
    /// Opens (or creates) `dir/fleet.db` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.join("fleet.db");
        let err = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db = match open_once(&path, cache_bytes) {
            Ok(db) => db,
            Err((false, message)) => return Err(err(message)),
            Err((true, reason)) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = path.with_extension(format!("db.corrupt-{secs}"));
                std::fs::rename(&path, &aside).map_err(|e| err(e.to_string()))?;
                tracing::error!(path = %path.display(), moved_to = %aside.display(), %reason, "fleet database unusable: moved aside, starting empty (state comes back from status and telemetry)");
                open_once(&path, cache_bytes).map_err(|(_, m)| err(m))?
            }
        };
        Ok(Self { db })
    }

    /// Applies `f` to a device's state (created when first heard of) and stores it.
    pub fn update(
        &self,
        device: &str,
        f: impl FnOnce(&mut DeviceState),
    ) -> Result<DeviceState, StoreError> {
        let mut state = self
            .get(device)?
            .unwrap_or_else(|| DeviceState::new(device));
        f(&mut state);
        let bytes = serde_json::to_vec(&state).map_err(|e| StoreError::Db(e.to_string()))?;
        self.db
            .insert(device.as_bytes(), bytes)
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(state)
    }

    /// One device.
    pub fn get(&self, device: &str) -> Result<Option<DeviceState>, StoreError> {
        match self.db.get(device.as_bytes()) {
            Ok(Some(v)) => Ok(serde_json::from_slice(&v).ok()),
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Db(e.to_string())),
        }
    }

    /// Every device, by name.
    pub fn list(&self) -> Result<Vec<DeviceState>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.iter() {
            let (_, v) = kv.map_err(|e| StoreError::Db(e.to_string()))?;
            if let Ok(s) = serde_json::from_slice(&v) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Writes what is buffered to disk (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!(error = %e, "fleet database flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_state_across_reopen_and_survives_damage() {
        let dir = std::env::temp_dir().join(format!("tandem-fleet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = FleetStore::open(&dir, 1 << 20).expect("open");
            s.update("cam-01", |d| {
                d.online = true;
                d.last_seen_ms = 5;
            })
            .expect("update");
            s.flush();
        }
        let s = FleetStore::open(&dir, 1 << 20).expect("reopen");
        let d = s.get("cam-01").expect("get").expect("present");
        assert!(d.online && d.last_seen_ms == 5);
        assert_eq!(s.list().expect("list").len(), 1);
        drop(s);
        // Damaged files: opened (sled may drop what it cannot read, or panic and have the
        // database moved aside), never a crash.
        let db = dir.join("fleet.db");
        for e in std::fs::read_dir(&db).expect("ls").filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with("snap.") {
                std::fs::remove_file(e.path()).expect("rm snapshot");
            }
        }
        let mut bytes = std::fs::read(db.join("db")).expect("read");
        for b in bytes.iter_mut().take(64) {
            *b ^= 0x5a;
        }
        std::fs::write(db.join("db"), bytes).expect("write");
        let s = FleetStore::open(&dir, 1 << 20).expect("opens");
        s.list().expect("list");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
