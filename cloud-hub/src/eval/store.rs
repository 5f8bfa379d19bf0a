//! Where reports are kept: the [`ReportStore`] trait and its sled implementation (the hub's
//! default), one database under `eval_dir`, tree `reports` (id → report JSON; ids sort by
//! creation). No sled type leaves this module.

use super::report::{Report, ReportSummary};
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
    db: sled::Db,
    reports: sled::Tree,
    /// Last: waits until sled unlocked the database when the last clone is dropped
    /// (`crate::sled_release`).
    _released: std::sync::Arc<crate::sled_release::Released>,
}

impl SledReports {
    /// Opens (or creates) the store in `dir`; a hub holding it makes this fail (sled's lock).
    pub fn open(dir: &Path) -> Result<Self, ReportStoreError> {
        let path = dir.join("reports.db");
        let err = |e: sled::Error| ReportStoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(4 << 20)
            .open()
            .map_err(err)?;
        let reports = db.open_tree("reports").map_err(err)?;
        Ok(Self {
            _released: std::sync::Arc::new(crate::sled_release::Released::new(&path)),
            path,
            db,
            reports,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> ReportStoreError {
        ReportStoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn decode(&self, v: &[u8]) -> Result<Report, ReportStoreError> {
        serde_json::from_slice(v).map_err(|e| self.err(format!("a stored report: {e}")))
    }
}

impl ReportStore for SledReports {
    fn put(&self, report: &Report) -> Result<(), ReportStoreError> {
        let value = serde_json::to_vec(report).map_err(|e| self.err(e))?;
        self.reports
            .insert(report.id.as_bytes(), value)
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn list(&self, model: Option<&str>) -> Result<Vec<ReportSummary>, ReportStoreError> {
        let mut out = Vec::new();
        for kv in self.reports.iter() {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            let r = self.decode(&v)?;
            if model.is_none_or(|m| m == r.model) {
                out.push(r.summary());
            }
        }
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Option<Report>, ReportStoreError> {
        self.reports
            .get(id.as_bytes())
            .map_err(|e| self.err(e))?
            .map(|v| self.decode(&v))
            .transpose()
    }
}
