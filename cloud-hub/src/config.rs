//! Hub configuration: TOML, every key optional, unknown keys refused.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// The embedded default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// The hub configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP API (health, metrics).
    pub http: HttpConfig,
    /// Logging filter.
    pub log_filter: String,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; loopback by default.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8480".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            log_filter: "info".into(),
        }
    }
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config {origin}: {message}")]
pub struct ConfigError {
    /// File or `<default>`.
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// Loads a file, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (origin, text) = match path {
            None => ("<default>".to_string(), DEFAULT_CONFIG.to_string()),
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| ConfigError {
                    origin: p.display().to_string(),
                    message: format!("cannot read: {e}"),
                })?,
            ),
        };
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        if cfg.http.listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError {
                origin,
                message: format!(
                    "http.listen: `{}` is not an IP:port address",
                    cfg.http.listen
                ),
            });
        }
        Ok(cfg)
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
}
