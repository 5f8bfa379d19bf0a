//! What both daemons share with their service manager and for an orderly stop.
//!
//! # Layout
//! - [`notify`]: the systemd notification protocol (`READY=1`, `WATCHDOG=1`, `RELOADING=1`,
//!   `STOPPING=1` to `$NOTIFY_SOCKET`).
//! - [`watchdog`]: the watchdog loop, fed only while the engine makes progress.
//! - [`logging`]: the log filter from the config, replaced on reload, and the log format
//!   (text, JSON lines, journald).
//! - [`json_log`]: the JSON-lines layer.
//! - [`shutdown`]: signals, the cancellation token tree, tracked tasks and the grace bound.
//! - [`process`]: the `process_*` metrics from `/proc/self` and `tandem_build_info`.

pub mod json_log;
pub mod logging;
pub mod notify;
pub mod process;
pub mod shutdown;
pub mod watchdog;
