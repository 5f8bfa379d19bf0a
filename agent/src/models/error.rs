//! Why a bundle was not installed, one variant per reason.

use std::path::PathBuf;
use tandem_engine::bundle::FolderError;
use tandem_engine::model::ModelError;
use tandem_engine::swap::SwapError;
use tandem_shared::bundle::BundleError;

/// Why a new version was refused or could not be installed; the serving version is untouched.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// `models.trusted_key` is empty: no bundle can be trusted.
    #[error("models.trusted_key is not set: bundles are refused")]
    NoTrustedKey,
    /// The trusted key cannot be read.
    #[error("models.trusted_key {path}: {message}")]
    TrustedKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The bundle folder cannot be read.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// The bundle failed verification (signature, files, schema, version).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The model is not served here (installing a new model needs a restart for now).
    #[error("model `{0}` is not served by this agent")]
    NotServed(String),
    /// The installed files do not open as a model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The new version could not be loaded or swapped in.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// A self-test gave another answer.
    #[error("self-test {index} ({input}) failed: {message}")]
    SelfTest {
        /// Its index in the bundle.
        index: usize,
        /// Its input (file name or text).
        input: String,
        /// What differed.
        message: String,
    },
    /// The self-tests ran slower than the budget on this device.
    #[error(
        "self-tests p99 latency {p99_ms:.1} ms is above models.selftest_max_p99_ms ({budget_ms} ms)"
    )]
    Latency {
        /// Measured p99.
        p99_ms: f64,
        /// The budget.
        budget_ms: u64,
    },
    /// This version was rolled back on this device; only an ordered rollback installs it.
    #[error(
        "version {version} was rolled back here after its watch window; order a rollback to install it again"
    )]
    RolledBackBefore {
        /// The version.
        version: String,
    },
    /// Not enough room within `models.store_max_bytes`.
    #[error(
        "the new version needs {need} bytes; {free} of models.store_max_bytes ({budget}) are free after removing old versions"
    )]
    DiskBudget {
        /// Bytes the new version takes.
        need: u64,
        /// Bytes free.
        free: u64,
        /// The budget.
        budget: u64,
    },
    /// A store file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
}

impl InstallError {
    /// A short, stable reason for reports (the bundle's own for a verification failure).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoTrustedKey | Self::TrustedKey { .. } => "no_trusted_key",
            Self::Folder(_) => "unreadable",
            Self::Bundle(e) => e.reason(),
            Self::NotServed(_) => "not_served",
            Self::Model(_) => "model",
            Self::Swap(_) => "load_failed",
            Self::SelfTest { .. } => "selftest_failed",
            Self::Latency { .. } => "latency",
            Self::RolledBackBefore { .. } => "rolled_back",
            Self::DiskBudget { .. } => "disk_budget",
            Self::Io { .. } => "io",
        }
    }
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}
