//! Fleet state in sled (`fleet.db` under `[fleet] dir`): per device, whether it is online,
//! when it was last heard from, its last status (agent version, models, execution providers)
//! and its last telemetry (counters). Values are JSON, keyed by device name.
//!
//! Telemetry comes two ways: live over MQTT, and late through the device's durable queue
//! (snapshots taken while its broker was unreachable, delivered over QUIC and stored by the
//! feedback store, which hands each new one here once). Both go through
//! [`DeviceState::take_telemetry`]: `last_seen_ms` (hub clock) only moves forward, and a sample
//! replaces the kept one only when it is not older by the device's clock (`ts_ms`, then
//! `seq`), so a backlog delivered after the device is back never overwrites newer counters. A
//! device clock set back keeps its samples out until it passes the newest one kept.
//! Updates are serialised (the MQTT link and the delivery path write concurrently).
//!
//! The state is derived (retained status comes back from the broker, telemetry every few
//! seconds), so a database that will not open is moved aside (`fleet.db.corrupt-<secs>`),
//! reported at ERROR, and a fresh one started; sled 0.34 panics on some corrupted files, hence
//! `catch_unwind`. A database locked by another hub is an error.

use crate::sled_store::{self, SledError};
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
    /// Telemetry samples that reached the hub late, through the device's durable queue (taken
    /// while its broker was unreachable, delivered over QUIC), each counted once.
    #[serde(default)]
    pub late_telemetry: u64,
    /// When the kept telemetry sample was taken in (hub clock, ms): the rollout controller
    /// counts an update refusal only when it was taken in after the device was commanded.
    #[serde(default)]
    pub telemetry_at_ms: u64,
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
            late_telemetry: 0,
            telemetry_at_ms: 0,
        }
    }

    /// Takes a telemetry sample received at `now_ms` (hub clock), live or `late` (from the
    /// device's queue): `last_seen_ms` never goes back, and the sample replaces the kept one
    /// only when it is not older (`ts_ms`, then `seq`, device clock). Returns whether it did.
    pub fn take_telemetry(&mut self, tm: Telemetry, now_ms: u64, late: bool) -> bool {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        if late {
            self.late_telemetry += 1;
        }
        let newer = self
            .telemetry
            .as_ref()
            .is_none_or(|old| (tm.ts_ms, tm.seq) >= (old.ts_ms, old.seq));
        if newer {
            self.telemetry = Some(tm);
            self.telemetry_at_ms = now_ms;
        }
        newer
    }

    /// Counts a message that could not be read.
    pub fn unreadable(&mut self, error: String) {
        self.unreadable += 1;
        self.last_error = Some(error);
    }
}

/// The fleet database.
#[derive(Debug, Clone)]
pub struct FleetStore {
    db: sled::Db,
    /// Serialises read-modify-write updates.
    writer: std::sync::Arc<std::sync::Mutex<()>>,
    /// Last: the last clone dropped waits until sled unlocked the database
    /// (`crate::sled_release`).
    _released: std::sync::Arc<crate::sled_release::Released>,
}

/// The database and its release guard; `Err((corrupt, message))` (a panic counts as corrupt).
fn open_once(path: &Path, cache_bytes: u64) -> Result<Opened, (bool, String)> {
    match catch_unwind(AssertUnwindSafe(|| sled_store::open(path, cache_bytes))) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e @ (SledError::Io(_) | SledError::Locked(_)))) => Err((false, e.to_string())),
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

type Opened = (sled::Db, std::sync::Arc<crate::sled_release::Released>);

impl FleetStore {
    /// Opens (or creates) `dir/fleet.db` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.join("fleet.db");
        let err = |message: String| StoreError::Open {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let (db, released) = match open_once(&path, cache_bytes) {
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
        Ok(Self {
            db,
            writer: Default::default(),
            _released: released,
        })
    }

    /// Applies `f` to a device's state (created when first heard of) and stores it.
    pub fn update(
        &self,
        device: &str,
        f: impl FnOnce(&mut DeviceState),
    ) -> Result<DeviceState, StoreError> {
        let _one_at_a_time = self.writer.lock().unwrap_or_else(|p| p.into_inner());
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

    /// A telemetry snapshot a device queued while its broker was unreachable, delivered over
    /// QUIC and just stored by the feedback store (`payload`: the MQTT telemetry JSON, kept as
    /// the device wrote it). Applied as [`DeviceState::take_telemetry`] says; one that does not
    /// read is counted as unreadable. Failures are logged here.
    pub fn late_telemetry(&self, device: &str, payload: &serde_json::Value, now_ms: u64) {
        let decoded = serde_json::to_vec(payload)
            .map_err(|e| e.to_string())
            .and_then(|b| Telemetry::decode(&b).map_err(|e| e.to_string()));
        let stored = match decoded {
            Ok(tm) => self.update(device, |d| {
                d.take_telemetry(tm, now_ms, true);
            }),
            Err(e) => {
                tracing::warn!(device, error = %e, "unreadable telemetry delivered from a device's queue");
                self.update(device, |d| {
                    d.late_telemetry += 1;
                    d.unreadable(format!("delivered telemetry: {e}"));
                })
            }
        };
        if let Err(e) = stored {
            tracing::error!(device, error = %e, "fleet state not stored");
        }
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

    fn sample(ts_ms: u64, seq: u64, ok: u64) -> Telemetry {
        let mut t = Telemetry::decode(include_bytes!(
            "../../../shared/tests/fixtures/mqtt/telemetry.json"
        ))
        .expect("the golden telemetry reads");
        (t.ts_ms, t.seq) = (ts_ms, seq);
        for m in t.models.values_mut() {
            m.inferences.insert("ok".into(), ok);
        }
        t
    }

    fn ok_count(d: &DeviceState) -> u64 {
        d.telemetry.as_ref().expect("telemetry").models["vision-fashion"].inferences["ok"]
    }

    #[test]
    fn the_newest_sample_wins_and_last_seen_never_goes_back() {
        let mut d = DeviceState::new("cam-01");
        assert!(d.take_telemetry(sample(1_000, 5, 50), 9_000, false));
        // A backlog delivered later: older samples count as late but change nothing else.
        assert!(!d.take_telemetry(sample(400, 2, 20), 9_500, true));
        assert!(!d.take_telemetry(sample(999, 4, 40), 8_000, true));
        assert_eq!(
            (ok_count(&d), d.last_seen_ms, d.late_telemetry),
            (50, 9_500, 2)
        );
        // A late sample newer than the live one (taken after it, delivered first) wins.
        assert!(d.take_telemetry(sample(1_200, 6, 60), 9_600, true));
        assert_eq!((ok_count(&d), d.late_telemetry), (60, 3));
        // The same sample again (equal ts and seq) is harmless; an agent restart (seq from 1,
        // later clock) is newer.
        assert!(d.take_telemetry(sample(1_200, 6, 60), 9_700, false));
        assert!(d.take_telemetry(sample(1_300, 1, 1), 9_800, false));
        assert_eq!((ok_count(&d), d.last_seen_ms), (1, 9_800));
    }

    #[test]
    fn late_telemetry_is_decoded_applied_and_counted() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = FleetStore::open(dir.path(), 1 << 20).expect("open");
        s.update("cam-01", |d| {
            d.online = true;
            d.take_telemetry(sample(2_000, 9, 90), 5_000, false);
        })
        .expect("live");
        let json = |t: Telemetry| serde_json::to_value(t).expect("json");
        s.late_telemetry("cam-01", &json(sample(1_500, 7, 70)), 6_000);
        s.late_telemetry("cam-01", &serde_json::json!({"v": 2, "seq": 1}), 6_100);
        let d = s.get("cam-01").expect("get").expect("present");
        assert_eq!(
            ok_count(&d),
            90,
            "an older late sample keeps the newer counters"
        );
        assert_eq!(
            (d.late_telemetry, d.unreadable, d.last_seen_ms),
            (2, 1, 6_000)
        );
        assert!(
            d.online,
            "late telemetry says nothing about being online now"
        );
        s.late_telemetry("cam-02", &json(sample(1_500, 7, 70)), 6_200);
        let d = s
            .get("cam-02")
            .expect("get")
            .expect("a device first heard of late");
        assert_eq!((ok_count(&d), d.late_telemetry, d.online), (70, 1, false));
    }

    #[test]
    fn opens_again_at_once_after_a_drop() {
        // sled's threads may hold the database's lock for a moment after the last handle is
        // dropped; a dropped store waits for it (an in-process hub restart reopens at once).
        let dir = tempfile::tempdir().expect("tmp");
        for n in 1..=20u64 {
            let s = FleetStore::open(dir.path(), 1 << 20).expect("open again at once");
            let d = s
                .update(&format!("cam-{n:02}"), |d| d.last_seen_ms = n)
                .expect("update");
            assert_eq!(d.last_seen_ms, n);
            s.flush();
            assert_eq!(
                s.list().expect("list").len() as u64,
                n,
                "kept across reopens"
            );
        }
    }

    #[test]
    fn keeps_state_across_reopen_and_survives_damage() {
        let tmp = tempfile::Builder::new()
            .prefix("tandem-fleet-")
            .tempdir()
            .expect("tmp");
        let dir = tmp.path();
        {
            let s = FleetStore::open(dir, 1 << 20).expect("open");
            s.update("cam-01", |d| {
                d.online = true;
                d.last_seen_ms = 5;
            })
            .expect("update");
            s.flush();
        }
        let s = FleetStore::open(dir, 1 << 20).expect("reopen");
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
        let s = FleetStore::open(dir, 1 << 20).expect("opens");
        s.list().expect("list");
    }
}
