//! Routing thresholds set at run time (MQTT `set_threshold`: an operator, or the hub's
//! calibration pushing its desired state), kept in `policy.thresholds_file` so they survive a
//! restart and a config reload, and reported with their source.
//!
//! # Invariants
//! - A value is on disk before it is used or acknowledged: the file is written whole to a
//!   temporary file, fsynced, renamed over the old one, and the folder fsynced.
//! - A file that does not read is logged and set aside (`<file>.corrupt-<unix seconds>`): the
//!   device routes with its config and manifest thresholds rather than not at all.
//! - Precedence: a value here, else `[policy.models.NAME].threshold` (source `operator`), else
//!   the manifest's (source `manifest`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use tandem_shared::manifest::Signal;
use tandem_shared::mqtt::ThresholdSource;

/// Why a threshold was not kept.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdsError {
    /// Writing the file.
    #[error("thresholds file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The lock was poisoned by a panic.
    #[error("thresholds lock poisoned")]
    Poisoned,
}

/// One model's threshold set at run time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// The threshold.
    pub threshold: f32,
    /// The signal it applies to, when the command named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// Who set it.
    pub source: ThresholdSource,
    /// When, milliseconds since the Unix epoch.
    pub set_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    v: u32,
    models: BTreeMap<String, Override>,
}

/// The thresholds set at run time, and their file.
#[derive(Debug, Default)]
pub struct Overrides {
    path: Option<PathBuf>,
    models: RwLock<BTreeMap<String, Override>>,
}

impl Overrides {
    /// Thresholds kept in memory only (no `policy.thresholds_file`).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Reads `path` (absent: none set yet).
    pub fn open(path: &Path) -> Self {
        let models = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(f) => {
                    tracing::info!(file = %path.display(), models = f.models.len(), "thresholds set at run time restored");
                    f.models
                }
                Err(e) => {
                    let aside = path.with_extension(format!(
                        "corrupt-{}",
                        crate::telemetry::report::now_ms() / 1000
                    ));
                    let _ = std::fs::rename(path, &aside);
                    tracing::error!(file = %path.display(), moved_to = %aside.display(), error = %e, "thresholds file unreadable: set aside, config and manifest thresholds in force");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "thresholds file unreadable: config and manifest thresholds in force");
                BTreeMap::new()
            }
        };
        Self {
            path: Some(path.to_path_buf()),
            models: RwLock::new(models),
        }
    }

    /// The threshold set for `model`, if any.
    pub fn get(&self, model: &str) -> Option<Override> {
        self.models.read().ok()?.get(model).copied()
    }

    /// Sets `model`'s threshold: durable (when there is a file) before it is in force.
    pub fn set(&self, model: &str, value: Override) -> Result<(), ThresholdsError> {
        let mut models = self.models.write().map_err(|_| ThresholdsError::Poisoned)?;
        let mut next = models.clone();
        next.insert(model.to_string(), value);
        if let Some(path) = &self.path {
            write_file(path, &next)?;
        }
        *models = next;
        Ok(())
    }
}

/// `tandem_routing_threshold{model,signal,source}`: each model's threshold in force.
pub fn render(
    out: &mut String,
    views: impl Iterator<Item = (String, tandem_shared::mqtt::ThresholdView)>,
) {
    use std::fmt::Write as _;
    out.push_str("# HELP tandem_routing_threshold The routing threshold in force, by model, signal and where it comes from (manifest, hub-calibrated, operator).\n# TYPE tandem_routing_threshold gauge\n");
    for (model, v) in views {
        let signal = serde_json::to_value(v.signal)
            .ok()
            .and_then(|s| s.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "tandem_routing_threshold{{model=\"{model}\",signal=\"{signal}\",source=\"{}\"}} {}",
            v.source.as_str(),
            v.threshold
        );
    }
}

fn write_file(path: &Path, models: &BTreeMap<String, Override>) -> Result<(), ThresholdsError> {
    let io = |source| ThresholdsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File {
        v: 1,
        models: models.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_a_reopen_and_a_bad_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/thresholds.json");
        let o = Overrides::open(&path);
        assert_eq!(o.get("m"), None);
        let v = Override {
            threshold: 0.83,
            signal: Some(Signal::MaxProb),
            source: ThresholdSource::HubCalibrated,
            set_ms: 5,
        };
        o.set("m", v).expect("kept");
        assert_eq!(Overrides::open(&path).get("m"), Some(v));
        std::fs::write(&path, b"{not json").expect("write");
        let o = Overrides::open(&path);
        assert_eq!(o.get("m"), None, "a corrupt file is not trusted");
        assert!(!path.exists(), "set aside");
        let memory = Overrides::in_memory();
        memory.set("m", v).expect("kept");
        assert_eq!(memory.get("m"), Some(v));
    }
}
