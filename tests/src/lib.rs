//! Test kit for the integration and end-to-end tests: where things are ([`paths`]), waits with
//! deadlines ([`wait`]), HTTP and Prometheus helpers ([`http`], [`metrics`]), free loopback
//! ports ([`net`]), built daemons on loopback started from a config text ([`daemon`]), child
//! processes with captured logs ([`process`]), TLS client configurations from PEM files
//! ([`tls`]), hand-made HTTP(S) requests ([`raw`]) and several hosts on one machine in network
//! namespaces ([`netns`]), with a hub and agents on them ([`fleet`]) and fresh handshakes with
//! the hub as a device ([`probe`]), the rule under which Rust's end-to-end answers may differ
//! from Python's ([`mod@reference`]), and a headless Chromium for the console ([`browser`], feature
//! `browser`, on by default).
//!
//! Generic on purpose: it depends on no Tandem crate, so `tandem-agent` and `tandem-hub` take it
//! as a dev-dependency without a second copy of their own types.

#[cfg(feature = "browser")]
pub mod browser;
pub mod daemon;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod net;
pub mod netns;
pub mod paths;
pub mod probe;
pub mod process;
pub mod raw;
pub mod reference;
pub mod tls;
pub mod wait;

pub use paths::{KEEP_SCRATCH_ENV, Scratch, binary, models_dir, read_json, repo, scratch};
pub use wait::{wait_for, wait_for_async};
