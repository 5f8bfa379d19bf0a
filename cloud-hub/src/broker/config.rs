//! `[mqtt]` in the hub config: which broker (the hub's own mosquitto, an external one, or
//! none), where it listens, and how the hub supervises it.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use tandem_shared::mqtt::BrokerUrl;

/// Which broker the hub uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    /// The hub runs and supervises its own mosquitto (the default).
    Embedded,
    /// The hub connects to `mqtt.url`, a broker run elsewhere under the same contract.
    External,
    /// No MQTT: no fleet state, no commands.
    Off,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `embedded`, `external` or `off`.
    pub mode: MqttMode,
    /// Embedded: the TLS listener of the hub's mosquitto (IP:port). Port 0 picks a free port
    /// at start (kept across restarts of the broker).
    pub listen: String,
    /// External: the broker, `mqtts://HOST[:PORT]`. Its certificate must chain to the PKI's
    /// CA; the hub connects with its own certificate (CN `tandem-hub`).
    pub url: String,
    /// Embedded: the mosquitto binary. Empty: `PATH`, then `/usr/sbin`, `/usr/local/sbin`.
    pub mosquitto_bin: PathBuf,
    /// Embedded: folder for the generated `mosquitto.conf` and `acl`, the pid file and the
    /// broker's persistence (retained messages). Rewritten at every start.
    pub runtime_dir: PathBuf,
    /// Embedded: bound of the delay before the first restart after the broker exits, in
    /// milliseconds (the delay is a random time up to the bound: full jitter); the bound
    /// doubles on each failure up to `restart_backoff_max_ms`, back to this after 30 s up.
    pub restart_backoff_ms: u64,
    /// Embedded: longest delay between restarts, in milliseconds.
    pub restart_backoff_max_ms: u64,
    /// Embedded: longest wait for the broker to accept connections after it starts, in
    /// milliseconds.
    pub ready_timeout_ms: u64,
    /// Embedded: how often `crl.pem` is checked for changes, in milliseconds; a change that
    /// revokes another certificate restarts the broker (dropping the revoked devices), one
    /// that only re-signs the CRL reloads it with SIGHUP (connections kept).
    pub crl_check_ms: u64,
    /// Default wait for a device's answer to a command, in milliseconds.
    pub command_timeout_ms: u64,
    /// Publish Home Assistant MQTT discovery (retained, under `homeassistant/`) for every
    /// device heard online: connectivity, offload share, latency and model versions over the
    /// device's own status and telemetry topics (docs/mqtt.md). Off by default: it adds
    /// retained messages to the broker that only a Home Assistant installation reads.
    pub ha_discovery: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            mode: MqttMode::Embedded,
            listen: "127.0.0.1:8883".into(),
            url: String::new(),
            mosquitto_bin: PathBuf::new(),
            runtime_dir: PathBuf::from("run/mqtt"),
            restart_backoff_ms: 500,
            restart_backoff_max_ms: 30_000,
            ready_timeout_ms: 10_000,
            crl_check_ms: 2000,
            command_timeout_ms: 5000,
            ha_discovery: false,
        }
    }
}

impl MqttConfig {
    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match self.mode {
            MqttMode::Embedded => {
                if self.listen.parse::<SocketAddr>().is_err() {
                    p.push(format!(
                        "mqtt.listen: `{}` is not an IP:port address",
                        self.listen
                    ));
                }
                if self.runtime_dir.as_os_str().is_empty() {
                    p.push("mqtt.runtime_dir must be set".into());
                }
                if self.restart_backoff_ms == 0
                    || self.restart_backoff_max_ms < self.restart_backoff_ms
                {
                    p.push(format!(
                        "mqtt.restart_backoff_ms ({}) must be above 0 and at most mqtt.restart_backoff_max_ms ({})",
                        self.restart_backoff_ms, self.restart_backoff_max_ms
                    ));
                }
                if self.ready_timeout_ms == 0 || self.crl_check_ms == 0 {
                    p.push("mqtt.ready_timeout_ms and mqtt.crl_check_ms must be > 0".into());
                }
            }
            MqttMode::External => {
                if let Err(e) = BrokerUrl::parse(&self.url) {
                    p.push(format!("mqtt.url: {e}"));
                }
            }
            MqttMode::Off => {}
        }
        if self.command_timeout_ms == 0 {
            p.push("mqtt.command_timeout_ms must be > 0".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_their_keys() {
        assert!(MqttConfig::default().problems().is_empty());
        let c = MqttConfig {
            listen: "x".into(),
            restart_backoff_ms: 0,
            ..Default::default()
        };
        let p = c.problems().join("; ");
        assert!(
            p.contains("mqtt.listen") && p.contains("mqtt.restart_backoff_ms"),
            "{p}"
        );
        let c = MqttConfig {
            mode: MqttMode::External,
            url: "mqtt://h".into(),
            ..Default::default()
        };
        assert!(c.problems()[0].contains("mqtt.url"), "{:?}", c.problems());
    }
}
