//! Feedback from the fleet (flow 3 and the data part of the loop): records the agents queued
//! and delivered (`Deliver` frames over QUIC) — hard examples, corrections, and events or
//! telemetry kept while a device was offline — stored exactly once per
//! (device, queue epoch, seq), and exported as a dataset.
//!
//! Layout: `store` (the sled index and the content-addressed input files, ingest with
//! deduplication, durable before acknowledgement; new telemetry handed on to the fleet
//! state), `quota` (the per-device byte quota and `[feedback]`), `export`
//! (`tandem-hub feedback export`).

mod export;
mod quota;
mod store;

pub use export::{ExportFormat, ExportSummary};
pub use quota::FeedbackConfig;
pub use store::{FeedbackError, FeedbackStats, Ingested, Put, Store, StoredRecord, TelemetrySink};
