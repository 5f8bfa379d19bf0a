//! The worker threads of a model lane: each owns an ONNX Runtime session, gathers jobs into a
//! batch, pre-processes, runs and post-processes them, and answers each caller.

use super::failover::{Rebuild, Slot};
use super::prepare::prepare;
use super::{Inference, InferenceError, Input, Job, OutputTensor, Timing};
use crate::batch;
use crate::detect;
use crate::metrics::Metrics;
use crate::model::ModelFiles;
use crate::postprocess;
use crate::preprocess::image::Limits;
use crate::preprocess::text::TextEncoder;
use crate::version_stats::VersionStats;
use crossbeam_channel::Receiver;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use std::any::Any;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_shared::manifest::DType;
use tandem_shared::oip::TensorData;
use tandem_shared::provider::ExecutionProvider;

pub(super) enum Prep {
    Image(
        tandem_shared::manifest::ImagePreprocess,
        Limits,
        crate::preprocess::image::Backend,
    ),
    Text(Box<TextEncoder>),
}

pub(super) struct Ctx {
    pub(super) model: String,
    pub(super) version: String,
    pub(super) files: ModelFiles,
    pub(super) prep: Prep,
    pub(super) ep: ExecutionProvider,
    pub(super) top_k: usize,
    pub(super) spin: Duration,
    pub(super) max_batch: usize,
    pub(super) max_batch_delay: Duration,
    /// Most rows pre-processed and run at once (`engine.max_rows_per_run`).
    pub(super) rows_per_run: usize,
    pub(super) metrics: Arc<Metrics>,
    pub(super) live: Arc<AtomicBool>,
    pub(super) stats: Arc<VersionStats>,
    /// Building the session again on another provider (run-time failover).
    pub(super) rebuild: Rebuild,
    /// Test hook: the next run panics (see `ModelHandle::fail_next`).
    #[cfg(test)]
    pub(super) fail_next: Arc<AtomicBool>,
}

impl Ctx {
    fn counted(&self) -> bool {
        self.live.load(Ordering::Relaxed)
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

pub(super) fn run(mut session: Slot, ctx: &Ctx, rx: &Receiver<Job>, load: &AtomicUsize) {
    let mut carry: Option<Job> = None;
    loop {
        let Some(first) = carry.take().or_else(|| next_job(rx, ctx.spin)) else {
            return;
        };
        session.maybe_fail_back(&ctx.rebuild, &ctx.model);
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
        // A panic is caught per run in `run_jobs` (the request gets an error); this catches one
        // anywhere else in the batching, so the worker keeps serving whatever happens.
        let n = jobs.len();
        if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_jobs(&mut session, ctx, jobs, load);
        })) {
            tracing::error!(model = %ctx.model, jobs = n, panic = %panic_message(p.as_ref()), "worker panicked outside a run: its requests were dropped; it goes on serving");
        }
    }
}

/// The text of a panic's payload.
fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".into())
}

/// Runs one request's pre-processing, run and post-processing, turning a panic into an error
/// for that request (logged at ERROR; counted under the `panic` outcome).
fn guarded(
    ctx: &Ctx,
    run: impl FnOnce() -> Result<Inference, InferenceError>,
) -> Result<Inference, InferenceError> {
    std::panic::catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|p| {
        let what = panic_message(p.as_ref());
        tracing::error!(model = %ctx.model, panic = %what, "worker panicked on a request: answered with an error; the worker goes on serving");
        Err(InferenceError::Panicked(what))
    })
}

/// Runs one request, or several as one batch; a batch that fails on its input is retried one
/// request at a time, so only the bad request gets the error.
fn run_jobs(session: &mut Slot, ctx: &Ctx, jobs: Vec<Job>, load: &AtomicUsize) {
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
        job.span.in_scope(|| match &result {
            Ok(i) => tracing::debug!(
                version = %i.version,
                queue_us = i.timing.queue_us,
                run_us = i.timing.run_us,
                batch_size = i.timing.batch_size,
                "engine answered"
            ),
            Err(e) => tracing::debug!(error = %e, "engine failed"),
        });
        let _ = job.reply.send(result);
    };
    // `requests`: how many requests this run answers (the batch-size histogram).
    let run_one = |slot: &mut Slot, input: Input, enqueued: Instant, requests: usize| {
        if ctx.counted() {
            ctx.metrics.batch(&ctx.model, requests);
        }
        let from_tensors = input.is_tensors();
        // Tensors the model refuses are the caller's error; anything else failing in the run
        // is the session's, and the request runs again on the next provider.
        let again = (!from_tensors).then(|| input.clone());
        let mut result = attempt(slot, ctx, input, enqueued);
        if let (Err(InferenceError::Runtime(why)), Some(input)) = (&result, again)
            && slot.fail_over(&ctx.rebuild, &ctx.model, why)
        {
            result = attempt(slot, ctx, input, enqueued);
        }
        if result.is_ok() {
            slot.served();
        }
        result.map_err(|e| match e {
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

/// One run on the slot's session, answered as coming from its provider.
fn attempt(
    slot: &mut Slot,
    ctx: &Ctx,
    input: Input,
    enqueued: Instant,
) -> Result<Inference, InferenceError> {
    #[cfg(any(test, feature = "fault-injection"))]
    if ctx.rebuild.run_fails(slot.ep) {
        return Err(InferenceError::Runtime(format!(
            "{} run failed (injected by a test)",
            slot.ep
        )));
    }
    let ep = slot.ep;
    guarded(ctx, || run_job(&mut slot.session, ctx, input, enqueued)).map(|mut inf| {
        inf.ep = ep;
        inf
    })
}

fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn micros(since: Instant) -> u64 {
    micros_of(since.elapsed())
}

/// Runs one input, in chunks of at most `rows_per_run` rows: only one chunk is decoded and
/// run at a time, so a worker's memory does not grow with the rows of a request.
fn run_job(
    session: &mut Session,
    ctx: &Ctx,
    input: Input,
    enqueued: Instant,
) -> Result<Inference, InferenceError> {
    let rows = batch::rows(&input);
    if rows <= ctx.rows_per_run {
        return run_chunk(session, ctx, input, enqueued);
    }
    let mut parts = Vec::with_capacity(rows.div_ceil(ctx.rows_per_run));
    for from in (0..rows).step_by(ctx.rows_per_run) {
        let n = ctx.rows_per_run.min(rows - from);
        let chunk = batch::slice(&input, from, n).ok_or_else(|| {
            InferenceError::BadInput("the input's data does not match its shape".into())
        })?;
        parts.push(run_chunk(session, ctx, chunk, enqueued)?);
    }
    batch::concat(parts)
        .ok_or_else(|| InferenceError::Runtime("the chunks' outputs disagree in shape".into()))
}

fn run_chunk(
    session: &mut Session,
    ctx: &Ctx,
    input: Input,
    enqueued: Instant,
) -> Result<Inference, InferenceError> {
    #[cfg(test)]
    if ctx.fail_next.swap(false, Ordering::AcqRel) {
        panic!("fault injected by a test");
    }
    let queue_us = micros(enqueued);
    let t = Instant::now();
    let (tensors, places) = prepare(ctx, input)?;
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
    if let Some(spec) = &ctx.files.variant.detection {
        let size = match &ctx.prep {
            Prep::Image(p, ..) => (p.width, p.height),
            Prep::Text(_) => (0, 0),
        };
        let size = tensors
            .first()
            .and_then(|t| input_size(&t.shape, &ctx.prep))
            .unwrap_or(size);
        let detect::Detected {
            detections,
            below,
            tensor,
        } = detect::postprocess(spec, &raw, places.as_deref(), size, &ctx.files.labels)?;
        recycle(tensors);
        return Ok(Inference {
            model: ctx.model.clone(),
            version: ctx.version.clone(),
            variant: ctx.files.role,
            ep: ctx.ep,
            outputs: vec![tensor],
            predictions: Vec::new(),
            detections,
            below,
            timing: Timing {
                queue_us,
                preprocess_us,
                run_us,
                postprocess_us: micros(t),
                total_us: micros(enqueued),
                batch_size: 1,
            },
        });
    }
    recycle(tensors);
    let predictions = match (raw.first(), ctx.files.variant.outputs.first()) {
        (Some(out), Some(spec)) => {
            postprocess::classify_rows(spec, &out.shape, &out.data, &ctx.files.labels, ctx.top_k)
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
        detections: Vec::new(),
        below: Vec::new(),
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

/// Hands a tensor this worker prepared back to its scratch for the next request (tensors a
/// caller still shares stay theirs).
fn recycle(tensors: Arc<Vec<tandem_shared::oip::InputTensor>>) {
    let Ok(tensors) = Arc::try_unwrap(tensors) else {
        return;
    };
    for t in tensors {
        if let TensorData::F32(d) = t.data {
            crate::preprocess::scratch::give_floats(d);
        }
    }
}

/// Width and height of an image input tensor of shape `shape` (prepared tensors may have any
/// size a detection model takes).
fn input_size(shape: &[i64], prep: &Prep) -> Option<(u32, u32)> {
    let Prep::Image(p, ..) = prep else {
        return None;
    };
    let (h, w) = match (p.layout, shape) {
        (tandem_shared::manifest::Layout::NCHW, [_, _, h, w])
        | (tandem_shared::manifest::Layout::NHWC, [_, h, w, _]) => (*h, *w),
        _ => return None,
    };
    Some((u32::try_from(w).ok()?, u32::try_from(h).ok()?))
}
