//! The Tandem edge agent.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and validation.
//! - [`runtime`]: finding and loading the ONNX Runtime library.
//! - [`inference`]: the engine (queues, worker threads, sessions), pre- and post-processing.
//! - [`api`]: the local HTTP API (OIP v2, `/v1/classify`, `/metrics`).
//! - [`telemetry`]: counters and histograms.
//! - [`app`]: wiring for `tandem-agent run`: start-up, serving, graceful shutdown.
//! - [`cli`]: the command-line interface.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod inference;
pub mod runtime;
pub mod telemetry;
