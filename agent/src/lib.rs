//! The Tandem edge agent.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and validation.
//! - [`inference`], [`runtime`]: the engine crate (`tandem-engine`), re-exported.
//! - [`policy`]: the routing decision (pure).
//! - [`hybrid`]: local inference, then the hub when the policy says so; degraded answers.
//! - [`uplink`]: the QUIC link to the hub (mTLS, backoff, RTT).
//! - [`queue`]: the durable store-and-forward queue (sled; accepted once flushed).
//! - [`feedback`]: hard examples (sampled) and corrections, queued for the hub's dataset.
//! - [`privacy`]: faces blurred in every image that leaves the device (CenterFace).
//! - [`models`]: the model manager: signed bundles verified, installed, self-tested and
//!   swapped in without a failed request.
//! - [`camera`]: per-camera frame streams with a bounded queue (drop oldest or newest).
//! - [`track`]: per-camera object tracking: object events and their snapshots.
//! - [`api`]: the local HTTP API (OIP v2, `/v1/classify`, `/metrics`).
//! - [`telemetry`]: counters and histograms.
//! - [`control`]: commands from the hub over MQTT (threshold, policy, telemetry now).
//! - [`reload`]: SIGHUP: the config read again, routing policy and log filter applied.
//! - [`app`]: wiring for `tandem-agent run`: start-up, serving, graceful shutdown.
//! - [`cli`]: the command-line interface.

pub mod api;
pub mod app;
pub mod camera;
pub mod cli;
pub mod config;
pub mod control;
pub mod enrol;
pub mod feedback;
pub mod hybrid;
pub mod models;
pub mod policy;
pub mod privacy;
pub mod queue;
pub mod reload;
pub mod telemetry;
pub mod track;
pub mod uplink;

pub use tandem_engine as inference;
pub use tandem_engine::runtime;
