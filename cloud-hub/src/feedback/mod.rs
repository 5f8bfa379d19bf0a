//! Feedback from the fleet (flow 3 and the data part of the loop): records the agents queued
//! and delivered (`Deliver` frames over QUIC) — hard examples, corrections, and events or
//! telemetry kept while a device was offline — stored exactly once per
//! (device, queue epoch, seq), and exported as a dataset.
//!
//! Layout: `store` (the sled index and the content-addressed input files, ingest with
//! deduplication, durable before acknowledgement; new telemetry handed on to the fleet
//! state), `index` (arrival order, records by input digest and by request, written with each
//! record), `listing` (cursor pages of records with their links; examples collapsed by
//! input), `split` (train/calibration/test by input digest), `retention` (eviction by count
//! and age), `teacher` (the cloud model's answer to shadow samples and degraded examples),
//! `quota` (the per-device byte quota and `[feedback]`), `operator` (operators' corrections,
//! the same records as a device's), `export`
//! (`tandem-hub feedback export`), `http` (`/v1/feedback/...`).

mod export;
pub mod http;
mod index;
mod listing;
pub mod operator;
mod quota;
pub mod retention;
mod split;
mod store;
pub mod teacher;

pub use export::{ExportFormat, ExportSummary};
pub use listing::{Example, ExampleFilter, Labelled, Listed, Page, record_id};
pub use quota::FeedbackConfig;
pub use split::Split;
pub use store::{FeedbackError, FeedbackStats, Ingested, Put, Store, StoredRecord, TelemetrySink};
