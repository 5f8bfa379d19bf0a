//! The model manager: verifies a bundle against the trusted key, installs it in the store,
//! stages it in the engine, runs its self-tests there and swaps it in; anything that fails
//! leaves the serving version untouched and is reported with its reason.

use super::error::InstallError;
use super::selftest::{self, SelfTestReport};
use super::state::Board;
pub use super::state::{REPORTS_PER_MODEL, Reporter, UpdateState, UpdateStatus};
use super::store::Store;
use super::watch::{Margins, Recent, Verdict, judge};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tandem_engine::bundle::read_folder;
use tandem_engine::model;
use tandem_engine::settings::EngineSettings;
use tandem_engine::version_stats::VersionSnapshot;
use tandem_engine::{Engine, ModelHandle};
use tandem_shared::bundle::{self, Active, Expect, TrustedKey};
use tandem_shared::manifest::{Signal, VariantRole};

/// What an install did.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    /// Model name.
    pub model: String,
    /// The version replaced.
    pub from: String,
    /// The version now serving.
    pub to: String,
    /// Its execution provider.
    pub ep: String,
    /// The self-tests.
    pub selftests: SelfTestReport,
    /// How long the old version took to finish its queued requests, in milliseconds.
    pub drained_ms: u64,
    /// What the old version did in the last `models.watch_window_s` before the swap (its
    /// lifetime when it served less, or was too quiet then): the watch window's baseline.
    pub baseline: VersionSnapshot,
}

/// How a watch window ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// The new version stays.
    Kept(Verdict),
    /// The new version did worse and was rolled back.
    RolledBack {
        /// `errors`, `latency`, `offload` or `confidence`.
        reason: &'static str,
        /// The figures.
        detail: String,
        /// The version serving again.
        to: String,
    },
    /// Another swap happened during the window: nothing to judge.
    Superseded,
}

/// How an install was ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Order {
    /// An explicit rollback: a version older than the serving one is accepted.
    pub rollback: bool,
}

/// Installs bundles into a running engine.
pub struct Manager {
    engine: Arc<Engine>,
    store: Store,
    key: Option<TrustedKey>,
    key_problem: Option<InstallError>,
    role: VariantRole,
    selftest_runs: usize,
    selftest_max_p99_ms: u64,
    margins: Margins,
    window: Duration,
    /// Update states: kept, reported, published.
    board: Board,
    /// Updates ordered by the hub and not finished: model → version.
    updating: Mutex<BTreeMap<String, String>>,
    one_at_a_time: Mutex<()>,
    /// Timed snapshots of each serving version, for the watch window's baseline; filled by
    /// a sampler thread (see [`spawn_sampler`]).
    history: Arc<History>,
}

/// The serving generation of a model and its recent snapshots.
#[derive(Debug)]
struct Tracked {
    /// The generation sampled (a swap starts a new history).
    handle: Weak<ModelHandle>,
    recent: Recent,
}

type History = Mutex<BTreeMap<String, Tracked>>;

/// How often the serving versions' counters are sampled: a tenth of the watch window, between
/// 100 ms and 30 s (the baseline then spans the window plus at most that).
fn sample_every(window: Duration) -> Duration {
    (window / 10).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Records the counters of every serving version now.
fn sample(engine: &Engine, history: &History, window: Duration) {
    let now = Instant::now();
    let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
    for m in engine.models() {
        let handle = Arc::downgrade(m);
        let t = h.entry(m.name().to_string()).or_insert_with(|| Tracked {
            handle: handle.clone(),
            recent: Recent::default(),
        });
        if !t.handle.ptr_eq(&handle) {
            *t = Tracked {
                handle,
                recent: Recent::default(),
            };
        }
        t.recent.push(now, m.stats(), window);
    }
}

/// A thread sampling the serving versions every [`sample_every`] until the manager (its
/// history) or the engine is gone. It holds neither alive. Without it (it could not start)
/// the baseline is the old version's lifetime.
fn spawn_sampler(engine: Weak<Engine>, history: Weak<History>, window: Duration) {
    let every = sample_every(window);
    let spawned = std::thread::Builder::new()
        .name("model-sampler".into())
        .spawn(move || {
            loop {
                match (engine.upgrade(), history.upgrade()) {
                    (Some(e), Some(h)) => sample(&e, &h, window),
                    _ => return,
                }
                std::thread::sleep(every);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "model sampler not started: watch windows compare with the old version's lifetime");
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("store", &self.store)
            .field("key", &self.key.as_ref().map(TrustedKey::id))
            .finish_non_exhaustive()
    }
}

/// Reads the trusted key named by `models.trusted_key` (resolved); `None` when not set.
pub fn load_trusted_key(settings: &EngineSettings) -> Result<Option<TrustedKey>, InstallError> {
    let k = &settings.models.trusted_key;
    if k.is_empty() {
        return Ok(None);
    }
    let path = settings.resolve(Path::new(k));
    let text = std::fs::read_to_string(&path).map_err(|e| InstallError::TrustedKey {
        path: path.clone(),
        message: e.to_string(),
    })?;
    TrustedKey::from_pem(&text)
        .map(Some)
        .map_err(|e| InstallError::TrustedKey {
            path,
            message: e.to_string(),
        })
}

impl Manager {
    /// A manager over the engine, with the `[models]` settings. A trusted key that cannot be
    /// read is not fatal here: every install is then refused with that reason.
    pub fn new(engine: Arc<Engine>, settings: &EngineSettings) -> Self {
        let (key, key_problem) = match load_trusted_key(settings) {
            Ok(Some(k)) => (Some(k), None),
            Ok(None) => (None, Some(InstallError::NoTrustedKey)),
            Err(e) => (None, Some(e)),
        };
        let m = &settings.models;
        let window = Duration::from_secs(m.watch_window_s);
        let history = Arc::new(History::default());
        spawn_sampler(Arc::downgrade(&engine), Arc::downgrade(&history), window);
        Self {
            engine,
            store: Store::new(
                &settings.resolve(&m.dir),
                m.store_max_bytes,
                m.keep_versions,
            ),
            key,
            key_problem,
            role: settings.variant(),
            selftest_runs: m.selftest_runs,
            selftest_max_p99_ms: m.selftest_max_p99_ms,
            margins: Margins::from(m),
            window,
            board: Board::default(),
            updating: Mutex::new(BTreeMap::new()),
            one_at_a_time: Mutex::new(()),
            history,
        }
    }

    /// Calls `f` with every state change (to report it to the hub).
    pub fn with_reporter(mut self, f: Reporter) -> Self {
        self.board.reporter = Some(f);
        self
    }

    /// Changes whenever an update changes state (verifying, testing, a swap, a watch window's
    /// end, a rollback, a refusal) and with download progress at its start, its end and at
    /// most once a second between ([`super::progress::PROGRESS_EVERY`]): the MQTT side then publishes the
    /// status and telemetry at once, so the hub sees a new version when it serves, not a
    /// telemetry interval later, and follows a slow download as it goes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.board.changes.subscribe()
    }

    /// The store of installed versions.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The key bundles must be signed with, when `models.trusted_key` names a readable one.
    pub fn trusted_key(&self) -> Option<&TrustedKey> {
        self.key.as_ref()
    }

    /// Marks an update of `model` to `version` as in progress: `Some(true)` when it starts now,
    /// `Some(false)` when that same update is already running, `None` when an update to another
    /// version is.
    pub fn begin_update(&self, model: &str, version: &str) -> Option<bool> {
        let mut u = self.updating.lock().unwrap_or_else(|p| p.into_inner());
        match u.get(model) {
            Some(v) if v == version => Some(false),
            Some(_) => None,
            None => {
                u.insert(model.to_string(), version.to_string());
                Some(true)
            }
        }
    }

    /// Ends the in-progress mark of `model`'s update.
    pub fn end_update(&self, model: &str) {
        self.updating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(model);
    }

    /// Records (and reports) a state from outside the install itself: download progress, a
    /// download refused.
    pub fn report_progress(&self, model: &str, version: &str, state: UpdateState) {
        self.report(model, version, state);
    }

    /// What telemetry carries to the hub: for every model, the last state of each of its most
    /// recent versions ([`REPORTS_PER_MODEL`]), oldest first, so that a refusal of one version
    /// is not hidden by another version's state that follows it closely.
    pub fn reports(&self) -> Vec<tandem_shared::mqtt::UpdateReport> {
        self.board.reports()
    }

    /// The last update of every model.
    pub fn status(&self) -> Vec<UpdateStatus> {
        self.board.status()
    }

    fn report(&self, model: &str, version: &str, state: UpdateState) {
        self.board.report(model, version, state);
    }

    /// Installs the bundle in `bundle_dir` and swaps it in (blocking: run it off the async
    /// reactor). One install at a time.
    pub fn install(&self, bundle_dir: &Path, order: Order) -> Result<Installed, InstallError> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        let read = read_folder(bundle_dir)?;
        // Unverified, only to find the serving version to compare with; verify decides.
        let claimed = bundle::parse(&read.bundle_json)
            .map(|d| (d.manifest.name, d.manifest.version))
            .unwrap_or_default();
        self.report(&claimed.0, &claimed.1, UpdateState::Verifying);
        let result = self.install_read(&read, order, &claimed.0);
        match &result {
            Ok(done) => self.report(
                &done.model,
                &done.to,
                UpdateState::Active {
                    from: done.from.clone(),
                },
            ),
            Err(e) => {
                tracing::warn!(model = %claimed.0, version = %claimed.1, reason = e.reason(), error = %e, "model update refused; the serving version stays");
                self.report(
                    &claimed.0,
                    &claimed.1,
                    UpdateState::Rejected {
                        reason: e.reason().to_string(),
                        message: e.to_string(),
                    },
                );
            }
        }
        result
    }

    fn install_read(
        &self,
        read: &tandem_engine::bundle::BundleFolder,
        order: Order,
        claimed: &str,
    ) -> Result<Installed, InstallError> {
        let key = match (&self.key, &self.key_problem) {
            (Some(k), _) => k,
            (None, Some(InstallError::TrustedKey { path, message })) => {
                return Err(InstallError::TrustedKey {
                    path: path.clone(),
                    message: message.clone(),
                });
            }
            (None, _) => return Err(InstallError::NoTrustedKey),
        };
        let serving = self.engine.model(claimed).cloned();
        let expect = Expect {
            role: self.role,
            model: None,
            active: serving.as_ref().map(|h| Active {
                version: h.version(),
                variant: &h.files.variant,
            }),
            allow_older: order.rollback,
        };
        let verified = bundle::verify(read.input(), key, &expect)?;
        let Some(serving) = serving else {
            return Err(InstallError::NotServed(verified.model().to_string()));
        };
        if !order.rollback
            && self
                .store
                .rolled_back(verified.model())
                .iter()
                .any(|v| v == verified.version())
        {
            return Err(InstallError::RolledBackBefore {
                version: verified.version().to_string(),
            });
        }
        let (name, version) = (verified.model().to_string(), verified.version().to_string());
        let dir = self.store.place(read, &verified)?;
        self.report(&name, &version, UpdateState::Testing);
        let tested = self.stage_and_swap(&dir, &verified, &serving);
        match tested {
            Ok(done) => {
                self.store.set_current(&name, &version, Some(&done.from))?;
                self.store.prune(&name);
                Ok(done)
            }
            Err(e) => {
                self.store.discard(&name, &version);
                Err(e)
            }
        }
    }

    /// What `serving` did in the last watch window (see [`Recent::baseline`]).
    fn baseline(&self, serving: &Arc<ModelHandle>) -> VersionSnapshot {
        let current = serving.stats();
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        match h.get(serving.name()) {
            Some(t) if t.handle.ptr_eq(&Arc::downgrade(serving)) => t.recent.baseline(
                Instant::now(),
                &current,
                self.window,
                self.margins.min_requests,
            ),
            _ => current,
        }
    }

    fn stage_and_swap(
        &self,
        dir: &Path,
        verified: &bundle::VerifiedBundle,
        serving: &Arc<ModelHandle>,
    ) -> Result<Installed, InstallError> {
        // The engine checks every file's sha256 again as it opens them.
        let files = model::open_dir(dir, verified.model(), self.role, true)?;
        let staged = self.engine.stage(files)?;
        // Another provider than the serving version's is fine: the engine only built it on one
        // that reproduces the reference outputs, and the self-tests below run on it.
        if let Some(ep) = staged.ep().filter(|ep| *ep != serving.ep) {
            tracing::info!(model = %serving.name(), from = %serving.ep, to = %ep, "the new version runs on another execution provider");
        }
        let report = selftest::run(
            &staged,
            dir,
            verified.selftests(),
            self.role,
            self.selftest_runs,
            self.selftest_max_p99_ms,
        )?;
        let baseline = self.baseline(serving);
        let swapped = self.engine.activate(staged)?;
        Ok(Installed {
            baseline,
            model: swapped.model,
            from: swapped.from,
            to: swapped.to,
            ep: swapped.ep.to_string(),
            selftests: report,
            drained_ms: u64::try_from(swapped.drained.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

impl Manager {
    /// Watches a version `install` just swapped in for `models.watch_window_s` (checking every
    /// `poll`), and rolls it back as soon as it does worse than the version it replaced did in
    /// the same length of time before the swap ([`Installed::baseline`], [`judge`]). Blocking.
    pub fn watch(&self, installed: &Installed, poll: Duration) -> Result<Watched, InstallError> {
        self.watch_for(installed, self.window, poll)
    }

    /// [`Manager::watch`] with another window.
    pub fn watch_for(
        &self,
        installed: &Installed,
        window: Duration,
        poll: Duration,
    ) -> Result<Watched, InstallError> {
        let model = installed.model.as_str();
        self.report(
            model,
            &installed.to,
            UpdateState::Watching {
                from: installed.from.clone(),
            },
        );
        let until = Instant::now() + window;
        loop {
            std::thread::sleep(poll.min(until.saturating_duration_since(Instant::now())));
            let Some(h) = self.engine.model(model).cloned() else {
                return Ok(Watched::Superseded);
            };
            if h.version() != installed.to {
                return Ok(Watched::Superseded);
            }
            let v = &h.files.variant;
            let threshold = match v.threshold_signal.unwrap_or(Signal::MaxProb) {
                Signal::MaxProb => v.threshold,
                _ => None,
            };
            match judge(&installed.baseline, &h.stats(), threshold, &self.margins) {
                Verdict::RollBack { reason, detail } => {
                    tracing::warn!(model, version = %installed.to, reason, detail = %detail, "new model version does worse than the one it replaced: rolling back");
                    let back = self.roll_back(model, &installed.to, reason, &detail)?;
                    return Ok(Watched::RolledBack {
                        reason,
                        detail,
                        to: back,
                    });
                }
                verdict if Instant::now() >= until => {
                    self.report(
                        model,
                        &installed.to,
                        UpdateState::Active {
                            from: installed.from.clone(),
                        },
                    );
                    return Ok(Watched::Kept(verdict));
                }
                _ => {}
            }
        }
    }

    /// Puts the previous version back in place of `bad` (an installed one, verified and
    /// self-tested again; or the shipped files), and remembers `bad` so that it is refused
    /// until a rollback to it is ordered. Returns the version serving now.
    fn roll_back(
        &self,
        model: &str,
        bad: &str,
        reason: &str,
        detail: &str,
    ) -> Result<String, InstallError> {
        self.store.mark_rolled_back(model, bad)?;
        let previous = self
            .store
            .previous(model)
            .filter(|v| self.store.version_dir(model, v).is_dir());
        let to = match previous {
            Some(v) => {
                let dir = self.store.version_dir(model, &v);
                self.install(&dir, Order { rollback: true })?.to
            }
            None => {
                let _one = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
                let shipped = self.store.shipped_dir(model);
                let files = model::open_dir(&shipped, model, self.role, true)?;
                let staged = self.engine.stage(files)?;
                let swapped = self.engine.activate(staged)?;
                self.store.clear_current(model)?;
                swapped.to
            }
        };
        self.report(
            model,
            bad,
            UpdateState::RolledBack {
                reason: reason.to_string(),
                message: detail.to_string(),
                to: to.clone(),
            },
        );
        Ok(to)
    }
}
