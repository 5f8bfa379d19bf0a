//! Enrolment and renewal of the device certificate (docs/enrolment.md).
//!
//! # Layout
//! - `keys`: a new key and its certificate request (generated here; the private key never
//!   leaves the device), key and certificate files written 0600 and switched atomically
//!   (recovered at start), the validity of a certificate.
//! - `client`: enrolment with a claim token on the hub's enrolment endpoint.
//! - `renew`: the task that renews at two-thirds of the certificate's lifetime over the
//!   authenticated hub connection and moves the QUIC and MQTT links onto the new identity.

pub mod cli;
mod client;
mod keys;
pub mod renew;

pub use client::{Enrolment, enrol, enrol_at_start, needs_enrolment};
pub use keys::{Validity, recover, validity};

use std::path::PathBuf;

/// Why enrolment or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// Key generation or the certificate request failed.
    #[error("key or certificate request: {0}")]
    Key(String),
    /// TLS set-up (the CA file, the configuration).
    #[error("TLS: {0}")]
    Tls(String),
    /// The hub could not be reached, or the exchange broke off.
    #[error("hub {addr}: {message}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What happened.
        message: String,
    },
    /// The hub refused: a claim token unknown, used, expired or revoked; a taken name.
    #[error("the hub refused: {message}")]
    Refused {
        /// The hub's error code.
        code: tandem_shared::wire::ErrorCode,
        /// The hub's message.
        message: String,
    },
    /// The hub answered something unexpected, or a certificate that does not fit the request.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The certificate cannot be read.
    #[error("{path}: not a readable certificate: {message}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate has expired: renewal is impossible, the device needs a new claim.
    #[error(
        "the certificate expired {ago_s} s ago: renewal is impossible; enrol again with a new claim (`tandem-agent enrol`)"
    )]
    Expired {
        /// Seconds since it expired.
        ago_s: u64,
    },
}
