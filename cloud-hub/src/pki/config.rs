//! `[pki]` in the hub config: how long a CRL the running hub signs is valid, and how often it
//! looks for a change the CLI made (`device revoke`).

use serde::{Deserialize, Serialize};

/// `[pki]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PkiConfig {
    /// Validity of the CRL the running hub signs (`next_update` = now + this), in seconds;
    /// re-signed at half of it, so a CRL never lapses while the hub runs. Default 604800
    /// (7 days); at least 2.
    pub crl_validity_s: u64,
    /// How often `crl.pem` is checked for a change the CLI made (`device revoke`), in
    /// milliseconds; a change is re-signed, loaded into the QUIC and HTTPS listeners, and the
    /// revoked devices' open connections are closed. Default 1000.
    pub crl_check_ms: u64,
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            crl_validity_s: 7 * 24 * 3600,
            crl_check_ms: 1000,
        }
    }
}

impl PkiConfig {
    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.crl_validity_s < 2 {
            p.push("pki.crl_validity_s must be at least 2".into());
        }
        if self.crl_check_ms == 0 || self.crl_check_ms >= self.crl_validity_s * 500 {
            p.push(format!(
                "pki.crl_check_ms ({}) must be above 0 and under half of pki.crl_validity_s ({} s)",
                self.crl_check_ms, self.crl_validity_s
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_their_keys() {
        assert!(PkiConfig::default().problems().is_empty());
        let p = PkiConfig {
            crl_validity_s: 1,
            crl_check_ms: 1000,
        }
        .problems()
        .join("; ");
        assert!(
            p.contains("pki.crl_validity_s") && p.contains("pki.crl_check_ms"),
            "{p}"
        );
    }
}
