//! The measured `auto` choice's cache on disk (`runtime.ep_choice_cache`): what each provider
//! measured on each model, keyed by a hash of model digest, provider, options, threads,
//! tolerance, plugin libraries and the device inventory, so an agent restart skips the timing.
//!
//! - Bounded: at most [`MAX_ENTRIES`] entries; the oldest written go first.
//! - Invalidation: a change in any key part gives another key; the old entry is never read
//!   again and ages out.
//! - Written whole to a temporary file and renamed (a crash leaves the old file or the new);
//!   an unreadable or foreign file is logged and replaced, never an error.

use super::choice::Measure;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Most entries kept (a few models times a few providers, with room for old versions).
pub const MAX_ENTRIES: usize = 256;
const FORMAT: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    format: u32,
    /// Oldest first.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: String,
    measure: Measure,
}

/// The cache file.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The file at `path` (created on the first [`Store::put`]).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    fn read(&self) -> File {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return File::default(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the provider choice cache; measuring again");
                return File::default();
            }
        };
        match serde_json::from_slice::<File>(&bytes) {
            Ok(f) if f.format == FORMAT => f,
            Ok(f) => {
                tracing::warn!(path = %self.path.display(), format = f.format, "provider choice cache of another format; replaced");
                File::default()
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "provider choice cache unreadable; replaced");
                File::default()
            }
        }
    }

    /// The measurement stored under `key`.
    pub fn get(&self, key: &str) -> Option<Measure> {
        self.read()
            .entries
            .into_iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| e.measure)
    }

    /// Stores `m` under `key` (replacing an older one), keeping the newest [`MAX_ENTRIES`].
    /// A failed write is logged: the choice then lasts only as long as the process.
    pub fn put(&self, key: &str, m: &Measure) {
        let mut f = self.read();
        f.format = FORMAT;
        f.entries.retain(|e| e.key != key);
        f.entries.push(Entry {
            key: key.to_string(),
            measure: Measure {
                cached: false,
                ..m.clone()
            },
        });
        let extra = f.entries.len().saturating_sub(MAX_ENTRIES);
        f.entries.drain(..extra);
        if let Err(e) = self.write(&f) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the provider choice cache");
        }
    }

    fn write(&self, f: &File) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(f).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::provider::ExecutionProvider;

    /// A fresh folder, removed when the guard drops (the test passed or panicked).
    fn dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("tandem-choice-{name}-"))
            .tempdir()
            .expect("tmp")
    }

    fn measure(us: f64) -> Measure {
        let mut m = Measure::new(ExecutionProvider::Openvino, 12.0);
        m.accurate = true;
        m.median_us = Some(us);
        m.max_abs_diff = Some(1e-6);
        m
    }

    #[test]
    fn a_measurement_survives_a_new_store_on_the_same_file() {
        let tmp = dir("survive");
        let d = tmp.path();
        let path = d.join("state/ep-choice.json");
        Store::new(&path).put("k1", &measure(100.0));
        Store::new(&path).put("k2", &measure(200.0));
        let again = Store::new(&path);
        assert_eq!(again.get("k1"), Some(measure(100.0)));
        assert_eq!(again.get("k2").and_then(|m| m.median_us), Some(200.0));
        assert_eq!(again.get("k3"), None);
        // Replaced, not duplicated.
        again.put("k1", &measure(50.0));
        assert_eq!(again.get("k1").and_then(|m| m.median_us), Some(50.0));
        assert_eq!(again.read().entries.len(), 2);
    }

    #[test]
    fn the_file_keeps_the_newest_entries_only() {
        let tmp = dir("bound");
        let d = tmp.path();
        let s = Store::new(&d.join("ep-choice.json"));
        for i in 0..MAX_ENTRIES + 10 {
            s.put(&format!("k{i}"), &measure(i as f64));
        }
        let f = s.read();
        assert_eq!(f.entries.len(), MAX_ENTRIES);
        assert_eq!(s.get("k9"), None);
        assert!(s.get("k10").is_some());
        assert!(s.get(&format!("k{}", MAX_ENTRIES + 9)).is_some());
    }

    #[test]
    fn a_corrupt_file_is_replaced_not_an_error() {
        let tmp = dir("corrupt");
        let d = tmp.path();
        let path = d.join("ep-choice.json");
        std::fs::write(&path, b"{not json").expect("write");
        let s = Store::new(&path);
        assert_eq!(s.get("k"), None);
        s.put("k", &measure(1.0));
        assert!(s.get("k").is_some());
    }
}
