//! Where calibrations and the desired thresholds are kept: the [`CalibrationStore`] trait and
//! its sled implementation (the hub's default), one database under `calibrate.dir` with trees
//! `results` (id → calibration JSON; ids sort by creation) and `desired` (`<model>\0<selector>\0
//! <source>` → desired threshold JSON). No sled type leaves this module.

use super::{Calibration, Desired};
use crate::sled_store::{self, SledError};
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
        let err = |e: SledError| CalibrationStoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        let (db, released) = sled_store::open(&path, 4 << 20).map_err(err)?;
        let results = db.open_tree("results").map_err(|e| err(e.into()))?;
        let desired = db.open_tree("desired").map_err(|e| err(e.into()))?;
        Ok(Self {
            path,
            results,
            desired,
            _released: released,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> CalibrationStoreError {
        CalibrationStoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl CalibrationStore for SledCalibrations {
    fn put(&self, c: &Calibration) -> Result<(), CalibrationStoreError> {
        sled_store::put_json(&self.results, c.id.as_bytes(), c).map_err(|e| self.err(e))
    }

    fn list(&self, model: Option<&str>) -> Result<Vec<Calibration>, CalibrationStoreError> {
        sled_store::list_json(&self.results, |c: Calibration| {
            model.is_none_or(|m| m == c.model).then_some(c)
        })
        .map_err(|e| self.err(e))
    }

    fn get(&self, id: &str) -> Result<Option<Calibration>, CalibrationStoreError> {
        sled_store::get_json(&self.results, id.as_bytes()).map_err(|e| self.err(e))
    }

    fn set_desired(&self, d: &Desired) -> Result<(), CalibrationStoreError> {
        let key = desired_key(&d.model, &d.selector_key(), d.source);
        sled_store::put_json(&self.desired, &key, d).map_err(|e| self.err(e))
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
        self.desired.flush().map_err(|e| self.err(e))?;
        Ok(old.is_some())
    }

    fn desired(&self) -> Result<Vec<Desired>, CalibrationStoreError> {
        sled_store::list_json(&self.desired, Some::<Desired>).map_err(|e| self.err(e))
    }
}
