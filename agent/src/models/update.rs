//! An update ordered by the hub: download `model` `version` over the uplink's QUIC connection
//! (resuming after a cut, up to `attempts` times with full-jitter backoff), then install it with the model
//! manager. The download folder is removed once the bundle is installed or refused; it is kept
//! after a link failure, for the next attempt to resume.

use super::download::{DownloadError, DownloadOptions, fetch};
use super::error::InstallError;
use super::manager::{Installed, Manager, Order, UpdateState};
use crate::uplink::{Uplink, UplinkError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tandem_shared::backoff::Backoff;

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// No trusted key: nothing could be installed, so nothing is downloaded.
    #[error("models.trusted_key is not set: no update is downloaded")]
    NoTrustedKey,
    /// The hub link is down.
    #[error(transparent)]
    Link(#[from] UplinkError),
    /// The download failed (after every attempt for a link failure).
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The bundle was refused or could not be installed.
    #[error(transparent)]
    Install(#[from] InstallError),
}

impl UpdateError {
    /// A short, stable reason for reports.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoTrustedKey => "no_trusted_key",
            Self::Link(_) => "unreachable",
            Self::Download(DownloadError::Bundle(e)) => e.reason(),
            Self::Download(DownloadError::Refused(_)) => "not_in_registry",
            Self::Download(_) => "download_failed",
            Self::Install(e) => e.reason(),
        }
    }
}

/// Where downloads go: `<models.dir>/.downloads/`.
pub fn downloads_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(".downloads")
}

/// Downloads and installs `model` `version` from the hub (see the module doc).
pub async fn update(
    manager: &Arc<Manager>,
    uplink: &Uplink,
    model: &str,
    version: &str,
    order: Order,
    opts: DownloadOptions,
    attempts: u32,
) -> Result<Installed, UpdateError> {
    let key = manager
        .trusted_key()
        .cloned()
        .ok_or(UpdateError::NoTrustedKey)?;
    let downloads = downloads_dir(manager.store().dir());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut attempt = 0;
    let fetched = loop {
        attempt += 1;
        let conn = uplink.connection().await?;
        let m = manager.clone();
        let (mm, vv) = (model.to_string(), version.to_string());
        let progress = move |done: u64, total: u64| {
            m.report_progress(&mm, &vv, UpdateState::Downloading { done, total });
        };
        match fetch(&conn, model, version, &downloads, &key, opts, &progress).await {
            Ok(f) => break f,
            Err(DownloadError::Link(e)) if attempt < attempts.max(1) => {
                tracing::info!(model, version, attempt, error = %e, "download interrupted: resuming");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                let e = UpdateError::Download(e);
                manager.report_progress(
                    model,
                    version,
                    UpdateState::Rejected {
                        reason: e.reason().to_string(),
                        message: e.to_string(),
                    },
                );
                return Err(e);
            }
        }
    };
    let (m, dir) = (manager.clone(), fetched.dir.clone());
    let installed = tokio::task::spawn_blocking(move || m.install(&dir, order))
        .await
        .map_err(|e| {
            UpdateError::Install(InstallError::Io {
                path: fetched.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
    let _ = std::fs::remove_dir_all(&fetched.dir);
    Ok(installed?)
}

/// Starts an update the hub ordered (`update_model`) in the background: download, install,
/// then the watch window (not after an ordered rollback: the operator chose that version).
/// Refused at once (the command's error result) when this agent has no model manager (no
/// `models.trusted_key` or no hub link) or does not serve `model`.
pub fn start(
    router: &crate::hybrid::Router,
    model: &str,
    version: &str,
    rollback: bool,
) -> Result<(), String> {
    let Some(manager) = router.models().cloned() else {
        return Err("model updates are off here: set models.trusted_key and [hub]".into());
    };
    let Some(uplink) = router.uplink().cloned() else {
        return Err("model updates need the hub link ([hub] address)".into());
    };
    let Some(serving) = router.engine().model(model) else {
        return Err(format!("model `{model}` is not served here"));
    };
    if serving.version() == version {
        // Already there (a command sent again, or a rollback to what serves): nothing to do.
        return Ok(());
    }
    if !rollback
        && manager
            .store()
            .rolled_back(model)
            .iter()
            .any(|v| v == version)
    {
        return Err(format!(
            "rolled_back: {model} {version} was rolled back here after its watch window"
        ));
    }
    // One update of a model at a time; the same order again (resent) is not an error.
    match manager.begin_update(model, version) {
        Some(true) => {}
        Some(false) => return Ok(()),
        None => {
            return Err(format!(
                "an update of `{model}` to another version is in progress"
            ));
        }
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    let (model, version) = (model.to_string(), version.to_string());
    runtime.spawn(async move {
        let order = Order { rollback };
        let updated = {
            // In progress until installed or refused; the watch window that follows does not
            // block a next version (it then ends as superseded).
            let _done = UpdateGuard {
                manager: manager.clone(),
                model: model.clone(),
            };
            update(&manager, &uplink, &model, &version, order, DownloadOptions::default(), 5).await
        };
        match updated {
            Ok(installed) if rollback => {
                // The operator chose this version over the one it replaces: no watch window,
                // which could only roll back to the version being taken away.
                tracing::info!(model = %model, from = %installed.from, to = %installed.to, "model rolled back as ordered");
            }
            Ok(installed) => {
                tracing::info!(model = %model, from = %installed.from, to = %installed.to, "model updated; watching it");
                let m = manager.clone();
                let watched = tokio::task::spawn_blocking(move || {
                    m.watch(&installed, Duration::from_secs(1))
                })
                .await;
                if let Ok(Ok(outcome)) = watched {
                    tracing::info!(model = %model, ?outcome, "watch window over");
                }
            }
            Err(e) => {
                tracing::warn!(model = %model, version = %version, reason = e.reason(), error = %e, "model update refused");
            }
        }
    });
    Ok(())
}

/// Ends the in-progress mark of a model's update when the task ends, however it ends.
struct UpdateGuard {
    manager: Arc<Manager>,
    model: String,
}

impl Drop for UpdateGuard {
    fn drop(&mut self) {
        self.manager.end_update(&self.model);
    }
}
