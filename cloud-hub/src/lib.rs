//! The Tandem cloud hub: batched serving of the cloud variants over QUIC and OIP v2 REST.
//!
//! # Layout
//! - [`config`]: the TOML configuration.
//! - [`app`]: `tandem-hub run`: serve until a signal.
//! - [`client`]: the command line's client of a running hub's API (HTTP or HTTPS, a client
//!   certificate or a bearer token).
//! - [`api`]: the HTTP API (OIP v2 REST on the cloud variants, `/metrics`; bearer tokens, HTTPS
//!   with client certificates).
//! - [`ingress`]: the QUIC endpoint devices connect to (mutual TLS, identity from the certificate).
//! - [`serving`]: offloaded requests through the engine (cloud variants, dynamic batching).
//! - [`broker`]: the MQTT broker the hub runs and supervises (mosquitto) by default.
//! - [`fleet`]: fleet state from MQTT status and telemetry (sled), commands to devices, the
//!   `/v1/fleet` routes.
//! - [`registry`]: the model registry: signed bundles by model and version (`tandem-hub models`,
//!   `GET /v1/models`).
//! - [`rollout`]: staged rollouts of a model version (canary, stages, halts).
//! - [`reload`]: SIGHUP: the config read again, the log filter applied.
//! - [`pki`]: the development PKI (`init`, `device add|revoke|list`).
//! - [`revocation`]: the running hub keeps the CRL fresh and applies it live.
//! - [`sled_release`]: a closed sled database can be opened again at once.
//! - `sled_store` (crate-private): a store's sled database opened, JSON values read and written.
//!
//! - [`feedback`]: hard examples, corrections and telemetry delivered from devices' queues
//!   (deduplicated, stored as a dataset; `tandem-hub feedback export`, `/v1/feedback`).
//! - [`eval`]: evaluation reports of a model version on a labelled set (`tandem-hub eval`,
//!   `/v1/eval`).
//! - [`train`]: retraining a model's edge head from feedback, exported as a bundle
//!   (`tandem-hub train`, `/v1/train`).
//! - [`calibrate`]: routing thresholds fitted from feedback, pushed as devices' desired state
//!   (`tandem-hub calibrate`, `/v1/calibrations`, `/v1/thresholds`).
//! - [`console`]: the fleet console, web pages served at `/console` (assets embedded), its
//!   login and sessions.

pub mod api;
pub mod app;
pub mod broker;
pub mod calibrate;
pub mod client;
pub mod config;
pub mod console;
pub mod enrol;
pub mod eval;
pub mod feedback;
pub mod fleet;
pub mod ingress;
pub mod pki;
pub mod registry;
pub mod reload;
pub mod revocation;
pub mod rollout;
pub mod series;
pub mod serving;
pub mod sled_release;
mod sled_store;
pub mod train;
