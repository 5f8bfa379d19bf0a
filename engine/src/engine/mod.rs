//! The engine: for each model a bounded queue and worker threads that each own an ONNX Runtime
//! session. Pre-processing, the run and post-processing happen on those threads, never on the
//! async reactor.
//!
//! Each worker has its own bounded queue (a lane; `engine.queue_capacity` is split evenly
//! across them). A request goes to the least-loaded lane, the first one on a tie, so a lightly
//! loaded model keeps using the same warm session (its caches and thread pool) instead of
//! alternating between sessions.
//!
//! Queue policy when full: the new request is refused at once with
//! [`InferenceError::QueueFull`] (HTTP 503 + Retry-After) and counted; accepted work is never
//! dropped. A request whose caller has gone (timed out) is skipped when a worker reaches it.
//!
//! Layout: `request` (what callers send and get back, and the errors), `worker` (the worker
//! threads: batching, pre-processing, the run, post-processing).

mod failover;
mod prepare;
mod request;
#[cfg(test)]
mod tests;
mod worker;

pub use request::{EngineError, Inference, InferenceError, Input, OutputTensor, Timing};
use worker::{Ctx, Prep};

use crate::generations::Generations;
use crate::metrics::Metrics;
use crate::model::{self, ModelError, ModelFiles};
use crate::preprocess::image::Limits;
use crate::preprocess::text::TextEncoder;
use crate::provider::{self};
use crate::settings::EngineSettings;
use crate::version_stats::{VersionSnapshot, VersionStats};
use crossbeam_channel::{Sender, TrySendError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tandem_shared::manifest::Preprocess;
use tandem_shared::provider::ExecutionProvider;
use tokio::sync::oneshot;

pub(crate) struct Job {
    input: Input,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Inference, InferenceError>>,
    /// The submitter's span (a daemon's `request{device, model, request_id}`): the worker
    /// logs the job's outcome in it.
    span: tracing::Span,
}

/// Where a job's answer arrives.
pub(crate) type Reply = oneshot::Receiver<Result<Inference, InferenceError>>;

impl Job {
    pub(crate) fn new(input: Input) -> (Self, Reply) {
        let (reply, rx) = oneshot::channel();
        let job = Self {
            input,
            enqueued: Instant::now(),
            reply,
            span: tracing::Span::current(),
        };
        (job, rx)
    }
}

/// A loaded model: its files, provider, queue and workers.
pub struct ModelHandle {
    /// Manifest, variant, labels.
    pub files: ModelFiles,
    /// Provider in use.
    pub ep: ExecutionProvider,
    /// Providers passed over, with reasons.
    pub skipped_eps: Vec<(ExecutionProvider, String)>,
    /// What was measured of each provider tried (accuracy against the reference outputs,
    /// speed with `auto`).
    pub ep_measured: Vec<provider::Measure>,
    /// Whether the provider was chosen by measurement (`execution_providers = ["auto"]`).
    pub ep_auto: bool,
    /// Failover order (the configured list; with `auto` the accurate providers, fastest first).
    ep_order: Vec<ExecutionProvider>,
    /// Times a worker's session moved to the next provider after a run-time failure.
    ep_failovers: Arc<std::sync::atomic::AtomicU64>,
    /// Index in `ep_order` of the provider the last move went to.
    ep_current: Arc<AtomicUsize>,
    /// Test hooks shared with the workers (feature `fault-injection`).
    #[cfg(any(test, feature = "fault-injection"))]
    faults: Arc<Mutex<failover::Faults>>,
    capacity: usize,
    max_rows: usize,
    lanes: Mutex<Option<Vec<Lane>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Counted in the metrics (false while staged for a swap, before its self-tests pass).
    live: Arc<AtomicBool>,
    /// Replaced by a swap: a request that reaches it goes to the current handle instead.
    retired: AtomicBool,
    /// What this version did while it served.
    stats: Arc<VersionStats>,
    /// Test hook shared with the workers: the next run panics.
    #[cfg(test)]
    fail_next: Arc<AtomicBool>,
}

/// Why a job could not be queued on a handle.
pub(crate) enum Enqueue {
    /// Every lane is full.
    Full,
    /// The handle was replaced by a swap: the job comes back, to go to the current one.
    Retired(Job),
    /// The engine is stopping.
    Closed,
}

/// One worker's queue and its load (queued + running).
struct Lane {
    tx: Sender<Job>,
    load: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHandle")
            .field("model", &self.files.manifest.name)
            .field("ep", &self.ep)
            .finish_non_exhaustive()
    }
}

impl ModelHandle {
    /// Model name.
    pub fn name(&self) -> &str {
        &self.files.manifest.name
    }
    /// Requests waiting.
    pub fn queue_depth(&self) -> usize {
        self.lanes
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|l| l.iter().map(|l| l.tx.len()).sum()))
            .unwrap_or(0)
    }
    /// Whether the model accepts requests.
    pub fn ready(&self) -> bool {
        self.lanes.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// Waiting requests it accepts.
    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// Most rows one request may carry (`engine.max_rows_per_request`).
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// What this version did while it served (this generation only).
    pub fn stats(&self) -> VersionSnapshot {
        self.stats.snapshot()
    }

    /// Model version.
    pub fn version(&self) -> &str {
        &self.files.manifest.version
    }

    /// Queues a job on the least-loaded lane (the first one on a tie).
    pub(crate) fn enqueue(&self, job: Job) -> Result<(), Enqueue> {
        let Ok(guard) = self.lanes.lock() else {
            return Err(Enqueue::Closed);
        };
        // The first least-loaded lane: if it is full, every lane is.
        let Some(lane) = guard
            .as_ref()
            .and_then(|lanes| lanes.iter().min_by_key(|l| l.load.load(Ordering::Acquire)))
        else {
            return Err(if self.retired.load(Ordering::Acquire) {
                Enqueue::Retired(job)
            } else {
                Enqueue::Closed
            });
        };
        lane.load.fetch_add(1, Ordering::AcqRel);
        match lane.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                lane.load.fetch_sub(1, Ordering::AcqRel);
                match e {
                    TrySendError::Full(_) => Err(Enqueue::Full),
                    TrySendError::Disconnected(_) => Err(Enqueue::Closed),
                }
            }
        }
    }

    /// Stops accepting, lets the workers finish what is queued, and joins them. With
    /// `retire`, requests that still reach this handle go to the current one instead.
    pub(crate) fn stop(&self, retire: bool) {
        if retire {
            self.retired.store(true, Ordering::Release);
        }
        if let Ok(mut g) = self.lanes.lock() {
            g.take();
        }
        let workers = self
            .workers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for w in workers {
            let _ = w.join();
        }
    }

    /// Times a worker's session moved to the next provider after a run-time failure.
    pub fn ep_failovers(&self) -> u64 {
        self.ep_failovers.load(Ordering::Acquire)
    }

    /// The provider serving now: the one chosen at load, or the one the last failover (or
    /// return after one) moved to.
    pub fn ep_now(&self) -> ExecutionProvider {
        self.ep_order
            .get(self.ep_current.load(Ordering::Acquire))
            .copied()
            .unwrap_or(self.ep)
    }

    /// Test hook (feature `fault-injection`): runs on `ep` fail as on a lost device, and no
    /// session can be built on it (None: it works again).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn lose_device(&self, ep: Option<ExecutionProvider>) {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).lost = ep;
    }

    /// Test hook (feature `fault-injection`): runs on `ep` fail, while sessions still build
    /// on it and pass the accuracy gate (None: they work again).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn fail_runs(&self, ep: Option<ExecutionProvider>) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .runs_fail = ep;
    }

    /// Test hook: the next run on this model panics inside the worker.
    #[cfg(test)]
    pub(crate) fn fail_next(&self) {
        self.fail_next.store(true, Ordering::Release);
    }

    /// Starts counting this handle's work in the metrics.
    pub(crate) fn go_live(&self) {
        self.live.store(true, Ordering::Release);
    }
}

/// start-up. Returns the library path with the engine.
pub fn start(
    settings: &EngineSettings,
    metrics: Arc<Metrics>,
) -> Result<(&'static std::path::Path, Engine), StartError> {
    let (lib, env) = crate::runtime::init(settings)?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    Ok((lib, Engine::start(settings, &env, metrics)?))
}

/// Why [`start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// ONNX Runtime missing or unusable.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// Models could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The engine: every loaded model by name, each a list of generations whose last entry
/// serves (a hot swap appends one: `swap`).
#[derive(Debug)]
pub struct Engine {
    models: BTreeMap<String, Generations<Arc<ModelHandle>>>,
    metrics: Arc<Metrics>,
    /// What a swap loads the new version with.
    pub(crate) settings: EngineSettings,
    pub(crate) env: ort::environment::Environment,
    /// The plugin EP libraries of the config, registered.
    pub(crate) plugins: Vec<provider::plugins::Plugin>,
    /// One swap at a time.
    pub(crate) swapping: Mutex<()>,
}

impl Engine {
    /// Loads the models the config names (all found when `models.enabled` is empty) on the
    /// config's variant. An auto-discovered model whose variant is optional and absent is skipped
    /// with a warning; anything else that fails stops start-up.
    pub fn start(
        cfg: &EngineSettings,
        env: &ort::environment::Environment,
        metrics: Arc<Metrics>,
    ) -> Result<Self, EngineError> {
        let dir = cfg.resolve(&cfg.models.dir);
        let (names, explicit) = if cfg.models.enabled.is_empty() {
            (model::discover(&dir)?, false)
        } else {
            (cfg.models.enabled.clone(), true)
        };
        let plugins = provider::plugins_for(cfg, env);
        let mut models = BTreeMap::new();
        for name in names {
            match model::open(&dir, &name, cfg.variant(), cfg.models.verify_sha256) {
                Ok(files) => {
                    let h = Self::load_model(cfg, env, &plugins, files, metrics.clone(), true)?;
                    tracing::info!(model = %name, ep = %h.ep, variant = cfg.variant().as_str(), "model loaded");
                    models.insert(name, Generations::new(Arc::new(h)));
                }
                Err(e @ (ModelError::MissingFile { .. } | ModelError::NoVariant { .. }))
                    if !explicit =>
                {
                    tracing::warn!(model = %name, error = %e, "model skipped");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if models.is_empty() {
            return Err(EngineError::NoModels(dir.display().to_string()));
        }
        Ok(Self {
            models,
            metrics,
            settings: cfg.clone(),
            env: env.clone(),
            plugins,
            swapping: Mutex::new(()),
        })
    }

    /// Loads a model's sessions and starts its workers; `live`: counted in the metrics.
    pub(crate) fn load_model(
        cfg: &EngineSettings,
        env: &ort::environment::Environment,
        plugins: &[provider::plugins::Plugin],
        files: ModelFiles,
        metrics: Arc<Metrics>,
        live: bool,
    ) -> Result<ModelHandle, EngineError> {
        let name = files.manifest.name.clone();
        let prep = match &files.variant.preprocess {
            Preprocess::Image(p) => {
                // A BGR model is fed as RGB with mean/std reversed, then its channels swapped.
                let p = p.rgb_equivalent();
                let (backend, why) = crate::preprocess::choose(&p, cfg.image.preprocess_device);
                tracing::info!(model = %name, backend = ?backend, "image pre-processing: {why}");
                Prep::Image(p, Limits::from(&cfg.image), backend)
            }
            Preprocess::Text(t) => Prep::Text(Box::new(
                TextEncoder::load(&files.dir.join(&t.tokenizer), t).map_err(|message| {
                    EngineError::Tokenizer {
                        model: name.clone(),
                        message,
                    }
                })?,
            )),
        };
        let cases = provider::accuracy::load(&files).map_err(|message| EngineError::Reference {
            model: name.clone(),
            message,
        })?;
        let digest = files
            .manifest
            .files
            .get(&files.variant.file)
            .cloned()
            .unwrap_or_default();
        let path = files.onnx_path();
        let selector = provider::Selector {
            params: provider::session::Params {
                env,
                path: &path,
                intra_threads: cfg.runtime.intra_op_threads,
                spinning: cfg.runtime.intra_op_spinning,
                options: &cfg.runtime.ep,
                plugins,
                rows_per_run: cfg.engine.max_rows_per_run,
            },
            order: cfg.providers(),
            auto: cfg.auto_providers(),
            cases: cases.clone(),
            tolerance: cfg
                .runtime
                .accuracy_tolerance(files.variant.ep_max_abs_diff),
            digest: digest.clone(),
            cache_file: cfg.ep_choice_cache(),
        };
        let mut sessions = Vec::with_capacity(cfg.engine.workers);
        let first = selector.build()?;
        let (ep, skipped_eps, ep_measured) = (first.ep, first.skipped, first.measured);
        sessions.push(first.session);
        for _ in 1..cfg.engine.workers {
            sessions.push(selector.build_on(ep)?);
        }
        let ep_order = failover::order(cfg, &ep_measured);
        let ep_current = Arc::new(AtomicUsize::new(
            ep_order.iter().position(|e| *e == ep).unwrap_or(0),
        ));
        let ep_failovers = Arc::new(std::sync::atomic::AtomicU64::new(0));
        #[cfg(any(test, feature = "fault-injection"))]
        let faults = Arc::new(Mutex::new(failover::Faults::default()));
        let rebuild = failover::Rebuild {
            env: env.clone(),
            settings: cfg.clone(),
            plugins: plugins.to_vec(),
            path: path.clone(),
            cases,
            tolerance: selector.tolerance,
            digest,
            order: ep_order.clone(),
            failovers: ep_failovers.clone(),
            current: ep_current.clone(),
            #[cfg(any(test, feature = "fault-injection"))]
            faults: faults.clone(),
        };
        let per_lane = cfg.engine.queue_capacity.div_ceil(sessions.len()).max(1);
        let live = Arc::new(AtomicBool::new(live));
        let stats = Arc::new(VersionStats::default());
        #[cfg(test)]
        let fail_next = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            model: name.clone(),
            version: files.manifest.version.clone(),
            files: files.clone(),
            prep,
            ep,
            top_k: cfg.engine.top_k,
            spin: Duration::from_micros(cfg.engine.spin_us),
            max_batch: cfg.engine.max_batch,
            max_batch_delay: Duration::from_micros(cfg.engine.max_batch_delay_us),
            rows_per_run: cfg.engine.max_rows_per_run,
            metrics,
            live: live.clone(),
            stats: stats.clone(),
            rebuild,
            #[cfg(test)]
            fail_next: fail_next.clone(),
        });
        let mut workers = Vec::new();
        let mut lanes = Vec::new();
        for (i, session) in sessions.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded::<Job>(per_lane);
            let load = Arc::new(AtomicUsize::new(0));
            let (ctx, l) = (ctx.clone(), load.clone());
            let h = std::thread::Builder::new()
                .name(format!("infer-{name}-{i}"))
                .spawn(move || {
                    let slot = failover::Slot::new(session, ep, &ctx.rebuild);
                    worker::run(slot, &ctx, &rx, &l);
                })
                .map_err(EngineError::Thread)?;
            workers.push(h);
            lanes.push(Lane { tx, load });
        }
        Ok(ModelHandle {
            files,
            ep,
            skipped_eps,
            ep_measured,
            ep_auto: cfg.auto_providers(),
            ep_order,
            ep_failovers,
            ep_current,
            #[cfg(any(test, feature = "fault-injection"))]
            faults,
            capacity: cfg.engine.queue_capacity,
            max_rows: cfg.engine.max_rows_per_request,
            lanes: Mutex::new(Some(lanes)),
            workers: Mutex::new(workers),
            live,
            retired: AtomicBool::new(false),
            stats,
            #[cfg(test)]
            fail_next,
        })
    }

    /// The generations of a model (swap).
    pub(crate) fn generations(&self, name: &str) -> Option<&Generations<Arc<ModelHandle>>> {
        self.models.get(name)
    }

    /// Loaded models by name (the version serving now).
    pub fn models(&self) -> impl Iterator<Item = &Arc<ModelHandle>> {
        self.models.values().filter_map(Generations::current)
    }

    /// One loaded model (the version serving now).
    pub fn model(&self, name: &str) -> Option<&Arc<ModelHandle>> {
        self.models.get(name)?.current()
    }

    /// The devices ONNX Runtime discovers here, with this config's plugins registered (the
    /// hardware inventory in the agent's status and the hub's fleet view).
    pub fn accelerators(&self) -> Vec<tandem_shared::provider::Accelerator> {
        provider::plugins::inventory(&self.env)
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Classes a classification answers unless a request asks another `k`
    /// (`engine.top_k`).
    pub fn top_k(&self) -> usize {
        self.settings.engine.top_k
    }

    /// Queues a request; the answer arrives on the returned channel. A request with more rows
    /// than `engine.max_rows_per_request` is refused here, before anything is decoded.
    pub fn submit(
        &self,
        model: &str,
        input: Input,
    ) -> Result<oneshot::Receiver<Result<Inference, InferenceError>>, InferenceError> {
        let unknown = || InferenceError::UnknownModel(model.to_string());
        let generations = self.models.get(model).ok_or_else(unknown)?;
        let limit = self.settings.engine.max_rows_per_request;
        let rows = input.rows();
        if rows > limit {
            return Err(InferenceError::TooManyRows { rows, limit });
        }
        let (mut job, rx) = Job::new(input);
        // A handle replaced by a swap between the lookup and the queueing hands the job back:
        // the current one takes it (a swap publishes the new handle before retiring the old).
        for _ in 0..8 {
            let h = generations.current().ok_or_else(unknown)?;
            match h.enqueue(job) {
                Ok(()) => return Ok(rx),
                Err(Enqueue::Retired(back)) => job = back,
                Err(Enqueue::Full) => {
                    self.metrics.rejected(model);
                    return Err(InferenceError::QueueFull {
                        model: model.to_string(),
                        capacity: h.capacity,
                    });
                }
                Err(Enqueue::Closed) => return Err(InferenceError::ShuttingDown),
            }
        }
        Err(InferenceError::ShuttingDown)
    }

    /// Runs a request and waits for it (async callers).
    pub async fn infer(&self, model: &str, input: Input) -> Result<Inference, InferenceError> {
        self.submit(model, input)?
            .await
            .map_err(|_| InferenceError::ShuttingDown)?
    }

    /// Runs a request and waits for it (threads outside the async runtime).
    pub fn infer_blocking(&self, model: &str, input: Input) -> Result<Inference, InferenceError> {
        self.submit(model, input)?
            .blocking_recv()
            .map_err(|_| InferenceError::ShuttingDown)?
    }

    /// Stops accepting, lets the workers finish what is queued, and joins them.
    pub fn shutdown(&self) {
        for h in self.models.values().flat_map(Generations::iter) {
            h.stop(false);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
