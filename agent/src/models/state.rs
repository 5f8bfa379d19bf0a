//! Where each model update stands on the device: the states an install goes through, the
//! board that keeps the last state of each of a model's recent versions (what telemetry
//! carries to the hub), and when a change is published at once.

use super::progress::{PROGRESS_EVERY, ProgressGate};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// Where an update of one model stands (what the agent reports to the hub).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UpdateState {
    /// Fetching the bundle from the hub.
    Downloading {
        /// Bytes on disk.
        done: u64,
        /// Bytes of the bundle.
        total: u64,
    },
    /// Checking the signature and the files.
    Verifying,
    /// Loading the new version beside the serving one and running its self-tests.
    Testing,
    /// Serving the new version.
    Active {
        /// The version it replaced.
        from: String,
    },
    /// Serving the new version, compared with the old one during the watch window.
    Watching {
        /// The version it replaced.
        from: String,
    },
    /// Did worse than the version it replaced in the watch window: that one serves again.
    RolledBack {
        /// `errors`, `latency`, `offload` or `confidence`.
        reason: String,
        /// The figures, in words.
        message: String,
        /// The version serving now.
        to: String,
    },
    /// Refused; the version before it keeps serving.
    Rejected {
        /// [`super::InstallError::reason`].
        reason: String,
        /// The error in words.
        message: String,
    },
}

/// The last update of a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UpdateStatus {
    /// Model name.
    pub model: String,
    /// The version the update is about.
    pub version: String,
    /// Where it stands.
    #[serde(flatten)]
    pub state: UpdateState,
}

/// How many versions of a model keep their last update state in telemetry.
pub const REPORTS_PER_MODEL: usize = 4;

/// Called with every state change.
pub type Reporter = Box<dyn Fn(&UpdateStatus) + Send + Sync>;

/// The update states a manager keeps and publishes.
pub(super) struct Board {
    /// Per model, the last state of each of its most recent versions (at most
    /// [`REPORTS_PER_MODEL`]), oldest first.
    kept: Mutex<BTreeMap<String, Vec<UpdateStatus>>>,
    /// Called with every state, progress included.
    pub(super) reporter: Option<Reporter>,
    /// Bumped at every state change, and by download progress as [`ProgressGate`] lets it.
    pub(super) changes: tokio::sync::watch::Sender<u64>,
    progress: Mutex<ProgressGate>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            kept: Mutex::new(BTreeMap::new()),
            reporter: None,
            changes: tokio::sync::watch::Sender::new(0),
            progress: Mutex::new(ProgressGate::default()),
        }
    }
}

impl Board {
    /// What telemetry carries to the hub: for every model, the last state of each of its most
    /// recent versions, oldest first. Not only the newest: a refusal of one version followed
    /// closely by another version's watch window ending must not hide the refusal from a
    /// rollout of the refused version (publishing coalesces close changes).
    pub(super) fn reports(&self) -> Vec<tandem_shared::mqtt::UpdateReport> {
        let all: Vec<UpdateStatus> = self
            .kept
            .lock()
            .map(|s| s.values().flatten().cloned().collect())
            .unwrap_or_default();
        all.into_iter()
            .map(|u| {
                let (state, reason, done, total) = match u.state {
                    UpdateState::Downloading { done, total } => {
                        ("downloading", None, Some(done), Some(total))
                    }
                    UpdateState::Verifying => ("verifying", None, None, None),
                    UpdateState::Testing => ("testing", None, None, None),
                    UpdateState::Watching { .. } => ("watching", None, None, None),
                    UpdateState::Active { .. } => ("active", None, None, None),
                    UpdateState::Rejected { reason, message } => {
                        ("rejected", Some(format!("{reason}: {message}")), None, None)
                    }
                    UpdateState::RolledBack {
                        reason, message, ..
                    } => (
                        "rolled_back",
                        Some(format!("{reason}: {message}")),
                        None,
                        None,
                    ),
                };
                tandem_shared::mqtt::UpdateReport {
                    model: u.model,
                    version: u.version,
                    state: state.to_string(),
                    reason,
                    done,
                    total,
                }
            })
            .collect()
    }

    /// The last update of every model.
    pub(super) fn status(&self) -> Vec<UpdateStatus> {
        self.kept
            .lock()
            .map(|s| s.values().filter_map(|v| v.last().cloned()).collect())
            .unwrap_or_default()
    }

    pub(super) fn report(&self, model: &str, version: &str, state: UpdateState) {
        let s = UpdateStatus {
            model: model.to_string(),
            version: version.to_string(),
            state,
        };
        if let Some(r) = &self.reporter {
            r(&s);
        }
        let publish = match s.state {
            UpdateState::Downloading { done, total } => self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .due(Instant::now(), done, total, PROGRESS_EVERY),
            _ => true,
        };
        if let Ok(mut all) = self.kept.lock() {
            let kept = all.entry(model.to_string()).or_default();
            kept.retain(|k| k.version != s.version);
            kept.push(s);
            if kept.len() > REPORTS_PER_MODEL {
                kept.remove(0);
            }
        }
        if publish {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}
