//! The daemons' log output through a filter from the config (`[log] filter` on the agent,
//! `log_filter` on the hub) that a reload replaces, in the format `[log] format` names (fixed
//! until a restart): `text` (human lines on stderr), `json` (one JSON object per line on
//! stderr, see [`super::json_log`]) or `journald` (native journal entries with every span and
//! event field as a journal field: `DEVICE`, `MODEL`, `REQUEST_ID`). `RUST_LOG`, when set,
//! wins at start and is kept over reloads (a developer's override); the shipped units do not
//! set it.

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Where the journal listens (systemd-journald's native protocol).
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// `[log] format`: how log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines on stderr, span fields as `span{key=value}:` (the default).
    #[default]
    Text,
    /// One JSON object per line on stderr, span and event fields as top-level keys.
    Json,
    /// Native journald entries (under systemd), fields upper-cased as the journal spells them;
    /// text on stderr with an error line when the journal socket cannot be reached.
    Journald,
}

impl LogFormat {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
            Self::Journald => "journald",
        }
    }
}

/// Why a filter could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("log filter `{filter}`: {message}")]
    Filter {
        /// The filter.
        filter: String,
        /// What the parser said.
        message: String,
    },
    /// The subscriber is gone or another one was installed first.
    #[error("log filter cannot be changed: {0}")]
    Reload(String),
}

/// The installed filter, replaceable at run time.
#[derive(Debug)]
pub struct LogFilter {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    from_env: bool,
    current: std::sync::Mutex<String>,
}

static INSTALLED: std::sync::OnceLock<LogFilter> = std::sync::OnceLock::new();

/// Installs the global subscriber with `filter` (`RUST_LOG` wins when set) writing `format`,
/// once per process; [`reload()`] replaces its filter later.
pub fn init(filter: &str, format: LogFormat) {
    let _ = INSTALLED.get_or_init(|| install(filter, format));
}

/// Replaces the filter [`init`] installed (nothing without one): see [`LogFilter::set`].
pub fn reload(filter: &str) -> Result<bool, LogError> {
    match INSTALLED.get() {
        Some(f) => f.set(filter),
        None => Ok(false),
    }
}

/// Installs the global subscriber with `filter` (`RUST_LOG` wins when set). When a
/// subscriber is already installed (tests running daemons in-process), the handle changes
/// nothing.
fn install(filter: &str, format: LogFormat) -> LogFilter {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let (first, from_env) = match &env {
        Some(v) => (
            EnvFilter::try_new(v).unwrap_or_else(|_| EnvFilter::new(filter)),
            true,
        ),
        None => (EnvFilter::new(filter), false),
    };
    let (layer, handle) = reload::Layer::new(first);
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(output(format))
        .try_init()
        .is_ok();
    LogFilter {
        handle: installed.then_some(handle),
        from_env,
        current: std::sync::Mutex::new(env.unwrap_or_else(|| filter.to_string())),
    }
}

/// The layer that writes `format`.
type Output = Box<
    dyn Layer<tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>>
        + Send
        + Sync,
>;

fn output(format: LogFormat) -> Output {
    let text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    match format {
        LogFormat::Text => text(),
        LogFormat::Json => super::json_log::JsonLayer.boxed(),
        LogFormat::Journald => match journald() {
            Ok(l) => l.boxed(),
            Err(e) => {
                // No subscriber yet: the one place this is said is stderr.
                eprintln!(
                    "log.format = \"journald\": cannot write to the journal at {JOURNAL_SOCKET} ({e}); logging text to stderr instead"
                );
                text()
            }
        },
    }
}

/// The journal layer: event and span fields unprefixed (`DEVICE=`, `MODEL=`, `REQUEST_ID=`,
/// like the keys of the other formats), `SYSLOG_IDENTIFIER` the program's name.
fn journald() -> std::io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::layer()?.with_field_prefix(None))
}

impl LogFilter {
    /// Replaces the filter with `filter` (from a reloaded config). Returns whether it changed;
    /// with `RUST_LOG` set the environment's filter stays.
    pub fn set(&self, filter: &str) -> Result<bool, LogError> {
        let parsed = EnvFilter::try_new(filter).map_err(|e| LogError::Filter {
            filter: filter.to_string(),
            message: e.to_string(),
        })?;
        if self.from_env {
            tracing::info!(
                filter,
                "log filter from RUST_LOG kept (unset it to use the config's)"
            );
            return Ok(false);
        }
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if *cur == filter {
            return Ok(false);
        }
        if let Some(h) = &self.handle {
            h.reload(parsed)
                .map_err(|e| LogError::Reload(e.to_string()))?;
        }
        tracing::info!(from = %cur, to = filter, "log filter changed");
        *cur = filter.to_string();
        Ok(true)
    }
}
