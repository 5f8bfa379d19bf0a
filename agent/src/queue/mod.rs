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
//! - `open`: opening sled with a small cache; moving a corrupt database aside.
//! - `writer`: the batching writer thread (one flush per batch, then the acks).
//! - [`store`]: [`SledQueue`], the sled implementation.
//! - [`config`]: the `[queue]` section.
//! - [`stress`]: the hidden `queue-stress` subcommand the crash test kills.
//!
//! # Invariants
//! - A record is accepted (its producer hears its seq) only after the flush that wrote it.
//! - A record is deleted only by `ack` (the hub stored it) or by eviction/CRC failure, and
//!   every eviction, refusal and CRC failure is counted in [`QueueStats`] and logged at ERROR.
//! - `(epoch, seq)` names one record for ever: the epoch is random per database, the seq
//!   strictly increasing and persisted atomically with the records, so it never repeats,
//!   even after `kill -9`.
//! - Every record carries a CRC; a bad one is skipped, counted, and removed, never fatal.
//! - A database that will not open (error or sled panic) is moved aside, reported at ERROR
//!   with what was lost, and a fresh queue (new epoch) started.
//! - Bytes held never exceed `queue.max_bytes`.

pub(crate) mod budget;
pub mod config;
pub mod contract;
pub mod error;
pub(crate) mod meta;
pub(crate) mod open;
pub mod record;
pub mod store;
pub mod stress;
pub(crate) mod writer;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use config::QueueConfig;
pub use contract::{ClassStats, Delivery, Pending, Queue, QueueStats, Recovery};
pub use error::QueueError;
pub use record::{Class, Seq};
pub use store::SledQueue;
