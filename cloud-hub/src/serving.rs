//! Serving offloaded requests: a wire `PredictRequest` through the engine (the cloud variants,
//! dynamically batched) to a `PredictResponse` (the typed prediction: the request's `k` best
//! classes, decoded by the engine's post-processing, or the boxes), `Busy` or `Error`; an
//! `InferRequest` (older agents, tensor clients) to an `InferResponse` with the raw outputs.
//!
//! Idempotency: the last answers are kept by (device identity from the certificate, request
//! id, model), so a retried or replayed request (0-RTT data can be replayed) gets the same answer
//! without running again. Two copies of a request in flight at the same moment both run.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_engine::{Engine, InferenceError, Input};
use tandem_shared::convert;
use tandem_shared::oip::{InputTensor, TensorData};
use tandem_shared::wire::{self, ErrorCode, Message, Timing};
use tracing::Instrument as _;

/// Answers kept for idempotency.
pub const RECENT_ANSWERS: usize = 4096;

/// Device identity, request id, model, and what was asked (raw outputs or a prediction, the
/// prediction's `k` and whether raw outputs came with it).
type Key = (String, u64, String, Ask);

#[derive(Debug, Default)]
struct Recent {
    answers: HashMap<Key, Message>,
    order: VecDeque<Key>,
}

/// What a request asks the hub to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ask {
    /// `InferRequest`: the raw outputs (`InferResponse`).
    Outputs,
    /// `PredictRequest`: the typed prediction (`PredictResponse`) with the `k` best classes,
    /// and the raw outputs too when `raw_outputs`.
    Prediction {
        /// Classes a classification answers.
        top_k: u16,
        /// Whether the raw outputs come with it.
        raw_outputs: bool,
    },
}

/// One offloaded request, as the ingress decoded it.
#[derive(Debug)]
pub struct Request {
    /// The agent's id for it.
    pub request_id: u64,
    /// Model name.
    pub model: String,
    /// Version asked for (`None`: the one served).
    pub model_version: Option<String>,
    /// Budget from receipt, milliseconds (0: none).
    pub deadline_ms: u32,
    /// The answer wanted.
    pub ask: Ask,
    /// The input.
    pub input: wire::Input,
}

impl Request {
    /// The request a wire message carries (`None` for other kinds).
    pub fn from_message(m: Message) -> Option<Self> {
        match m {
            Message::InferRequest {
                request_id,
                model,
                model_version,
                deadline_ms,
                input,
            } => Some(Self {
                request_id,
                model,
                model_version,
                deadline_ms,
                ask: Ask::Outputs,
                input,
            }),
            Message::PredictRequest {
                request_id,
                model,
                model_version,
                deadline_ms,
                top_k,
                raw_outputs,
                input,
            } => Some(Self {
                request_id,
                model,
                model_version,
                deadline_ms,
                ask: Ask::Prediction { top_k, raw_outputs },
                input,
            }),
            _ => None,
        }
    }
}

/// The engine plus the idempotency memory.
#[derive(Debug)]
pub struct Serving {
    engine: Arc<Engine>,
    recent: Mutex<Recent>,
}

impl Serving {
    /// Serving over an engine.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            recent: Mutex::new(Recent::default()),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Answers a device's request, or repeats the answer it already got for that request id.
    pub async fn handle(&self, device: &str, req: Request) -> Message {
        let (request_id, model) = (req.request_id, req.model.clone());
        // The agent's span keys: the device's lines and the hub's for one request match up.
        let span = tracing::info_span!(
            "request",
            device,
            model = %model,
            request_id = %format_args!("{request_id:016x}")
        );
        async move {
            let key = (device.to_string(), request_id, model.clone(), req.ask);
            if let Some(m) = self
                .recent
                .lock()
                .ok()
                .and_then(|r| r.answers.get(&key).cloned())
            {
                tracing::debug!(device, request_id, "repeated request: answered from memory");
                return m;
            }
            let answer = infer(&self.engine, req).await;
            if matches!(
                answer,
                Message::InferResponse { .. } | Message::PredictResponse { .. }
            ) && let Ok(mut r) = self.recent.lock()
            {
                if r.order.len() >= RECENT_ANSWERS
                    && let Some(old) = r.order.pop_front()
                {
                    r.answers.remove(&old);
                }
                r.order.push_back(key.clone());
                r.answers.insert(key, answer.clone());
            }
            match &answer {
                Message::InferResponse { timing, .. } | Message::PredictResponse { timing, .. } => {
                    tracing::debug!(
                        queue_us = timing.queue_us,
                        service_us = timing.service_us,
                        batch_size = timing.batch_size,
                        "offloaded request answered"
                    );
                }
                other => tracing::debug!(kind = ?other.kind(), "offloaded request not answered"),
            }
            answer
        }
        .instrument(span)
        .await
    }
}

/// Suggested retry delay when a model's queue is full.
pub const BUSY_RETRY_AFTER_MS: u32 = 50;

fn error(request_id: u64, code: ErrorCode, message: String) -> Message {
    Message::Error {
        request_id,
        code,
        message,
    }
}

fn tensor_in(t: wire::Tensor) -> Result<InputTensor, String> {
    let data = match convert::tensor_data(&t) {
        TensorData::Bytes(_) => {
            return Err(format!(
                "tensor `{}`: U8 inputs are not supported by this hub",
                t.name
            ));
        }
        d => d,
    };
    Ok(InputTensor {
        name: t.name,
        shape: t.shape,
        data,
    })
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The wire code of an engine error: the device's mistakes (bad input, too many rows) apart
/// from the hub's.
fn error_code(e: &InferenceError) -> ErrorCode {
    match e {
        InferenceError::Preprocess(_)
        | InferenceError::BadInput(_)
        | InferenceError::TooManyRows { .. } => ErrorCode::BadRequest,
        InferenceError::UnknownModel(_) => ErrorCode::UnknownModel,
        InferenceError::ShuttingDown => ErrorCode::ShuttingDown,
        InferenceError::QueueFull { .. }
        | InferenceError::Runtime(_)
        | InferenceError::Panicked(_) => ErrorCode::Internal,
    }
}

/// Answers one request (no idempotency memory: see [`Serving::handle`]).
async fn infer(engine: &Engine, req: Request) -> Message {
    let Request {
        request_id,
        model,
        model_version,
        deadline_ms,
        ask,
        input,
    } = req;
    let Some(handle) = engine.model(&model) else {
        return error(
            request_id,
            ErrorCode::UnknownModel,
            format!("model `{model}` is not served by this hub"),
        );
    };
    let served = handle.files.manifest.version.clone();
    if let Some(v) = model_version.filter(|v| *v != served) {
        return error(
            request_id,
            ErrorCode::UnknownModelVersion,
            format!("model `{model}` version `{v}` is not served (serving `{served}`)"),
        );
    }
    let input = match input {
        wire::Input::ImageBytes(b) => Input::Images(vec![Bytes::from(b)]),
        wire::Input::Text(s) => Input::Texts(vec![s]),
        wire::Input::Tensors(ts) => {
            match ts.into_iter().map(tensor_in).collect::<Result<Vec<_>, _>>() {
                Ok(t) => Input::tensors(t),
                Err(m) => return error(request_id, ErrorCode::BadRequest, m),
            }
        }
    };
    let rx = match engine.submit(&model, input) {
        Ok(rx) => rx,
        Err(InferenceError::QueueFull { .. }) => {
            return Message::Busy {
                request_id,
                retry_after_ms: BUSY_RETRY_AFTER_MS,
            };
        }
        Err(e) => return error(request_id, error_code(&e), e.to_string()),
    };
    let answer = if deadline_ms > 0 {
        match tokio::time::timeout(Duration::from_millis(u64::from(deadline_ms)), rx).await {
            Ok(r) => r,
            Err(_) => {
                return error(
                    request_id,
                    ErrorCode::DeadlineExceeded,
                    format!("no answer within the {deadline_ms} ms deadline"),
                );
            }
        }
    } else {
        rx.await
    };
    match answer {
        Ok(Ok(mut inf)) => {
            let timing = Timing {
                queue_us: clamp_u32(inf.timing.queue_us),
                service_us: clamp_u32(
                    inf.timing.preprocess_us + inf.timing.run_us + inf.timing.postprocess_us,
                ),
                batch_size: clamp_u32(inf.timing.batch_size as u64),
            };
            let outputs = |inf: &tandem_engine::Inference| {
                inf.outputs
                    .iter()
                    .map(|o| convert::wire_tensor(&o.name, &o.shape, &o.data))
                    .collect()
            };
            let Ask::Prediction { top_k, raw_outputs } = ask else {
                return Message::InferResponse {
                    request_id,
                    model,
                    model_version: inf.version.clone(),
                    outputs: outputs(&inf),
                    timing,
                };
            };
            // The request's k, decoded from the outputs by the worker's own post-processing
            // (after a swap since the run, the k stays the engine's).
            engine.with_top_k(&mut inf, usize::from(top_k));
            let Some(prediction) = inf.prediction(0) else {
                return error(
                    request_id,
                    ErrorCode::Internal,
                    format!("model `{model}` gave no prediction"),
                );
            };
            Message::PredictResponse {
                request_id,
                model,
                model_version: inf.version.clone(),
                timing,
                prediction,
                outputs: if raw_outputs {
                    outputs(&inf)
                } else {
                    Vec::new()
                },
            }
        }
        Ok(Err(e)) => error(request_id, error_code(&e), e.to_string()),
        Err(_) => error(
            request_id,
            ErrorCode::ShuttingDown,
            "the hub is shutting down".into(),
        ),
    }
}
