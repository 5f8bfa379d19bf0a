//! Rollouts in sled (`<registry_dir>/.rollouts`, opened by the running hub only; the CLI goes
//! through the hub's HTTP API): one JSON value per rollout, keyed by id, rewritten and flushed
//! at every change so a restarted hub carries on where it was.

use super::plan::{Action, DeviceView, Phase, Rollout, Spec};
use crate::sled_store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a rollout operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The database cannot be opened or written.
    #[error("rollout database {path}: {message}")]
    Db {
        /// Its folder.
        path: PathBuf,
        /// What sled said.
        message: String,
    },
    /// The spec is invalid: every problem.
    #[error("invalid rollout: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The version is not in the registry.
    #[error("{model} {version} is not in the registry (tandem-hub models push)")]
    NoSuchVersion {
        /// Model.
        model: String,
        /// Version.
        version: String,
    },
    /// Another rollout of the model is not finished.
    #[error("rollout {0} of this model is not finished: pause, abort or wait for it")]
    Busy(String),
    /// No such rollout.
    #[error("no rollout `{0}`")]
    NotFound(String),
    /// The operation does not fit the rollout's phase.
    #[error("{0}")]
    Phase(String),
}

/// The rollout database.
#[derive(Debug, Clone)]
pub struct RolloutStore {
    path: PathBuf,
    tree: sled::Db,
    /// Serialises read-modify-write (create, change, tick): the controller's step and a
    /// command's answer (or an operator's pause) change the same rollout concurrently.
    writes: Arc<Mutex<()>>,
    /// Last: the last clone dropped waits until sled unlocked the database
    /// (`crate::sled_release`).
    _released: Arc<crate::sled_release::Released>,
}

impl RolloutStore {
    /// Opens (creating) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, RolloutError> {
        let (tree, released) = sled_store::open(dir, 4 << 20).map_err(|e| RolloutError::Db {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: dir.to_path_buf(),
            tree,
            writes: Arc::new(Mutex::new(())),
            _released: released,
        })
    }

    fn db(&self, e: impl std::fmt::Display) -> RolloutError {
        RolloutError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Every rollout, oldest first.
    pub fn list(&self) -> Result<Vec<Rollout>, RolloutError> {
        let mut all = sled_store::list_json(&self.tree, Some::<Rollout>).map_err(|e| self.db(e))?;
        all.sort_by_key(|r| r.created_ms);
        Ok(all)
    }

    /// One rollout.
    pub fn get(&self, id: &str) -> Result<Rollout, RolloutError> {
        sled_store::get_json(&self.tree, id.as_bytes())
            .map_err(|e| self.db(e))?
            .ok_or_else(|| RolloutError::NotFound(id.to_string()))
    }

    /// Writes a rollout and flushes.
    pub fn save(&self, r: &Rollout) -> Result<(), RolloutError> {
        sled_store::put_json(&self.tree, r.id.as_bytes(), r).map_err(|e| self.db(e))
    }

    /// Starts a rollout: the spec must be valid, the version in the registry (`exists`), and
    /// no other rollout of the model unfinished.
    pub fn create(&self, spec: Spec, exists: bool, now_ms: u64) -> Result<Rollout, RolloutError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(RolloutError::Invalid(problems));
        }
        let _one = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if !exists {
            return Err(RolloutError::NoSuchVersion {
                model: spec.model,
                version: spec.version,
            });
        }
        let all = self.list()?;
        if let Some(r) = all
            .iter()
            .find(|r| r.spec.model == spec.model && !r.finished())
        {
            return Err(RolloutError::Busy(r.id.clone()));
        }
        let n = all
            .iter()
            .filter(|r| r.spec.model == spec.model && r.spec.version == spec.version)
            .count();
        let id = format!("{}-{}-{}", spec.model, spec.version, n + 1);
        let r = Rollout::new(id, spec, now_ms);
        self.save(&r)?;
        Ok(r)
    }

    /// Applies `change` to a rollout and saves it.
    pub fn change(
        &self,
        id: &str,
        change: impl FnOnce(&mut Rollout) -> Result<(), String>,
    ) -> Result<Rollout, RolloutError> {
        let _one = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = self.get(id)?;
        change(&mut r).map_err(RolloutError::Phase)?;
        self.save(&r)?;
        Ok(r)
    }

    /// One controller step over every running rollout: `devices(model)` is what the fleet
    /// reports; returns the commands to send as (rollout id, device, model, version, rollback).
    pub fn tick(
        &self,
        devices: impl Fn(&str) -> Vec<DeviceView>,
        now_ms: u64,
    ) -> Result<Vec<Command>, RolloutError> {
        let _one = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let all = self.list()?;
        // Per model, the latest rollout: stepped while it runs, reconciled once it succeeded.
        // Every other one is finished and only follows its devices (its counts stay true).
        let latest: BTreeMap<String, String> = all
            .iter()
            .map(|r| (r.spec.model.clone(), r.id.clone()))
            .collect();
        let mut views: BTreeMap<String, Vec<DeviceView>> = BTreeMap::new();
        for mut r in all {
            let devices = views
                .entry(r.spec.model.clone())
                .or_insert_with(|| devices(&r.spec.model));
            let before = r.clone();
            let is_latest = latest.get(&r.spec.model) == Some(&r.id);
            let actions = match (is_latest, &r.phase) {
                (true, Phase::Succeeded) => r.reconcile(devices, now_ms),
                (true, _) if !r.finished() => r.step(devices, now_ms),
                _ => {
                    r.follow(devices);
                    Vec::new()
                }
            };
            if r != before {
                self.save(&r)?;
                if r.phase != before.phase {
                    tracing::info!(rollout = %r.id, phase = ?r.phase, "rollout moved");
                }
            }
            for Action::Command(device) in actions {
                out.push(Command {
                    rollout: r.id.clone(),
                    device,
                    model: r.spec.model.clone(),
                    version: r.spec.version.clone(),
                    rollback: r.spec.rollback,
                });
            }
        }
        Ok(out)
    }
}

/// An update command the controller must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The rollout.
    pub rollout: String,
    /// The device.
    pub device: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// An ordered rollback (the device accepts a version older than the one it serves).
    pub rollback: bool,
}

#[cfg(test)]
mod tests {
    use super::super::plan::Outcome;
    use super::*;

    #[test]
    fn opens_again_at_once_after_a_drop() {
        // sled's threads may hold the database's lock for a moment after the last handle is
        // dropped; a dropped store waits for it (an in-process hub restart reopens at once).
        let dir = tempfile::tempdir().expect("tmp");
        for n in 1..=20usize {
            let s = RolloutStore::open(dir.path()).expect("open again at once");
            let spec = Spec {
                model: format!("m{n}"),
                version: "1.0.1".into(),
                canary_pct: 100,
                stages_pct: vec![100],
                labels: Default::default(),
                success_share: 0.9,
                failure_share: 0.2,
                stage_timeout_ms: 1_000,
                resend_after_ms: 1_000,
                rollback: false,
            };
            s.create(spec, true, 1).expect("create");
            assert_eq!(s.list().expect("list").len(), n, "kept across reopens");
        }
    }

    fn spec(version: &str, rollback: bool) -> Spec {
        Spec {
            model: "m".into(),
            version: version.into(),
            canary_pct: 100,
            stages_pct: vec![100],
            labels: Default::default(),
            success_share: 0.9,
            failure_share: 0.5,
            stage_timeout_ms: 60_000,
            resend_after_ms: 60_000,
            rollback,
        }
    }

    fn serving(versions: &[(&str, &str)], reported_ms: u64) -> Vec<DeviceView> {
        versions
            .iter()
            .map(|(device, version)| DeviceView {
                device: device.to_string(),
                online: true,
                version: Some(version.to_string()),
                reported_ms,
                ..DeviceView::default()
            })
            .collect()
    }

    fn outcomes(s: &RolloutStore, id: &str) -> Vec<(String, &'static str)> {
        let r = s.get(id).expect("the rollout");
        r.targets
            .into_iter()
            .map(|(d, t)| {
                let state = match t.outcome {
                    Outcome::Active => "active",
                    Outcome::Pending => "pending",
                    Outcome::Failed { .. } => "failed",
                };
                (d, state)
            })
            .collect()
    }

    #[test]
    fn an_aborted_rollout_keeps_following_its_devices_and_commands_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = RolloutStore::open(dir.path()).expect("open");
        let up = s.create(spec("1.0.1", false), true, 1).expect("create").id;
        let sent = s
            .tick(|_| serving(&[("a", "1.0.0"), ("b", "1.0.0")], 0), 1_000)
            .expect("tick");
        assert_eq!(sent.len(), 2, "{sent:?}");
        // a takes it; b is still downloading when the operator aborts.
        s.tick(|_| serving(&[("a", "1.0.1"), ("b", "1.0.0")], 1_500), 2_000)
            .expect("tick");
        s.change(&up, |r| r.abort()).expect("abort");
        let now = [("a", "active"), ("b", "pending")].map(|(d, o)| (d.to_string(), o));
        assert_eq!(outcomes(&s, &up), now);

        // b finishes the update it was commanded before the abort: counted, not commanded.
        let sent = s
            .tick(|_| serving(&[("a", "1.0.1"), ("b", "1.0.1")], 2_500), 3_000)
            .expect("tick");
        assert!(
            sent.is_empty(),
            "an aborted rollout commands nothing: {sent:?}"
        );
        let now = [("a", "active"), ("b", "active")].map(|(d, o)| (d.to_string(), o));
        assert_eq!(outcomes(&s, &up), now);

        // A rollback to 1.0.0 takes both back; the aborted row no longer counts them active.
        let back = s
            .create(spec("1.0.0", true), true, 4_000)
            .expect("rollback")
            .id;
        let sent = s
            .tick(|_| serving(&[("a", "1.0.1"), ("b", "1.0.1")], 3_500), 5_000)
            .expect("tick");
        assert!(
            sent.iter().all(|c| c.rollout == back && c.rollback),
            "{sent:?}"
        );
        assert_eq!(sent.len(), 2, "{sent:?}");
        s.tick(|_| serving(&[("a", "1.0.0"), ("b", "1.0.0")], 5_500), 6_000)
            .expect("tick");
        assert_eq!(s.get(&back).expect("rollback").phase, Phase::Succeeded);
        let now = [("a", "pending"), ("b", "pending")].map(|(d, o)| (d.to_string(), o));
        assert_eq!(outcomes(&s, &up), now);
        assert_eq!(s.get(&up).expect("rollout").phase, Phase::Aborted);
    }
}
