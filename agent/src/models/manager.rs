//! The model manager: verifies a bundle against the trusted key, installs it in the store,
//! stages it in the engine, runs its self-tests there and swaps it in; anything that fails
//! leaves the serving version untouched and is reported with its reason.

use super::error::InstallError;
use super::selftest::{self, SelfTestReport};
use super::store::Store;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tandem_engine::Engine;
use tandem_engine::bundle::read_folder;
use tandem_engine::model;
use tandem_engine::settings::EngineSettings;
use tandem_shared::bundle::{self, Active, Expect, TrustedKey};
use tandem_shared::manifest::VariantRole;

/// Where an update of one model stands (what the agent reports to the hub).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UpdateState {
    /// Checking the signature and the files.
    Verifying,
    /// Loading the new version beside the serving one and running its self-tests.
    Testing,
    /// Serving the new version.
    Active {
        /// The version it replaced.
        from: String,
    },
    /// Refused; the version before it keeps serving.
    Rejected {
        /// [`InstallError::reason`].
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
}

/// How an install was ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Order {
    /// An explicit rollback: a version older than the serving one is accepted.
    pub rollback: bool,
}

/// Called with every state change.
pub type Reporter = Box<dyn Fn(&UpdateStatus) + Send + Sync>;

/// Installs bundles into a running engine.
pub struct Manager {
    engine: Arc<Engine>,
    store: Store,
    key: Option<TrustedKey>,
    key_problem: Option<InstallError>,
    role: VariantRole,
    selftest_runs: usize,
    selftest_max_p99_ms: u64,
    status: Mutex<BTreeMap<String, UpdateStatus>>,
    one_at_a_time: Mutex<()>,
    reporter: Option<Reporter>,
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
            status: Mutex::new(BTreeMap::new()),
            one_at_a_time: Mutex::new(()),
            reporter: None,
        }
    }

    /// Calls `f` with every state change (to report it to the hub).
    pub fn with_reporter(mut self, f: Reporter) -> Self {
        self.reporter = Some(f);
        self
    }

    /// The store of installed versions.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The last update of every model.
    pub fn status(&self) -> Vec<UpdateStatus> {
        self.status
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    fn report(&self, model: &str, version: &str, state: UpdateState) {
        let s = UpdateStatus {
            model: model.to_string(),
            version: version.to_string(),
            state,
        };
        if let Some(r) = &self.reporter {
            r(&s);
        }
        if let Ok(mut all) = self.status.lock() {
            all.insert(model.to_string(), s);
        }
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

    fn stage_and_swap(
        &self,
        dir: &Path,
        verified: &bundle::VerifiedBundle,
        serving: &tandem_engine::ModelHandle,
    ) -> Result<Installed, InstallError> {
        // The engine checks every file's sha256 again as it opens them.
        let files = model::open_dir(dir, verified.model(), self.role, true)?;
        let staged = self.engine.stage(files)?;
        if let Some(ep) = staged.ep().filter(|ep| *ep != serving.ep) {
            return Err(InstallError::EpFallback {
                active: serving.ep.to_string(),
                staged: ep.to_string(),
            });
        }
        let report = selftest::run(
            &staged,
            dir,
            verified.selftests(),
            self.role,
            self.selftest_runs,
            self.selftest_max_p99_ms,
        )?;
        let swapped = self.engine.activate(staged)?;
        Ok(Installed {
            model: swapped.model,
            from: swapped.from,
            to: swapped.to,
            ep: swapped.ep.to_string(),
            selftests: report,
            drained_ms: u64::try_from(swapped.drained.as_millis()).unwrap_or(u64::MAX),
        })
    }
}
