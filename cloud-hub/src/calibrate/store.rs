//! Where calibrations and the desired thresholds are kept: the [`CalibrationStore`] trait and
//! its sled implementation (the hub's default), one database under `calibrate.dir` with trees
//! `results` (id → calibration JSON; ids sort by creation) and `desired` (`<model>\0<selector>\0
//! <source>` → desired threshold JSON). No sled type leaves this module.

use super::{Calibration, Desired};
use std::path::{Path, PathBuf};
use tandem_shared::mqtt::ThresholdSource;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationStoreError {
    /// The database.
    #[error("calibration store {path}: {message}")]
    Db {
        /// Its folder.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Keeps calibrations (with their reports) and the thresholds devices should use.
pub trait CalibrationStore: Send + Sync + std::fmt::Debug {
    /// Stores a calibration (durable on return).
    fn put(&self, c: &Calibration) -> Result<(), CalibrationStoreError>;
    /// One model's calibrations, oldest first (every model's with `None`).
    fn list(&self, model: Option<&str>) -> Result<Vec<Calibration>, CalibrationStoreError>;
    /// One calibration by id.
    fn get(&self, id: &str) -> Result<Option<Calibration>, CalibrationStoreError>;
    /// Sets the desired threshold for its (model, selector, source), replacing that one's.
    fn set_desired(&self, d: &Desired) -> Result<(), CalibrationStoreError>;
    /// Removes the desired threshold of (model, selector, source); whether there was one.
    fn remove_desired(
        &self,
        model: &str,
        selector: &str,
        source: ThresholdSource,
    ) -> Result<bool, CalibrationStoreError>;
    /// Every desired threshold.
    fn desired(&self) -> Result<Vec<Desired>, CalibrationStoreError>;
}

/// The store in sled.
#[derive(Debug, Clone)]
pub struct SledCalibrations {
    path: PathBuf,
    db: sled::Db,
    results: sled::Tree,
    desired: sled::Tree,
    /// Last: waits until sled unlocked the database when the last clone is dropped
    /// (`crate::sled_release`).
    _released: std::sync::Arc<crate::sled_release::Released>,
}

fn desired_key(model: &str, selector: &str, source: ThresholdSource) -> Vec<u8> {
    format!("{model}\0{selector}\0{}", source.as_str()).into_bytes()
}

impl SledCalibrations {
    /// Opens (or creates) the store in `dir`; a hub holding it makes this fail (sled's lock).
    pub fn open(dir: &Path) -> Result<Self, CalibrationStoreError> {
        let path = dir.join("calibrations.db");
        let err = |e: sled::Error| CalibrationStoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(4 << 20)
            .open()
            .map_err(err)?;
        let results = db.open_tree("results").map_err(err)?;
        let desired = db.open_tree("desired").map_err(err)?;
        Ok(Self {
            _released: std::sync::Arc::new(crate::sled_release::Released::new(&path)),
            path,
            db,
            results,
            desired,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> CalibrationStoreError {
        CalibrationStoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, v: &[u8]) -> Result<T, CalibrationStoreError> {
        serde_json::from_slice(v).map_err(|e| self.err(format!("a stored entry: {e}")))
    }

    fn insert(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: &impl serde::Serialize,
    ) -> Result<(), CalibrationStoreError> {
        let value = serde_json::to_vec(value).map_err(|e| self.err(e))?;
        tree.insert(key, value).map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl CalibrationStore for SledCalibrations {
    fn put(&self, c: &Calibration) -> Result<(), CalibrationStoreError> {
        self.insert(&self.results, c.id.as_bytes(), c)
    }

    fn list(&self, model: Option<&str>) -> Result<Vec<Calibration>, CalibrationStoreError> {
        let mut out = Vec::new();
        for kv in self.results.iter() {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            let c: Calibration = self.decode(&v)?;
            if model.is_none_or(|m| m == c.model) {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Option<Calibration>, CalibrationStoreError> {
        self.results
            .get(id.as_bytes())
            .map_err(|e| self.err(e))?
            .map(|v| self.decode(&v))
            .transpose()
    }

    fn set_desired(&self, d: &Desired) -> Result<(), CalibrationStoreError> {
        let key = desired_key(&d.model, &d.selector_key(), d.source);
        self.insert(&self.desired, &key, d)
    }

    fn remove_desired(
        &self,
        model: &str,
        selector: &str,
        source: ThresholdSource,
    ) -> Result<bool, CalibrationStoreError> {
        let old = self
            .desired
            .remove(desired_key(model, selector, source))
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(old.is_some())
    }

    fn desired(&self) -> Result<Vec<Desired>, CalibrationStoreError> {
        self.desired
            .iter()
            .map(|kv| {
                let (_, v) = kv.map_err(|e| self.err(e))?;
                self.decode(&v)
            })
            .collect()
    }
}
