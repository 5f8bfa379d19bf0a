//! Sans-IO types both Tandem binaries share.
//!
//! # Layout
//! - [`answer`]: the typed answer per task (top-k classes, boxes) both daemons serialise and
//!   the hub sends.
//! - [`manifest`]: the model manifest (`models/<name>/manifest.json`): variants, I/O specs,
//!   pre-processing, labels, file hashes.
//! - [`bundle`]: signed model bundles (docs/bundle.md): `bundle.json`, `bundle.sig`, the
//!   checks before an agent installs one.
//! - [`detect`]: object detection: the manifest's decode block, typed boxes, NanoDet and
//!   CenterFace decoding, NMS (the same post-processing on hub and agent).
//! - [`dedup`]: hub-side deduplication of queued records by (device, epoch, seq).
//! - [`frame`]: raw camera frames (RGB24, NV12, YUYV): checks and a self-describing header.
//! - [`convert`]: wire tensors to and from decoded element data.
//! - [`record`]: store-and-forward record payloads (hard examples, corrections, events,
//!   telemetry) carried by `Deliver` frames.
//! - [`mqtt`]: the MQTT contract (docs/mqtt.md): topics and versioned JSON payloads (status,
//!   telemetry, events, commands and their results).
//! - [`backoff`]: retry waits with full jitter (OS random source), for every retry loop.
//! - [`provider`]: execution-provider names as they appear in configs and reports.
//! - [`oip`]: Open Inference Protocol v2 (KServe/Triton) REST messages and the binary tensor
//!   data extension codec.
//! - [`wire`]: the agent↔hub protocol over QUIC (ALPN `tandem/1`): frames, messages, the
//!   streaming frame decoder.
//!
//! Nothing here opens a file or a socket: callers hand in bytes and strings.

pub mod answer;
pub mod backoff;
pub mod bundle;
pub mod convert;
pub mod dedup;
pub mod detect;
pub mod frame;
pub mod manifest;
pub mod mqtt;
pub mod oip;
pub mod provider;
pub mod record;
pub mod wire;
