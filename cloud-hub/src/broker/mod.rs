//! The MQTT broker the hub runs by default: mosquitto (the Debian package, `make setup`),
//! started as the hub's own child process with a configuration the hub generates, and
//! supervised (restarted with backoff when it exits, reported at ERROR, counted in `/metrics`).
//! The hub never relies on a system mosquitto service.
//!
//! # Layout
//! - [`config`]: `[mqtt]` (mode `embedded` | `external` | `off`, listener, runtime folder).
//! - [`mosquitto`]: finding the binary; the generated `mosquitto.conf`.
//! - [`acl`]: the generated ACL (hub, subscribers, devices), rewritten when subscribers change.
//! - [`supervisor`]: [`Broker`]: start, readiness, restart with backoff, restart on a new CRL,
//!   stop.
//! - `spawn`: mosquitto forked from one long-lived thread, tied to the hub's life
//!   (`setpriv --pdeathsig`), so a killed hub leaves no broker behind.

pub mod acl;
pub mod config;
pub mod mosquitto;
mod spawn;
pub mod supervisor;

pub use config::{MqttConfig, MqttMode};
pub use supervisor::{Broker, BrokerSpec, BrokerStats};

use std::path::PathBuf;

/// The MQTT identity of the hub: the CN of its certificate (`pki/hub.pem`).
pub const HUB_IDENTITY: &str = "tandem-hub";

/// Why the broker cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No mosquitto binary.
    #[error(
        "mosquitto is not installed (looked for {}): run `make setup` (installs the Debian package), \
         set mqtt.mosquitto_bin, or use an external broker (mqtt.mode = \"external\")",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotInstalled {
        /// Where it was looked for.
        searched: Vec<PathBuf>,
    },
    /// A path that cannot go into mosquitto's configuration (not UTF-8, a line break).
    #[error("{0}: cannot be used in mosquitto.conf (not UTF-8, or a line break)")]
    Path(PathBuf),
    /// A file of the PKI is missing.
    #[error("{0} is missing (create the PKI with `tandem-hub init --dir DIR`)")]
    Pki(PathBuf),
    /// A runtime file or the process.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The listen address.
    #[error("mqtt.listen `{0}` is not an IP:port address")]
    Listen(String),
    /// mosquitto exited before accepting connections.
    #[error("mosquitto exited at start ({status}); its last lines:\n{stderr}")]
    Exited {
        /// Exit status.
        status: String,
        /// The tail of its log.
        stderr: String,
    },
    /// mosquitto did not accept connections in time.
    #[error(
        "mosquitto did not accept connections on {addr} within {ms} ms; its last lines:\n{stderr}"
    )]
    NotReady {
        /// The listener.
        addr: std::net::SocketAddr,
        /// The wait.
        ms: u64,
        /// The tail of its log.
        stderr: String,
    },
}

impl BrokerError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
