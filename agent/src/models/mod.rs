//! The model manager (flow 5 on the device): a signed bundle → verified against
//! `models.trusted_key` → installed in `<models.dir>/<model>/versions/<version>/` within the
//! disk budget → staged in the engine beside the serving version → self-tests and a latency
//! check on this device's execution provider → atomic swap (in-flight requests finish on the
//! old version) → `current` / `previous` pointers. Any failure leaves the serving version as it
//! was and is reported with its reason.
//!
//! # Layout
//! - [`download`]: the bundle over QUIC from the hub, in ranges, resumable after a cut;
//!   signature checked before the large files are fetched.
//! - [`manager`]: the install flow, update states, the reporter hook.
//! - [`update`](mod@update): an update the hub orders: download over the uplink (resumed), then install.
//! - [`watch`]: the watch window's comparison of the new version with what the old one did in
//!   the same length of time before the swap (pure).
//! - [`state`]: update states, the last state of each recent version per model (what
//!   telemetry reports), and when a change is published at once.
//! - [`store`]: the versions on disk, pointers, budget and pruning.
//! - [`startup`]: the installed versions verified again before the engine starts.
//! - [`progress`]: which download-progress reports are published at once (first, last, one a
//!   second).
//! - [`selftest`]: the bundle's self-tests and the latency check on the staged version.
//! - [`error`]: every reason an update is refused.

pub mod download;
pub mod error;
pub mod manager;
pub mod progress;
pub mod selftest;
pub mod startup;
pub mod state;
pub mod store;
pub mod update;
pub mod watch;

pub use download::{DownloadError, DownloadOptions, Fetched, fetch};
pub use error::InstallError;
pub use manager::{
    Installed, Manager, Order, Reporter, UpdateState, UpdateStatus, Watched, load_trusted_key,
};
pub use startup::{Checked, check_installed};
pub use store::Store;
pub use update::{UpdateError, update};
