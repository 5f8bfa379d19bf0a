//! Hub configuration: TOML, every key optional, unknown keys refused, every problem listed.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tandem_engine::settings::{
    EngineConfig, EngineSettings, ImageConfig, ModelsConfig, RuntimeConfig,
};

/// The embedded default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// The hub configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Logging filter (RUST_LOG syntax; `RUST_LOG` overrides it); SIGHUP reloads it. Default
    /// `info,ort=warn`.
    pub log_filter: String,
    /// How log lines are written (`[log] format`).
    pub log: LogConfig,
    /// PKI folder (`tandem-hub init`): CA, hub certificate, CRL.
    pub pki_dir: PathBuf,
    /// The CRL the running hub keeps fresh.
    pub pki: crate::pki::PkiConfig,
    /// Model registry: signed bundles under `<model>/<version>/` (`tandem-hub models push`).
    pub registry_dir: PathBuf,
    /// Feedback store: records the devices delivered (hard examples, corrections, offline
    /// events and telemetry); `tandem-hub feedback export` reads it.
    pub feedback_dir: PathBuf,
    /// Longest the whole stop may take on SIGTERM/SIGINT, in milliseconds (in-flight requests
    /// and deliveries, MQTT, QUIC close); a second signal exits at once. Default 10000.
    pub shutdown_grace_ms: u64,
    /// HTTP API (OIP v2 REST, health, metrics).
    pub http: HttpConfig,
    /// QUIC ingress for devices.
    pub quic: QuicConfig,
    /// Limits on what devices deliver (the per-device quota), retention, splits.
    pub feedback: crate::feedback::FeedbackConfig,
    /// Model evaluation: the report store, bounds.
    pub eval: crate::eval::EvalConfig,
    /// Retraining edge heads from feedback, the promotion gate.
    pub train: crate::train::TrainConfig,
    /// Routing-threshold calibration: the store, sample minimums, weights, pushing.
    pub calibrate: crate::calibrate::CalibrateConfig,
    /// ONNX Runtime.
    pub runtime: RuntimeConfig,
    /// Workers, queues, batching.
    pub engine: EngineConfig,
    /// Model store (the cloud variants).
    pub models: ModelsConfig,
    /// Image decoding limits.
    pub image: ImageConfig,
    /// MQTT: the broker (the hub's own mosquitto by default), fleet telemetry and commands.
    pub mqtt: crate::broker::MqttConfig,
    /// Fleet state.
    pub fleet: crate::fleet::FleetConfig,
    /// Enrolment by claim and certificate renewal.
    pub enrol: crate::enrol::EnrolConfig,
    /// Directory relative paths resolve against (not a key).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it was read from, read again on SIGHUP (not a key; `None`: the defaults).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[log]`: the log output (the filter is the top-level `log_filter`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default), `json` (one object per line) or `journald` (native journal fields,
    /// under systemd); the same field names in each. Read at start only.
    pub format: tandem_engine::daemon::logging::LogFormat,
}

/// `[http]`: the HTTP API (OIP v2 REST on the cloud variants, `/metrics`, health).
///
/// Authentication: operator routes always need operator credentials (the PKI's operator token,
/// a token of `bearer_token_file`, an operator certificate; `api::rights`). On a loopback
/// address inference and `/metrics` are open unless `bearer_token_file` is set; anywhere else
/// `bearer_token_file` or `tls` (or both) must be set, or the hub refuses to start. Health
/// stays open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address (IP:port); loopback by default.
    pub listen: String,
    /// Largest request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Longest wait for an inference, in milliseconds (504 after), and for a request's body
    /// once its head came (400 after, the connection closed).
    pub request_timeout_ms: u64,
    /// File of accepted bearer tokens, one per line (blank lines and `#` comments ignored,
    /// each token at least 16 visible ASCII characters). Empty: no token. When set, every
    /// request but `/v2/health/live` needs `Authorization: Bearer TOKEN`. A file keeps the
    /// secret out of the config; make it readable by the hub only.
    pub bearer_token_file: PathBuf,
    /// Serve HTTPS with the hub certificate from `pki_dir` and require a client certificate
    /// signed by the hub CA and not revoked in its `crl.pem` (`tandem-hub device add`).
    pub tls: bool,
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
    /// Host names clients reach the API by (the `Host` header; others get 421, against DNS
    /// rebinding). `localhost`, loopback addresses, the listen address and the DNS names of the
    /// hub's certificate are always allowed (any IP address when listening on
    /// `0.0.0.0`/`[::]`). Default: `["localhost"]`.
    pub allowed_hosts: Vec<String>,
}

impl HttpConfig {
    /// Whether the listen address is a loopback one (`false` when it does not parse).
    pub fn is_loopback(&self) -> bool {
        self.listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
    }
}

/// `[quic]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// UDP listen address for devices.
    pub listen: String,
    /// Caps on handshakes, connections, streams and buffered bytes (`[quic.limits]`).
    pub limits: crate::ingress::limits::QuicLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8480".into(),
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_ms: 30_000,
            bearer_token_file: PathBuf::new(),
            tls: false,
            max_inflight_body_bytes: 64 * 1024 * 1024,
            max_connections: 0,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            allowed_hosts: vec!["localhost".into()],
        }
    }
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8471".into(),
            limits: crate::ingress::limits::QuicLimits::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let engine = EngineConfig {
            max_batch: 16,
            max_batch_delay_us: 2000,
            queue_capacity: 256,
            ..Default::default()
        };
        let models = ModelsConfig {
            variant: "cloud".into(),
            ..Default::default()
        };
        let runtime = RuntimeConfig {
            intra_op_threads: 2,
            intra_op_spinning: false,
            ..Default::default()
        };
        Self {
            log_filter: "info,ort=warn".into(),
            log: LogConfig::default(),
            pki_dir: PathBuf::from("pki"),
            pki: crate::pki::PkiConfig::default(),
            registry_dir: PathBuf::from("registry"),
            feedback_dir: PathBuf::from("feedback"),
            shutdown_grace_ms: 10_000,
            http: HttpConfig::default(),
            quic: QuicConfig::default(),
            feedback: crate::feedback::FeedbackConfig::default(),
            eval: crate::eval::EvalConfig::default(),
            train: crate::train::TrainConfig::default(),
            calibrate: crate::calibrate::CalibrateConfig::default(),
            runtime,
            engine,
            models,
            image: ImageConfig::default(),
            mqtt: crate::broker::MqttConfig::default(),
            fleet: crate::fleet::FleetConfig::default(),
            enrol: crate::enrol::EnrolConfig::default(),
            base_dir: PathBuf::from("."),
            source: None,
        }
    }
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config {origin}: {}", .problems.join("; "))]
pub struct ConfigError {
    /// File or `<default>`.
    pub origin: String,
    /// Every problem, naming its key.
    pub problems: Vec<String>,
}

impl Config {
    /// Loads a file, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (origin, text, base) = match path {
            None => (
                "<default>".to_string(),
                DEFAULT_CONFIG.to_string(),
                PathBuf::from("."),
            ),
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| ConfigError {
                    origin: p.display().to_string(),
                    problems: vec![format!("cannot read: {e}")],
                })?,
                p.parent()
                    .filter(|b| !b.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
            ),
        };
        let parse_err = |e: toml::de::Error| ConfigError {
            origin: origin.clone(),
            problems: vec![e.to_string()],
        };
        // The file overlays the hub's own defaults key by key (a `[models]` table that sets
        // only `dir` keeps the hub's `variant = "cloud"`, not the engine's edge default).
        let mut merged: toml::Table = toml::from_str(DEFAULT_CONFIG).map_err(parse_err)?;
        overlay(&mut merged, toml::from_str(&text).map_err(parse_err)?);
        let mut cfg: Config = toml::Value::Table(merged).try_into().map_err(parse_err)?;
        cfg.base_dir = base;
        cfg.source = path.map(Path::to_path_buf);
        let mut problems = Vec::new();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log_filter) {
            problems.push(format!("log_filter: {e}"));
        }
        for (key, addr) in [
            ("http.listen", &cfg.http.listen),
            ("quic.listen", &cfg.quic.listen),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                problems.push(format!("{key}: `{addr}` is not an IP:port address"));
            }
        }
        problems.extend(cfg.http_problems());
        problems.extend(cfg.quic.limits.problems());
        problems.extend(cfg.feedback.problems());
        problems.extend(cfg.eval.problems());
        problems.extend(cfg.train.problems());
        problems.extend(cfg.calibrate.problems());
        problems.extend(cfg.mqtt.problems());
        problems.extend(cfg.fleet.problems());
        problems.extend(cfg.enrol.problems());
        problems.extend(cfg.pki.problems());
        problems.extend(cfg.engine_settings().problems());
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { origin, problems })
        }
    }

    /// The engine's part of the config (hub defaults applied).
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            runtime: self.runtime.clone(),
            engine: self.engine.clone(),
            models: self.models.clone(),
            image: self.image.clone(),
            base_dir: self.base_dir.clone(),
        }
    }

    /// What is wrong with `[http]` beyond its address: limits, the token file, and an
    /// address off loopback without authentication.
    fn http_problems(&self) -> Vec<String> {
        let h = &self.http;
        let mut p = Vec::new();
        if h.max_body_bytes < 1024 {
            p.push("http.max_body_bytes must be at least 1024".into());
        }
        if h.request_timeout_ms == 0 {
            p.push("http.request_timeout_ms must be > 0".into());
        }
        p.extend(tandem_engine::http::ConnLimits::problems(
            "http",
            h.max_body_bytes,
            h.max_inflight_body_bytes,
            h.header_read_timeout_ms,
            h.idle_timeout_ms,
        ));
        if let Some(path) = self.bearer_token_file()
            && let Err(e) = crate::api::auth::Tokens::load(&path)
        {
            p.push(format!("http.bearer_token_file: {e}"));
        }
        let open = self.bearer_token_file().is_none() && !h.tls;
        if open && h.listen.parse::<SocketAddr>().is_ok() && !h.is_loopback() {
            p.push(format!(
                "http.listen: `{}` is not a loopback address, and the API there must be \
                 authenticated: set http.bearer_token_file (a file of bearer tokens) or \
                 http.tls = true (client certificates from the hub CA)",
                h.listen
            ));
        }
        p
    }

    /// The bearer token file, resolved; `None` when not set.
    pub fn bearer_token_file(&self) -> Option<PathBuf> {
        let f = &self.http.bearer_token_file;
        (!f.as_os_str().is_empty()).then(|| tandem_engine::settings::resolve(&self.base_dir, f))
    }

    /// The hub's operator token file (`operator.token` in `pki_dir`, created by `tandem-hub
    /// init` or the first `run`).
    pub fn operator_token_file(&self) -> PathBuf {
        self.pki_dir().join(crate::api::auth::OPERATOR_TOKEN_FILE)
    }

    /// The model registry's folder, resolved.
    pub fn registry_dir(&self) -> PathBuf {
        tandem_engine::settings::resolve(&self.base_dir, &self.registry_dir)
    }

    /// The PKI folder, resolved.
    pub fn pki_dir(&self) -> PathBuf {
        tandem_engine::settings::resolve(&self.base_dir, &self.pki_dir)
    }

    /// The claim store's folder, resolved.
    pub fn claims_dir(&self) -> PathBuf {
        tandem_engine::settings::resolve(&self.base_dir, &self.enrol.dir)
    }

    /// The feedback store's folder, resolved.
    pub fn feedback_dir(&self) -> PathBuf {
        tandem_engine::settings::resolve(&self.base_dir, &self.feedback_dir)
    }

    /// The report store's folder (`eval.dir`), resolved.
    pub fn eval_dir(&self) -> PathBuf {
        tandem_engine::settings::resolve(&self.base_dir, &self.eval.dir)
    }

    /// The candidates' and decisions' folder (`train.dir`), resolved.
    pub fn train_dir(&self) -> PathBuf {
        tandem_engine::settings::resolve(&self.base_dir, &self.train.dir)
    }

    /// The calibration store's folder (`calibrate.dir`), resolved.
    pub fn calibrate_dir(&self) -> PathBuf {
        tandem_engine::settings::resolve(&self.base_dir, &self.calibrate.dir)
    }
}

fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_matches_code() {
        assert_eq!(
            Config::load(None).expect("default parses"),
            Config::default()
        );
    }

    #[test]
    fn a_partial_table_keeps_the_hub_defaults() {
        let dir = tempfile::Builder::new()
            .prefix("tandem-hub-cfg-")
            .tempdir()
            .expect("tmp");
        let f = dir.path().join("hub.toml");
        std::fs::write(&f, "[models]\ndir = \"/m\"\n[engine]\nworkers = 2\n").expect("write");
        let cfg = Config::load(Some(&f)).expect("loads");
        assert_eq!(cfg.models.variant, "cloud");
        assert_eq!(cfg.engine.max_batch, 16);
        assert_eq!(cfg.engine.workers, 2);
        std::fs::write(&f, "[models]\nvariantt = \"cloud\"\n").expect("write");
        let err = Config::load(Some(&f)).expect_err("unknown key");
        assert!(err.to_string().contains("variantt"), "{err}");
        std::fs::write(
            &f,
            "[quic]\nlisten = \"nowhere\"\n[engine]\nmax_batch = 0\n",
        )
        .expect("write");
        let err = Config::load(Some(&f)).expect_err("bad values");
        assert!(
            err.to_string().contains("quic.listen") && err.to_string().contains("engine.max_batch"),
            "{err}"
        );
    }
}
