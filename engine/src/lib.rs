//! The Tandem inference engine, shared by the agent (edge variants) and the hub (cloud
//! variants).
//!
//! # Layout
//! - [`engine`]: per-model lanes (bounded queues) and worker threads owning ONNX Runtime
//!   sessions; dynamic batching.
//! - [`bundle`]: bundle folders on disk (read for verification, copy, sync).
//! - [`batch`]: merging compatible requests into one run and splitting the answer.
//! - [`generations`]: a model's versions, the last one serving (lock-free reads, hot swap).
//! - [`swap`]: hot swap: stage a new version (workers started, self-tests run on it), then
//!   activate it atomically; in-flight requests finish on the old one.
//! - [`version_stats`]: per-version answers, errors, latency and confidence (watch window).
//! - [`model`]: model folders, manifests, file checks.
//! - [`provider`]: execution-provider selection with fallback.
//! - [`preprocess`]: images and texts to tensors.
//! - [`postprocess`]: softmax, top-k, routing signals.
//! - [`detect`]: detection models: image placements, raw head outputs to boxes (decode and
//!   NMS from `tandem_shared::detect`) and the `detections` tensor.
//! - [`runtime`]: finding and loading the ONNX Runtime library.
//! - [`metrics`]: counters and latency histograms (Prometheus text).
//! - [`exposition`]: label sets for the Prometheus text format (every value escaped).
//! - [`settings`]: the config sections the engine reads.
//! - `daemon` (feature `daemon`): sd_notify readiness and watchdog (engine progress), the
//!   reloadable log filter, the shutdown tree; for the daemons.
//! - `http` (feature `http`): the OIP v2 REST API and `/metrics` over an engine, for the
//!   daemons.

pub mod batch;
pub mod bundle;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod detect;
pub mod engine;
pub mod exposition;
pub mod generations;
#[cfg(feature = "http")]
pub mod http;
pub mod metrics;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod provider;
pub mod runtime;
pub mod settings;
pub mod swap;
pub mod version_stats;

pub use engine::{Engine, Inference, InferenceError, Input, ModelHandle, OutputTensor};
