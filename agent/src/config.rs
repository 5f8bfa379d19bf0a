//! Agent configuration: TOML with every key optional, `deny_unknown_fields`, and a
//! `validate` that lists every problem rather than the first.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tandem_engine::settings::{
    EngineConfig, EngineSettings, ImageConfig, ModelsConfig, RuntimeConfig,
};
use tandem_shared::manifest::Signal;
use tandem_shared::mqtt::args::check_threshold;

/// The embedded default configuration, with a comment on every key.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type, or an unknown key.
    #[error("config {origin} is invalid: {message}")]
    Parse {
        /// File name or `<default>`.
        origin: String,
        /// What toml said, with the key and line.
        message: String,
    },
    /// Values that parse but cannot work, all of them.
    #[error("config {origin} has {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid {
        /// File name.
        origin: String,
        /// Every problem, naming its key.
        problems: Vec<String>,
    },
}

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Local API.
    pub server: ServerConfig,
    /// ONNX Runtime.
    pub runtime: RuntimeConfig,
    /// Inference engine.
    pub engine: EngineConfig,
    /// Model store.
    pub models: ModelsConfig,
    /// Image decoding limits.
    pub image: ImageConfig,
    /// Logging.
    pub log: LogConfig,
    /// The hub link (offloading); empty address disables it.
    pub hub: crate::uplink::HubConfig,
    /// Routing policy.
    pub policy: crate::hybrid::PolicyConfig,
    /// MQTT: status, telemetry, events and commands through the hub's broker; empty url: off.
    pub mqtt: crate::uplink::mqtt::MqttConfig,
    /// The durable store-and-forward queue.
    pub queue: crate::queue::QueueConfig,
    /// Hard examples and corrections for the hub's dataset.
    pub feedback: crate::feedback::FeedbackConfig,
    /// Faces blurred in the images that leave the device.
    pub privacy: crate::privacy::PrivacyConfig,
    /// Camera frame streams: queue, drop policy, object tracker and snapshots.
    pub cameras: crate::track::CamerasConfig,
    /// This device's labels (`group = "cameras-north"`), reported in its MQTT status: rollouts
    /// select devices by them (`tandem-hub rollout start --group`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Directory relative paths are resolved against (not a key).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it was read from, read again on SIGHUP (not a key; `None`: the defaults).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the local API.
    pub listen: String,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Request timeout, in milliseconds: the longest wait for an answer (504 after) and for a
    /// request's body once its head came (400 after, the connection closed).
    pub request_timeout_ms: u64,
    /// Shutdown grace period, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Most bytes of request bodies in flight at once (each request counts its
    /// `Content-Length`); a request over it gets 503 with `Retry-After` before its body is read.
    pub max_inflight_body_bytes: usize,
    /// Most connections open at once, TLS handshakes included; at the cap a new connection
    /// closes the oldest idle one, or is refused when all are busy. 0: half the process's
    /// open-file limit (`LimitNOFILE`), between 16 and 4096.
    pub max_connections: usize,
    /// Longest a request head may take to arrive once its first byte came, in milliseconds
    /// (the connection is closed after it).
    pub header_read_timeout_ms: u64,
    /// Longest a connection may stay open with no request in progress (after its accept or its
    /// last response), in milliseconds.
    pub idle_timeout_ms: u64,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter (RUST_LOG syntax; `RUST_LOG` overrides it); SIGHUP reloads it. Default
    /// `info,ort=warn`.
    pub filter: String,
    /// How lines are written: `text` (default), `json` (one object per line) or `journald`
    /// (native journal fields, under systemd); the same field names in each. Read at start
    /// only.
    pub format: tandem_engine::daemon::logging::LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8470".into(),
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            max_inflight_body_bytes: 64 * 1024 * 1024,
            max_connections: 0,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info,ort=warn".into(),
            format: Default::default(),
        }
    }
}
impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            runtime: RuntimeConfig::default(),
            engine: EngineConfig::default(),
            models: ModelsConfig::default(),
            image: ImageConfig::default(),
            log: LogConfig::default(),
            hub: crate::uplink::HubConfig::default(),
            policy: crate::hybrid::PolicyConfig::default(),
            mqtt: crate::uplink::mqtt::MqttConfig::default(),
            queue: crate::queue::QueueConfig::default(),
            feedback: crate::feedback::FeedbackConfig::default(),
            privacy: crate::privacy::PrivacyConfig::default(),
            cameras: crate::track::CamerasConfig::default(),
            labels: std::collections::BTreeMap::new(),
            base_dir: PathBuf::from("."),
            source: None,
        }
    }
}

impl Config {
    /// Parses TOML text; `origin` names it in errors; relative paths resolve against `base_dir`.
    pub fn from_toml(text: &str, origin: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.base_dir = base_dir.to_path_buf();
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// Loads a file, or the defaults (relative to the working directory) when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_toml(DEFAULT_CONFIG, "<default>", Path::new(".")),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let base = p
                    .parent()
                    .filter(|b| !b.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let mut cfg = Self::from_toml(&text, &p.display().to_string(), base)?;
                cfg.source = Some(p.to_path_buf());
                Ok(cfg)
            }
        }
    }

    /// Every problem with the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "server.listen: `{}` is not an IP:port address",
                self.server.listen
            ));
        }
        for (k, v) in &self.labels {
            let ok = |s: &str| {
                (1..=64).contains(&s.len())
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            if !ok(k) || !ok(v) {
                p.push(format!(
                    "labels.{k} = `{v}`: names and values are 1-64 letters, digits, `-`, `_` or `.`"
                ));
            }
        }
        if self.server.max_body_bytes < 1024 {
            p.push("server.max_body_bytes must be at least 1024".into());
        }
        if self.server.request_timeout_ms == 0 {
            p.push("server.request_timeout_ms must be > 0".into());
        }
        p.extend(tandem_engine::http::ConnLimits::problems(
            "server",
            self.server.max_body_bytes,
            self.server.max_inflight_body_bytes,
            self.server.header_read_timeout_ms,
            self.server.idle_timeout_ms,
        ));
        p.extend(self.engine_settings().problems());
        if !self.hub.address.is_empty()
            && let Err(e) = crate::uplink::HubAddress::parse(&self.hub.address)
        {
            p.push(format!("hub.address: {e}"));
        }
        if !self.hub.enrol_address.is_empty()
            && (self.hub.claim_token_file.as_os_str().is_empty() || self.hub.device_name.is_empty())
        {
            p.push(
                "hub.enrol_address is set: hub.claim_token_file and hub.device_name must be too"
                    .into(),
            );
        }
        if self.hub.timeout_ms == 0 {
            p.push("hub.timeout_ms must be > 0".into());
        }
        if self.hub.keep_alive_ms == 0 || self.hub.idle_timeout_ms <= self.hub.keep_alive_ms {
            p.push(format!(
                "hub.keep_alive_ms ({}) must be above 0 and below hub.idle_timeout_ms ({})",
                self.hub.keep_alive_ms, self.hub.idle_timeout_ms
            ));
        }
        for (name, m) in &self.policy.models {
            // Against the signal named here; without one, against the loosest range (the
            // model's own signal is known once it is loaded; a command is checked against it).
            let signal = m.signal.unwrap_or(Signal::Entropy);
            if let Some(Err(e)) = m.threshold.map(|t| check_threshold(Some(signal), t)) {
                p.push(format!("policy.models.{name}.{e}"));
            }
            p.extend(
                m.box_problems()
                    .iter()
                    .map(|e| format!("policy.models.{name}.{e}")),
            );
        }
        p.extend(self.queue.problems());
        p.extend(self.feedback.problems());
        p.extend(self.privacy.problems());
        p.extend(self.mqtt.problems());
        p.extend(self.cameras.problems());
        if !self.mqtt.url.is_empty()
            && (self.hub.cert.as_os_str().is_empty() || self.hub.key.as_os_str().is_empty())
        {
            p.push(
                "mqtt.url is set: hub.ca, hub.cert and hub.key must name the device's certificates"
                    .into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            p.push(format!("log.filter: {e}"));
        }
        p
    }

    /// The engine's part of the config.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            runtime: self.runtime.clone(),
            engine: self.engine.clone(),
            models: self.models.clone(),
            image: self.image.clone(),
            base_dir: self.base_dir.clone(),
        }
    }

    /// A path from the config, resolved against the config's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        tandem_engine::settings::resolve(&self.base_dir, p)
    }

    /// The listen address (validated).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8470)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_code_default() {
        let parsed = Config::from_toml(DEFAULT_CONFIG, "<default>", Path::new(".")).expect("valid");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[server]\nlisten_addr = \"x\"\n", "t.toml", Path::new("."))
            .expect_err("unknown key");
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text = "[server]\nlisten = \"nope\"\n[runtime]\nexecution_providers = [\"gpu\"]\n[engine]\nworkers = 0\n";
        match Config::from_toml(text, "t.toml", Path::new(".")) {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert_eq!(problems.len(), 3, "{problems:?}");
                assert!(problems[0].starts_with("server.listen"));
                assert!(problems[1].contains("gpu"));
                assert!(problems[2].starts_with("engine.workers"));
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
