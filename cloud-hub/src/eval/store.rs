//! Where reports are kept: the [`ReportStore`] trait and its sled implementation (the hub's
//! default), one database under `eval_dir`, tree `reports` (id → report JSON; ids sort by
//! creation). No sled type leaves this module.

use super::report::{Report, ReportSummary};
use crate::sled_store::{self, SledError};
use std::path::{Path, PathBuf};

/// Why the report store failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportStoreError {
    /// The database.
    #[error("report store {path}: {message}")]
    Db {
        /// Its folder.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Keeps reports with the model version they judged.
pub trait ReportStore: Send + Sync + std::fmt::Debug {
    /// Stores a report (durable on return).
    fn put(&self, report: &Report) -> Result<(), ReportStoreError>;
    /// Summaries, oldest first, of one model's reports (every model's with `None`).
    fn list(&self, model: Option<&str>) -> Result<Vec<ReportSummary>, ReportStoreError>;
    /// One report by id.
    fn get(&self, id: &str) -> Result<Option<Report>, ReportStoreError>;
}

/// Reports in sled.
#[derive(Debug, Clone)]
pub struct SledReports {
    path: PathBuf,
    reports: sled::Tree,
    /// Last: waits until sled unlocked the database when the last clone is dropped
    /// (`crate::sled_release`).
    _released: std::sync::Arc<crate::sled_release::Released>,
}

impl SledReports {
    /// Opens (or creates) the store in `dir`; a hub holding it makes this fail (sled's lock).
    pub fn open(dir: &Path) -> Result<Self, ReportStoreError> {
        let path = dir.join("reports.db");
        let err = |e: SledError| ReportStoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        let (db, released) = sled_store::open(&path, 4 << 20).map_err(err)?;
        let reports = db.open_tree("reports").map_err(|e| err(e.into()))?;
        Ok(Self {
            path,
            reports,
            _released: released,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> ReportStoreError {
        ReportStoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl ReportStore for SledReports {
    fn put(&self, report: &Report) -> Result<(), ReportStoreError> {
        sled_store::put_json(&self.reports, report.id.as_bytes(), report).map_err(|e| self.err(e))
    }

    fn list(&self, model: Option<&str>) -> Result<Vec<ReportSummary>, ReportStoreError> {
        sled_store::list_json(&self.reports, |r: Report| {
            model.is_none_or(|m| m == r.model).then(|| r.summary())
        })
        .map_err(|e| self.err(e))
    }

    fn get(&self, id: &str) -> Result<Option<Report>, ReportStoreError> {
        sled_store::get_json(&self.reports, id.as_bytes()).map_err(|e| self.err(e))
    }
}
