//! MQTT to the hub's broker (flow 4): status, telemetry, events out; commands in
//! (docs/mqtt.md).
//!
//! # Layout
//! - [`config`]: `[mqtt]`, and the TLS client from `[hub]`'s certificates.
//! - [`identity`]: the device name from the certificate's CN.
//! - [`link`]: [`MqttLink`]: the connection, last will, bounded outgoing queue, reconnects.

pub mod config;
pub mod identity;
pub mod link;
#[cfg(test)]
mod link_tests;

pub use config::MqttConfig;
pub use link::{Handler, MqttLink, Outgoing, Reply};

/// Why MQTT cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// Certificates or TLS.
    #[error("{0}")]
    Setup(String),
    /// `mqtt.url`.
    #[error("mqtt.url: {0}")]
    Url(#[from] tandem_shared::mqtt::UrlError),
    /// The certificate carries no usable device name.
    #[error(
        "{0}: the certificate's subject has no CN that is a device name (lowercase letters, digits, `-`)"
    )]
    Identity(std::path::PathBuf),
}
