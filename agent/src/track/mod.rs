//! Object events from camera streams: a per-camera IoU tracker turns each frame's detections
//! into `appeared` / `updated` / `gone` events (published on `tandem/{device}/events/objects`,
//! docs/mqtt.md "Object events"), and the best frame of each track is kept as a JPEG for the
//! local API.
//!
//! # Layout
//! - [`config`]: `[cameras]` (queue length and drop policy, `[cameras.tracker]`,
//!   `[cameras.snapshots]`).
//! - [`tracker`]: the sans-IO IoU tracker.
//! - [`snapshot`]: the bounded JPEG store, and the hook every snapshot leaves through.
//! - [`objects`]: both for one camera, producing the shared `ObjectEvent` payloads.
//! - [`request`]: a snapshot asked by the local API or over MQTT: lookup, blur, bounds.
//!
//! The camera task that feeds it is [`crate::camera`].

pub mod config;
pub mod objects;
pub mod request;
pub mod snapshot;
pub mod tracker;

pub use config::{CamerasConfig, DropPolicy, SnapshotConfig, TrackerConfig};
pub use objects::CameraObjects;
