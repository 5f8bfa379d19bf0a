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

use crate::batch;
use crate::generations::Generations;
use crate::metrics::Metrics;
use crate::model::{self, ModelError, ModelFiles};
use crate::postprocess::{self, Prediction};
use crate::preprocess::PreprocessError;
use crate::preprocess::image::{self as img, Limits};
use crate::preprocess::text::TextEncoder;
use crate::provider::{self, NoProvider};
use crate::settings::EngineSettings;
use crate::version_stats::{VersionSnapshot, VersionStats};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tandem_shared::manifest::{DType, OutputKind, Preprocess, VariantRole};
use tandem_shared::oip::{InputTensor, TensorData};
use tandem_shared::provider::ExecutionProvider;
use tokio::sync::oneshot;

/// What a caller asks a model to classify: a batch of one kind.
#[derive(Debug, Clone)]
pub enum Input {
    /// Encoded image files (JPEG/PNG).
    Images(Vec<Bytes>),
    /// Texts.
    Texts(Vec<String>),
    /// Prepared tensors, named as the model's inputs. Shared, so a caller can submit the same
    /// buffer many times without copying it; the worker reads it in place.
    Tensors(Arc<Vec<InputTensor>>),
}

impl Input {
    /// Prepared tensors.
    pub fn tensors(t: Vec<InputTensor>) -> Self {
        Self::Tensors(Arc::new(t))
    }

    fn is_tensors(&self) -> bool {
        matches!(self, Self::Tensors(_))
    }
}

/// A raw model output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Output name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Elements.
    pub data: TensorData,
}

/// Where the time went, in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timing {
    /// Waiting in the queue.
    pub queue_us: u64,
    /// Decoding / tokenising.
    pub preprocess_us: u64,
    /// `Session::run`.
    pub run_us: u64,
    /// Post-processing.
    pub postprocess_us: u64,
    /// Submission to answer.
    pub total_us: u64,
    /// Requests that ran together in this batch (1 without batching).
    pub batch_size: usize,
}

/// The answer for one batch.
#[derive(Debug, Clone)]
pub struct Inference {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Variant that ran.
    pub variant: VariantRole,
    /// Execution provider that ran it.
    pub ep: ExecutionProvider,
    /// Raw outputs.
    pub outputs: Vec<OutputTensor>,
    /// One prediction per batch row.
    pub predictions: Vec<Prediction>,
    /// Timings.
    pub timing: Timing,
}

impl Inference {
    /// The answer for batch row `row` as a JSON object: what `/v1/classify` returns and
    /// `infer --json` prints (callers add their own fields). `None` when the row is absent.
    pub fn answer(&self, row: usize) -> Option<serde_json::Map<String, serde_json::Value>> {
        let p = self.predictions.get(row)?;
        let v = serde_json::json!({
            "model": self.model,
            "version": self.version,
            "variant": self.variant.as_str(),
            "label": p.label,
            "index": p.index,
            "score": p.score,
            "top_k": p.top_k,
            "signals": p.signals,
            "route": "local",
            "degraded": false,
            "ep": self.ep.as_str(),
            "latency_ms": self.timing.total_us as f64 / 1000.0,
            "timing_us": self.timing,
        });
        match v {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        }
    }
}

/// Why an inference did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    /// No such model loaded.
    #[error("model `{0}` is not loaded")]
    UnknownModel(String),
    /// Input could not be pre-processed.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// Input does not fit the model.
    #[error("{0}")]
    BadInput(String),
    /// The model's queue is full.
    #[error("model `{model}` is busy: {capacity} requests already waiting")]
    QueueFull {
        /// Model name.
        model: String,
        /// Queue capacity.
        capacity: usize,
    },
    /// The engine is stopping.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// ONNX Runtime failed.
    #[error("inference failed: {0}")]
    Runtime(String),
}

impl InferenceError {
    /// A short kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownModel(_) => "unknown_model",
            Self::Preprocess(_) | Self::BadInput(_) => "bad_input",
            Self::QueueFull { .. } => "queue_full",
            Self::ShuttingDown => "shutting_down",
            Self::Runtime(_) => "runtime",
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Model folder problem.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No provider could load a model.
    #[error(transparent)]
    Session(#[from] NoProvider),
    /// A tokenizer failed to load.
    #[error("tokenizer for `{model}`: {message}")]
    Tokenizer {
        /// Model name.
        model: String,
        /// What failed.
        message: String,
    },
    /// Nothing to serve.
    #[error("no models to load from {0}")]
    NoModels(String),
    /// A thread could not start.
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
}

enum Prep {
    Image(tandem_shared::manifest::ImagePreprocess, Limits),
    Text(Box<TextEncoder>),
}

pub(crate) struct Job {
    input: Input,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Inference, InferenceError>>,
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
    capacity: usize,
    lanes: Mutex<Option<Vec<Lane>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Counted in the metrics (false while staged for a swap, before its self-tests pass).
    live: Arc<AtomicBool>,
    /// Replaced by a swap: a request that reaches it goes to the current handle instead.
    retired: AtomicBool,
    /// What this version did while it served.
    stats: Arc<VersionStats>,
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

    /// Starts counting this handle's work in the metrics.
    pub(crate) fn go_live(&self) {
        self.live.store(true, Ordering::Release);
    }
}

struct Ctx {
    model: String,
    version: String,
    files: ModelFiles,
    prep: Prep,
    ep: ExecutionProvider,
    top_k: usize,
    spin: Duration,
    max_batch: usize,
    max_batch_delay: Duration,
    metrics: Arc<Metrics>,
    live: Arc<AtomicBool>,
    stats: Arc<VersionStats>,
}

impl Ctx {
    fn counted(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
}

/// Loads ONNX Runtime as the settings say and starts the engine: what a daemon does at
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
        let mut models = BTreeMap::new();
        for name in names {
            match model::open(&dir, &name, cfg.variant(), cfg.models.verify_sha256) {
                Ok(files) => {
                    let h = Self::load_model(cfg, env, files, metrics.clone(), true)?;
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
            swapping: Mutex::new(()),
        })
    }

    /// Loads a model's sessions and starts its workers; `live`: counted in the metrics.
    pub(crate) fn load_model(
        cfg: &EngineSettings,
        env: &ort::environment::Environment,
        files: ModelFiles,
        metrics: Arc<Metrics>,
        live: bool,
    ) -> Result<ModelHandle, EngineError> {
        let name = files.manifest.name.clone();
        let prep = match &files.variant.preprocess {
            Preprocess::Image(p) => Prep::Image(p.clone(), Limits::from(&cfg.image)),
            Preprocess::Text(t) => Prep::Text(Box::new(
                TextEncoder::load(&files.dir.join(&t.tokenizer), t).map_err(|message| {
                    EngineError::Tokenizer {
                        model: name.clone(),
                        message,
                    }
                })?,
            )),
        };
        let order = cfg.providers();
        let mut sessions = Vec::with_capacity(cfg.engine.workers);
        let first = provider::build_session(
            env,
            &files.onnx_path(),
            &order,
            cfg.runtime.intra_op_threads,
            cfg.runtime.intra_op_spinning,
        )?;
        let (ep, skipped_eps) = (first.ep, first.skipped);
        sessions.push(first.session);
        for _ in 1..cfg.engine.workers {
            sessions.push(
                provider::build_session(
                    env,
                    &files.onnx_path(),
                    &[ep],
                    cfg.runtime.intra_op_threads,
                    cfg.runtime.intra_op_spinning,
                )?
                .session,
            );
        }
        let per_lane = cfg.engine.queue_capacity.div_ceil(sessions.len()).max(1);
        let live = Arc::new(AtomicBool::new(live));
        let stats = Arc::new(VersionStats::default());
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
            metrics,
            live: live.clone(),
            stats: stats.clone(),
        });
        let mut workers = Vec::new();
        let mut lanes = Vec::new();
        for (i, session) in sessions.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded::<Job>(per_lane);
            let load = Arc::new(AtomicUsize::new(0));
            let (ctx, l) = (ctx.clone(), load.clone());
            let h = std::thread::Builder::new()
                .name(format!("infer-{name}-{i}"))
                .spawn(move || worker(session, &ctx, &rx, &l))
                .map_err(EngineError::Thread)?;
            workers.push(h);
            lanes.push(Lane { tx, load });
        }
        Ok(ModelHandle {
            files,
            ep,
            skipped_eps,
            capacity: cfg.engine.queue_capacity,
            lanes: Mutex::new(Some(lanes)),
            workers: Mutex::new(workers),
            live,
            retired: AtomicBool::new(false),
            stats,
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

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Queues a request; the answer arrives on the returned channel.
    pub fn submit(
        &self,
        model: &str,
        input: Input,
    ) -> Result<oneshot::Receiver<Result<Inference, InferenceError>>, InferenceError> {
        let unknown = || InferenceError::UnknownModel(model.to_string());
        let generations = self.models.get(model).ok_or_else(unknown)?;
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

/// Waits for the next job: polls for up to `spin` first (a job that follows closely then skips
/// the thread wake-up, tens of microseconds on a VM), then blocks.
fn next_job(rx: &Receiver<Job>, spin: Duration) -> Option<Job> {
    if !spin.is_zero() {
        let until = Instant::now() + spin;
        while Instant::now() < until {
            match rx.try_recv() {
                Ok(job) => return Some(job),
                Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            }
        }
    }
    rx.recv().ok()
}

fn worker(mut session: Session, ctx: &Ctx, rx: &Receiver<Job>, load: &AtomicUsize) {
    let mut carry: Option<Job> = None;
    loop {
        let Some(first) = carry.take().or_else(|| next_job(rx, ctx.spin)) else {
            return;
        };
        if first.reply.is_closed() {
            load.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let mut jobs = vec![first];
        if ctx.max_batch > 1 {
            // Gather what is queued, waiting at most max_batch_delay for more.
            let until = Instant::now() + ctx.max_batch_delay;
            while jobs.len() < ctx.max_batch {
                let left = until.saturating_duration_since(Instant::now());
                let next = if left.is_zero() {
                    rx.try_recv().ok()
                } else {
                    rx.recv_timeout(left).ok()
                };
                match next {
                    None => break,
                    Some(j) if j.reply.is_closed() => {
                        load.fetch_sub(1, Ordering::AcqRel);
                    }
                    Some(j) if batch::compatible(&jobs[0].input, &j.input) => jobs.push(j),
                    Some(j) => {
                        carry = Some(j);
                        break;
                    }
                }
            }
        }
        run_jobs(&mut session, ctx, jobs, load);
    }
}

/// Runs one request, or several as one batch; a batch that fails on its input is retried one
/// request at a time, so only the bad request gets the error.
fn run_jobs(session: &mut Session, ctx: &Ctx, jobs: Vec<Job>, load: &AtomicUsize) {
    let finish = |job: Job, result: Result<Inference, InferenceError>| {
        let took = job.enqueued.elapsed();
        let result = result.map(|mut inf| {
            inf.timing.total_us = micros_of(took);
            inf
        });
        match &result {
            _ if !ctx.counted() => {}
            Ok(inf) => {
                ctx.metrics.inference(&ctx.model, "ok", took);
                ctx.stats
                    .answered(took, inf.predictions.iter().map(|p| p.score));
            }
            Err(e) => {
                ctx.metrics.inference(&ctx.model, e.kind(), took);
                if matches!(e, InferenceError::Runtime(_)) {
                    ctx.stats.failed();
                }
            }
        }
        load.fetch_sub(1, Ordering::AcqRel);
        let _ = job.reply.send(result);
    };
    // `requests`: how many requests this run answers (the batch-size histogram).
    let run_one = |session: &mut Session, input: Input, enqueued: Instant, requests: usize| {
        if ctx.counted() {
            ctx.metrics.batch(&ctx.model, requests);
        }
        let from_tensors = input.is_tensors();
        run_job(session, ctx, input, enqueued).map_err(|e| match e {
            InferenceError::Runtime(m) if from_tensors => {
                InferenceError::BadInput(format!("the model refused the tensors: {m}"))
            }
            other => other,
        })
    };
    if jobs.len() == 1 {
        for mut job in jobs {
            let input = std::mem::replace(&mut job.input, Input::Texts(Vec::new()));
            let r = run_one(session, input, job.enqueued, 1);
            finish(job, r);
        }
        return;
    }
    if jobs
        .first()
        .is_some_and(|j| matches!(j.input, Input::Texts(_)))
    {
        // Texts pad to the longest of their batch: run groups of similar length apart.
        let groups = batch::group_by_length(jobs.iter().map(|j| &j.input));
        if groups.len() > 1 {
            let mut slots: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
            for g in groups {
                let group: Vec<Job> = g.into_iter().filter_map(|i| slots[i].take()).collect();
                run_jobs(session, ctx, group, load);
            }
            return;
        }
    }
    let start = Instant::now();
    let inputs: Vec<Input> = jobs.iter().map(|j| j.input.clone()).collect();
    let rows: Vec<usize> = inputs.iter().map(batch::rows).collect();
    let earliest = jobs.iter().map(|j| j.enqueued).min().unwrap_or(start);
    let merged = batch::merge(&inputs)
        .ok_or_else(|| InferenceError::BadInput("inputs cannot be batched".into()));
    match merged.and_then(|m| run_one(session, m, earliest, jobs.len())) {
        Ok(inf) => {
            let n = jobs.len();
            for (job, mut part) in jobs.into_iter().zip(batch::split(&inf, &rows)) {
                part.timing.queue_us = micros_of(start.duration_since(job.enqueued));
                part.timing.batch_size = n;
                finish(job, Ok(part));
            }
        }
        Err(InferenceError::Runtime(m)) => {
            for job in jobs {
                finish(job, Err(InferenceError::Runtime(m.clone())));
            }
        }
        Err(_) => {
            for (job, input) in jobs.into_iter().zip(inputs) {
                let r = run_one(session, input, job.enqueued, 1);
                finish(job, r);
            }
        }
    }
}

fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn micros(since: Instant) -> u64 {
    micros_of(since.elapsed())
}

fn prepare(ctx: &Ctx, input: Input) -> Result<Arc<Vec<InputTensor>>, InferenceError> {
    let name = &ctx.model;
    match (input, &ctx.prep) {
        (Input::Images(images), Prep::Image(p, limits)) => {
            let refs: Vec<&[u8]> = images.iter().map(|b| b.as_ref()).collect();
            let (shape, data) = img::prepare_batch(&refs, p, limits)?;
            let input_name = ctx
                .files
                .variant
                .inputs
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default();
            Ok(Arc::new(vec![InputTensor {
                name: input_name,
                shape,
                data: TensorData::F32(data),
            }]))
        }
        (Input::Texts(texts), Prep::Text(enc)) => {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(Arc::new(
                enc.encode_batch(&refs)?
                    .into_iter()
                    .map(|(name, shape, data)| InputTensor {
                        name,
                        shape,
                        data: TensorData::I64(data),
                    })
                    .collect(),
            ))
        }
        (Input::Tensors(t), _) => {
            check_tensors(ctx, &t)?;
            Ok(t)
        }
        (Input::Images(_), Prep::Text(_)) => Err(InferenceError::BadInput(format!(
            "model `{name}` classifies text, not images"
        ))),
        (Input::Texts(_), Prep::Image(..)) => Err(InferenceError::BadInput(format!(
            "model `{name}` classifies images, not text"
        ))),
    }
}

fn check_tensors(ctx: &Ctx, tensors: &[InputTensor]) -> Result<(), InferenceError> {
    let specs = &ctx.files.variant.inputs;
    for t in tensors {
        let Some(spec) = specs.iter().find(|s| s.name == t.name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(InferenceError::BadInput(format!(
                "model `{}` has no input `{}` (inputs: {})",
                ctx.model,
                t.name,
                known.join(", ")
            )));
        };
        let ok_type = matches!(
            (&t.data, spec.dtype),
            (TensorData::F32(_), DType::Float32) | (TensorData::I64(_), DType::Int64)
        );
        if !ok_type {
            return Err(InferenceError::BadInput(format!(
                "input `{}` must be {}, got {}",
                t.name,
                spec.dtype.oip_name(),
                t.data.datatype()
            )));
        }
        if !spec.accepts_shape(&t.shape) {
            return Err(InferenceError::BadInput(format!(
                "input `{}` has shape {:?}; the model takes {:?} (-1 = any)",
                t.name, t.shape, spec.shape
            )));
        }
    }
    for spec in specs {
        if !tensors.iter().any(|t| t.name == spec.name) {
            return Err(InferenceError::BadInput(format!(
                "input `{}` is missing",
                spec.name
            )));
        }
    }
    let batch: Vec<i64> = tensors
        .iter()
        .filter_map(|t| t.shape.first().copied())
        .collect();
    if batch.windows(2).any(|w| w[0] != w[1]) {
        return Err(InferenceError::BadInput(format!(
            "inputs disagree on the batch size: {batch:?}"
        )));
    }
    Ok(())
}

fn run_job(
    session: &mut Session,
    ctx: &Ctx,
    input: Input,
    enqueued: Instant,
) -> Result<Inference, InferenceError> {
    let queue_us = micros(enqueued);
    let t = Instant::now();
    let tensors = prepare(ctx, input)?;
    let preprocess_us = micros(t);
    let rt = |e: ort::Error| InferenceError::Runtime(e.to_string());

    let t = Instant::now();
    let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(tensors.len());
    for tensor in tensors.iter() {
        let v: SessionInputValue<'_> = match &tensor.data {
            TensorData::F32(d) => TensorRef::from_array_view((tensor.shape.clone(), d.as_slice()))
                .map_err(rt)?
                .into(),
            TensorData::I64(d) => TensorRef::from_array_view((tensor.shape.clone(), d.as_slice()))
                .map_err(rt)?
                .into(),
            TensorData::Bytes(_) => {
                return Err(InferenceError::BadInput(
                    "BYTES tensors are not model inputs".into(),
                ));
            }
        };
        values.push((Cow::Borrowed(tensor.name.as_str()), v));
    }
    let outputs = session.run(values).map_err(rt)?;
    let mut raw = Vec::with_capacity(ctx.files.variant.outputs.len());
    for spec in &ctx.files.variant.outputs {
        let v = outputs.get(&spec.name).ok_or_else(|| {
            InferenceError::Runtime(format!("model produced no output `{}`", spec.name))
        })?;
        let (shape, data) = match spec.dtype {
            DType::Float32 => {
                let (s, d) = v.try_extract_tensor::<f32>().map_err(rt)?;
                (s.to_vec(), TensorData::F32(d.to_vec()))
            }
            DType::Int64 => {
                let (s, d) = v.try_extract_tensor::<i64>().map_err(rt)?;
                (s.to_vec(), TensorData::I64(d.to_vec()))
            }
        };
        raw.push(OutputTensor {
            name: spec.name.clone(),
            shape,
            data,
        });
    }
    drop(outputs);
    let run_us = micros(t);

    let t = Instant::now();
    let predictions = match (raw.first(), ctx.files.variant.outputs.first()) {
        (
            Some(OutputTensor {
                shape,
                data: TensorData::F32(d),
                ..
            }),
            Some(spec),
        ) => {
            let rows = shape.first().copied().unwrap_or(1).max(1) as usize;
            let per = d.len() / rows;
            d.chunks_exact(per.max(1))
                .map(|row| {
                    let mut probs = row.to_vec();
                    if spec.kind == OutputKind::Logits {
                        postprocess::softmax(&mut probs);
                    }
                    postprocess::classify(&probs, &ctx.files.labels, ctx.top_k)
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let postprocess_us = micros(t);
    Ok(Inference {
        model: ctx.model.clone(),
        version: ctx.version.clone(),
        variant: ctx.files.role,
        ep: ctx.ep,
        outputs: raw,
        predictions,
        timing: Timing {
            queue_us,
            preprocess_us,
            run_us,
            postprocess_us,
            total_us: micros(enqueued),
            batch_size: 1,
        },
    })
}
