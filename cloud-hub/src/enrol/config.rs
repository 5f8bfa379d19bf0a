//! `[enrol]` in the hub config: the enrolment endpoint, the claim store and the lifetime of the
//! certificates the hub signs for devices (enrolment and renewal).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[enrol]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrolConfig {
    /// UDP address of the enrolment endpoint (QUIC, ALPN `tandem-enrol/1`, TLS with server
    /// authentication only: a device proves itself with a claim token). Empty (the default):
    /// no enrolment endpoint; renewal on the device connection works either way.
    pub listen: String,
    /// Folder of the claim store (`claims.db`, sled): claim token digests and the record of
    /// every certificate enrolment and renewal issued. Default `claims`.
    pub dir: PathBuf,
    /// Lifetime of a certificate the hub signs at enrolment or renewal, in seconds; agents
    /// renew at two-thirds of it. Default 31536000 (365 days).
    pub cert_lifetime_s: u64,
    /// Most enrolment connections open at once; more are refused at once. Default 64.
    pub max_connections: usize,
    /// After a device first connects (QUIC) with a renewed certificate, how long its older
    /// certificates stay valid before they are revoked as superseded, in milliseconds: time
    /// for what is in flight on its old connection to finish. Default 30000 (30 s).
    pub superseded_grace_ms: u64,
}

impl Default for EnrolConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            dir: PathBuf::from("claims"),
            cert_lifetime_s: 365 * 24 * 3600,
            max_connections: 64,
            superseded_grace_ms: 30_000,
        }
    }
}

impl EnrolConfig {
    /// What is wrong with the section, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "enrol.listen: `{}` is not an IP:port address",
                self.listen
            ));
        }
        if self.cert_lifetime_s < 3 {
            p.push("enrol.cert_lifetime_s must be at least 3".into());
        }
        if self.max_connections == 0 {
            p.push("enrol.max_connections must be > 0".into());
        }
        p
    }
}
