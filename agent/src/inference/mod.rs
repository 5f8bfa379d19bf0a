//! The inference engine and everything around one model run.
//!
//! # Layout
//! - [`engine`]: per-model bounded queues and worker threads owning ONNX Runtime sessions.
//! - [`model`]: model folders, manifests, file checks.
//! - [`provider`]: execution-provider selection with fallback.
//! - [`preprocess`]: images and texts to tensors.
//! - [`postprocess`]: softmax, top-k, routing signals.

pub mod engine;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod provider;

pub use engine::{Engine, Inference, InferenceError, Input, ModelHandle, OutputTensor};
