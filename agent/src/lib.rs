//! The Tandem edge agent.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and validation.
//! - [`inference`], [`runtime`]: the engine crate (`tandem-engine`), re-exported.
//! - [`api`]: the local HTTP API (OIP v2, `/v1/classify`, `/metrics`).
//! - [`telemetry`]: counters and histograms.
//! - [`app`]: wiring for `tandem-agent run`: start-up, serving, graceful shutdown.
//! - [`cli`]: the command-line interface.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod telemetry;

pub use tandem_engine as inference;
pub use tandem_engine::runtime;
