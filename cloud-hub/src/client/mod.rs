//! The command line's client of a running hub's API (`rollout`, `claim`, `fleet`, and any
//! command that talks to the hub): where the hub is (`--hub`, else the config's `http.listen`,
//! HTTPS when `http.tls`), how to trust it (`--ca`, else the PKI's `ca.pem`) and who calls
//! (`--cert/--key`: a client certificate; a bearer token: `TANDEM_HUB_TOKEN`, `--token-file`,
//! else the PKI's operator token). Every option has an environment variable. Every failure is a
//! [`ClientError`] that says what to fix, with the exit code a script can test.
//!
//! A new command takes [`HubArgs`] flattened into its arguments and calls
//! [`Client::new`] then [`Client::call`].
//!
//! # Layout
//! - this file: the options, the client, the errors and exit codes.
//! - `tls`: the rustls configuration (the hub's CA only, the client certificate) and the
//!   reading of a failed connection (wrong CA, wrong name, refused certificate, not TLS).

mod tls;

use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Longest a request may take (a fleet command waits up to its own timeout inside it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(75);

/// Where the hub's API is and how to call it (flattened into every command that talks to it).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HubArgs {
    /// Hub config file (http.listen, http.tls, pki_dir's ca.pem and operator.token).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// [`HubArgs`] without the config file, for commands that have their own `--config` and work
/// on this machine's stores unless `--hub` names a running hub.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RemoteArgs {
    /// The hub's API, `https://HOST:PORT` or `http://HOST:PORT` (default: the config's
    /// http.listen, HTTPS when http.tls).
    #[arg(long, env = "TANDEM_HUB_URL")]
    pub hub: Option<String>,
    /// The CA that signed the hub's certificate (default: ca.pem in the config's pki_dir).
    #[arg(long, env = "TANDEM_HUB_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for HTTPS: an operator's (`tandem-hub operator add`).
    #[arg(long, env = "TANDEM_HUB_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The key of --cert (PEM).
    #[arg(long, env = "TANDEM_HUB_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File whose first token is sent as the operator's bearer token (default: the
    /// `TANDEM_HUB_TOKEN` variable, else `operator.token` in the config's pki_dir, else the
    /// config's http.bearer_token_file; those defaults only without --cert).
    #[arg(long, env = TOKEN_FILE_ENV)]
    pub token_file: Option<PathBuf>,
}

/// The environment variable naming the operator token file.
pub const TOKEN_FILE_ENV: &str = "TANDEM_HUB_TOKEN_FILE";

/// The environment variable holding an operator token itself (never an argument: a command
/// line is visible to every user of the machine).
pub const TOKEN_ENV: &str = "TANDEM_HUB_TOKEN";

/// Why a call to the hub failed; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The options contradict each other or name nothing usable.
    #[error("{0}")]
    Usage(String),
    /// The config file, or a file it names.
    #[error("{0}")]
    Config(String),
    /// A certificate, key or token file.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// Nothing answers at the address.
    #[error(
        "cannot reach the hub at {url}: {cause} (is it running? is --hub / TANDEM_HUB_URL right?)"
    )]
    Unreachable {
        /// The hub's URL.
        url: String,
        /// The connection error.
        cause: String,
    },
    /// The TLS connection failed; the message names the cause and the fix.
    #[error("TLS with the hub at {url}: {message}")]
    Tls {
        /// The hub's URL.
        url: String,
        /// What happened and what to do.
        message: String,
    },
    /// 401: no credentials, or ones the hub does not know.
    #[error(
        "401 from the hub: {message} (give an operator's --cert/--key, or its token: {TOKEN_ENV}, --token-file; the hub's own is pki_dir/operator.token)"
    )]
    Unauthorized {
        /// The hub's message.
        message: String,
    },
    /// 403: credentials without the right (a device's certificate on an operator route).
    #[error(
        "403 from the hub: {message} (these credentials may not do this: use an operator's certificate, `tandem-hub operator add NAME`, or the operator token)"
    )]
    Forbidden {
        /// The hub's message.
        message: String,
    },
    /// Any other answer that is not a success.
    #[error("{status} from the hub: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The hub's message.
        message: String,
    },
}

impl ClientError {
    /// The exit code: 64 usage, 78 config, 66 a file, 69 unreachable or the hub failing, 77 a
    /// refused identity (TLS, 401, 403), 65 a request the hub refused (4xx).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 64,
            Self::Config(_) => 78,
            Self::File { .. } => 66,
            Self::Unreachable { .. } => 69,
            Self::Tls { .. } | Self::Unauthorized { .. } | Self::Forbidden { .. } => 77,
            Self::Status { status, .. } if (400..500).contains(status) => 65,
            Self::Status { .. } => 69,
        }
    }
}

/// The `(exit code, message)` pair the command modules report with.
impl From<ClientError> for (u8, String) {
    fn from(e: ClientError) -> Self {
        (e.exit_code(), e.to_string())
    }
}

/// A client of the running hub's API.
#[derive(Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
    /// The TLS configuration (HTTPS), kept to diagnose a refused certificate.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Client {
    /// The client `args` describe (see [`HubArgs`] for the defaults).
    pub fn new(args: &HubArgs) -> Result<Self, ClientError> {
        Self::with(&args.remote, args.config.as_deref())
    }

    /// The client of `args` with the hub config at `config` (the built-in default when
    /// `None`) for what they leave out.
    pub fn with(args: &RemoteArgs, config: Option<&std::path::Path>) -> Result<Self, ClientError> {
        let cfg =
            crate::config::Config::load(config).map_err(|e| ClientError::Config(e.to_string()))?;
        let base = match &args.hub {
            Some(h) => h.trim_end_matches('/').to_string(),
            None => default_url(&cfg),
        };
        let https = match base.split_once("://") {
            Some(("https", _)) => true,
            Some(("http", _)) => false,
            _ => {
                return Err(ClientError::Usage(format!(
                    "--hub `{base}`: give https://HOST:PORT or http://HOST:PORT"
                )));
            }
        };
        let identity = args.cert.clone().zip(args.key.clone());
        if identity.is_some() && !https {
            return Err(ClientError::Usage(format!(
                "--cert/--key are for HTTPS, and {base} is plain HTTP: give --hub https://..."
            )));
        }
        let token = token(args, &cfg, identity.is_none())?;
        let mut builder = reqwest::blocking::Client::builder().timeout(REQUEST_TIMEOUT);
        let mut tls = None;
        if https {
            let ca = args
                .ca
                .clone()
                .unwrap_or_else(|| cfg.pki_dir().join("ca.pem"));
            let config = tls::client_config(&ca, identity)?;
            builder = builder.use_preconfigured_tls(config.clone());
            tls = Some(std::sync::Arc::new(config));
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            base,
            token,
            http,
            tls,
        })
    }

    /// The hub's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `path` with an optional JSON body; the JSON answer of a success.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .map_err(|e| tls::explain(&e, &self.base, self.tls.as_ref()))?;
        let status = resp.status().as_u16();
        let value: Value = resp.json().unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        // The hub's `error`; else the answer itself (a device's refused command result).
        let message = match (value["error"].as_str(), &value) {
            (Some(e), _) => e.to_string(),
            (None, Value::Null) => "no details".to_string(),
            (None, other) => other.to_string(),
        };
        Err(match status {
            401 => ClientError::Unauthorized { message },
            403 => ClientError::Forbidden { message },
            _ => ClientError::Status { status, message },
        })
    }
}

/// The API of the hub the config describes: its listen address (loopback for an unspecified
/// one), HTTPS when `http.tls`.
fn default_url(cfg: &crate::config::Config) -> String {
    let scheme = if cfg.http.tls { "https" } else { "http" };
    let listen = match cfg.http.listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        _ => cfg.http.listen.clone(),
    };
    format!("{scheme}://{listen}")
}

/// The bearer token to send: `TANDEM_HUB_TOKEN`, else the file given (which must be
/// readable), else (when `defaults`) the config's operator token file or token file.
fn token(
    args: &RemoteArgs,
    cfg: &crate::config::Config,
    defaults: bool,
) -> Result<Option<String>, ClientError> {
    use crate::api::auth::Tokens;
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_string()));
    }
    let path = match (&args.token_file, defaults) {
        (Some(p), _) => p.clone(),
        (None, false) => return Ok(None),
        (None, true) => match [Some(cfg.operator_token_file()), cfg.bearer_token_file()]
            .into_iter()
            .flatten()
            .find(|p| p.exists())
        {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    Tokens::first_in(&path)
        .map(Some)
        .map_err(|e| ClientError::File {
            path: path.clone(),
            message: e.to_string(),
        })
}

/// The `--labels k=v` arguments of a command, in order (empty ones skipped); the error names the
/// argument that is not `k=v`.
pub fn parse_labels(labels: &[String]) -> Result<Vec<(String, String)>, String> {
    labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--labels `{l}`: expected k=v"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_tell_the_kinds_apart() {
        let status = |s| ClientError::Status {
            status: s,
            message: String::new(),
        };
        assert_eq!(status(409).exit_code(), 65);
        assert_eq!(status(503).exit_code(), 69);
        let e = ClientError::Unauthorized {
            message: "no credentials".into(),
        };
        assert_eq!(e.exit_code(), 77);
        assert!(e.to_string().contains("--cert/--key"), "{e}");
        let (code, text): (u8, String) = ClientError::Usage("x".into()).into();
        assert_eq!((code, text.as_str()), (64, "x"));
    }

    #[test]
    fn a_plain_url_takes_no_certificate() {
        let args = RemoteArgs {
            hub: Some("http://127.0.0.1:1".into()),
            cert: Some("c.pem".into()),
            key: Some("c.key".into()),
            ..Default::default()
        };
        let e = Client::with(&args, None).expect_err("refused");
        assert!(matches!(e, ClientError::Usage(_)), "{e}");
        let args = HubArgs {
            remote: RemoteArgs {
                hub: Some("127.0.0.1:1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(
            Client::new(&args)
                .expect_err("no scheme")
                .to_string()
                .contains("https://")
        );
    }
}
