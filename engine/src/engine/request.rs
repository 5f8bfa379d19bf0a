//! What a caller sends to a model and gets back: inputs, outputs, timings, and the errors of
//! a request and of the engine.

use crate::model::ModelError;
use crate::preprocess::PreprocessError;
use crate::provider::NoProvider;
use bytes::Bytes;
use std::sync::Arc;
use tandem_shared::answer::{Classification, Prediction};
use tandem_shared::detect::{DetectAnswer, Detection, Detections};
use tandem_shared::manifest::VariantRole;
use tandem_shared::oip::{InputTensor, TensorData};
use tandem_shared::provider::ExecutionProvider;

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

    pub(super) fn is_tensors(&self) -> bool {
        matches!(self, Self::Tensors(_))
    }

    /// Rows (batch entries) the input carries: images, texts, or the first dimension of the
    /// first tensor.
    pub fn rows(&self) -> usize {
        crate::batch::rows(self)
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

/// Where the time went, in microseconds (the contract type every answer reports).
pub use tandem_shared::answer::TimingUs as Timing;

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
    /// One prediction per batch row (classification models; empty for detection).
    pub predictions: Vec<Classification>,
    /// One set of boxes per batch row (detection models; empty for classification).
    pub detections: Vec<Detections>,
    /// Per batch row of a detection model, the boxes NMS kept under the answer threshold down
    /// to the cascade band's bottom (`DetectionSpec::candidate_floor`): routing signals only.
    pub below: Vec<Vec<Detection>>,
    /// Timings.
    pub timing: Timing,
}

impl Inference {
    /// The typed answer for batch row `row`: its boxes (detection models) or its top-k.
    pub fn prediction(&self, row: usize) -> Option<Prediction> {
        match self.detections.get(row) {
            Some(d) => Some(Prediction::Boxes(d.clone())),
            None => self.predictions.get(row).cloned().map(Prediction::TopK),
        }
    }

    /// Re-decodes the classifications with the `k` best classes each (a request's `k` over the
    /// engine's `engine.top_k`), from the raw outputs with the same post-processing the worker
    /// ran. Nothing changes for a detection model or when every row already has `k` (or all
    /// its classes). `files` must be those of the version that ran: callers go through
    /// [`super::Engine::with_top_k`], which checks it.
    fn with_top_k(&mut self, files: &crate::model::ModelFiles, k: usize) {
        let (Some(out), Some(spec)) = (self.outputs.first(), files.variant.outputs.first()) else {
            return;
        };
        if self.predictions.is_empty() || !self.detections.is_empty() {
            return;
        }
        let classes = out.shape.last().copied().unwrap_or(0).max(0) as usize;
        let want = k.clamp(1, classes.max(1));
        if self.predictions.iter().all(|p| p.top_k.len() == want) {
            return;
        }
        self.predictions =
            crate::postprocess::classify_rows(spec, &out.shape, &out.data, &files.labels, k);
    }
}

impl super::Engine {
    /// Re-decodes `inf`'s classifications with the `k` best classes each, with the files
    /// (output spec, labels) of the version that ran, when that version is the one loaded now.
    /// After a swap between the run and this call the answer keeps the `engine.top_k` it was
    /// decoded with: the new version's labels never name the old version's outputs. False when
    /// the version no longer matches (or the model is gone); the one place the hub's offload
    /// and OIP handlers and the agent's router decide this.
    pub fn with_top_k(&self, inf: &mut Inference, k: usize) -> bool {
        match self
            .model(&inf.model)
            .filter(|h| h.files.manifest.version == inf.version)
        {
            Some(h) => {
                inf.with_top_k(&h.files, k);
                true
            }
            None => false,
        }
    }
}

impl Inference {
    /// The typed answer for one image of a detection model (route `local`).
    pub fn detect_answer(&self, d: &Detections) -> DetectAnswer {
        DetectAnswer {
            model: self.model.clone(),
            version: self.version.clone(),
            variant: self.variant.as_str().into(),
            route: "local".into(),
            degraded: false,
            ep: self.ep.as_str().into(),
            width: d.width,
            height: d.height,
            detections: d.boxes.clone(),
            signals: d.signals(),
            latency_ms: self.timing.total_us as f64 / 1000.0,
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
    /// The request carries more rows than one request may (`engine.max_rows_per_request`).
    #[error(
        "the request has {rows} rows, over the limit of {limit} per request \
         (engine.max_rows_per_request); send them in several requests"
    )]
    TooManyRows {
        /// Rows in the request.
        rows: usize,
        /// The limit.
        limit: usize,
    },
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
    /// The worker panicked on this request (a bug): the request is answered with this error and
    /// the worker goes on serving.
    #[error("internal error: the worker failed on this request: {0}")]
    Panicked(String),
}

impl InferenceError {
    /// A short kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownModel(_) => "unknown_model",
            Self::Preprocess(_) | Self::BadInput(_) => "bad_input",
            Self::TooManyRows { .. } => "too_many_rows",
            Self::QueueFull { .. } => "queue_full",
            Self::ShuttingDown => "shutting_down",
            Self::Runtime(_) => "runtime",
            Self::Panicked(_) => "panic",
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
    /// The model's reference outputs (the accuracy gate) cannot be read.
    #[error("reference outputs of `{model}`: {message}")]
    Reference {
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
