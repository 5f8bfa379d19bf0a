//! The durable store-and-forward queue (flow 3): producers append telemetry, events, hard
//! examples and corrections; a record is accepted once it is flushed to disk; the delivery
//! loop leases records by priority, sends them to the hub and deletes them on its
//! acknowledgement.
//!
//! # Layout
//! - [`contract`]: the [`Queue`] trait, [`Pending`], [`Delivery`], [`QueueStats`].
//! - [`record`]: [`Class`] (priority), keys, the record layout with its CRC.
//! - `meta`: the persisted state (epoch, next seq, counters).
//! - `budget`: eviction order when `queue.max_bytes` is full.
//! - `open`: opening sled with a small cache; moving a corrupt database aside; checking it
//!   against the watermark.
//! - `payload`: payload files for records above `record::INLINE_MAX_BYTES`.
//! - `watermark`: the high-water mark beside sled's files (epoch, next seq, live records).
//! - `writer`: the batching writer thread (one flush per batch, then the acks).
//! - `losses`: rate-limited ERROR lines for evictions and refusals.
//! - [`store`]: [`SledQueue`], the sled implementation.
//! - [`config`]: the `[queue]` section.
//! - [`stress`]: the hidden `queue-stress` subcommand the crash test kills.
//!
//! # Invariants
//! - A record is accepted (its producer hears its seq) only after the flush that wrote it.
//! - A record is deleted only by `ack` (the hub stored it) or by eviction/CRC failure, and
//!   every eviction, refusal and CRC failure is counted in [`QueueStats`] and logged at ERROR.
//! - `(epoch, seq)` names one record for ever: the epoch is random, the seq strictly
//!   increasing and persisted atomically with the records, so it never repeats, even after
//!   `kill -9`; if damage makes sled lose flushed batches, the watermark shows it and a new
//!   epoch starts (the loss counted in [`QueueStats::lost`] and logged at ERROR).
//! - Every record carries a CRC; a bad one is skipped, counted, and removed, never fatal.
//! - A database that will not open (error or sled panic) is moved aside, reported at ERROR
//!   with what was lost, and a fresh queue (new epoch) started.
//! - Bytes held never exceed `queue.max_bytes`; the folder on disk stays within
//!   [`store::FOOTPRINT_FACTOR`] × that + [`store::FOOTPRINT_SLACK_BYTES`]: large payloads live
//!   in files deleted with their record, so acknowledged and evicted records free their space.
//! - Every file the queue creates is 0600, every folder 0700.

pub(crate) mod budget;
pub mod config;
pub mod contract;
pub mod error;
pub(crate) mod losses;
pub(crate) mod meta;
pub(crate) mod open;
pub(crate) mod payload;
pub mod record;
pub mod store;
pub mod stress;
pub(crate) mod watermark;
pub(crate) mod writer;

#[cfg(test)]
mod disk_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use config::QueueConfig;
pub use contract::{ClassStats, Delivery, Pending, Queue, QueueStats, Recovery};
pub use error::QueueError;
pub use record::{Class, Seq};
pub use store::SledQueue;
