//! `tandem-agent enrol`: get this device's certificate with a claim token. The key is made
//! here and written where the config's `[hub] key` says (0600), the certificate to `[hub]
//! cert`; an existing certificate is kept unless `--force`.

use super::EnrolError;
use super::client::{Enrolment, enrol};
use crate::cli::{EX_CONFIG, EX_UNAVAILABLE, EX_USAGE};
use crate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code: the hub refused (token unknown, used, expired, revoked; name taken).
pub const EX_NOPERM: u8 = 77;
/// Exit code: a file could not be written.
pub const EX_IOERR: u8 = 74;

/// `tandem-agent enrol` arguments.
#[derive(Debug, clap::Args)]
pub struct EnrolArgs {
    /// The hub's enrolment endpoint, HOST:PORT (its `enrol.listen`).
    #[arg(long)]
    pub hub: String,
    /// The claim token (`tandem-hub claim create`); or --token-file.
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the claim token (keeps it out of the process list).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The hub's CA certificate (PEM); default: the config's `hub.ca`.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The name this device proposes (the claim's prefix goes before it).
    #[arg(long)]
    pub name: String,
    /// Name the hub's certificate is checked against (default: the host of --hub).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Agent config: the key and certificate go to its `hub.key` and `hub.cert`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Replace a certificate already there.
    #[arg(long)]
    pub force: bool,
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tandem-agent: enrol: {msg}");
    ExitCode::from(code)
}

/// Runs `enrol`; prints the device name and the files written.
pub fn run(a: &EnrolArgs) -> ExitCode {
    let cfg = match Config::load(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, e),
    };
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => t.trim().to_string(),
            Err(e) => return fail(EX_CONFIG, format!("{}: {e}", f.display())),
        },
        (None, None) => return fail(EX_USAGE, "give --token or --token-file"),
    };
    let (key, cert) = (cfg.resolve(&cfg.hub.key), cfg.resolve(&cfg.hub.cert));
    if cert.exists() && !a.force {
        return fail(
            EX_USAGE,
            format!(
                "{} exists: this device has a certificate (--force replaces it)",
                cert.display()
            ),
        );
    }
    let e = Enrolment {
        hub: a.hub.clone(),
        server_name: a.server_name.clone(),
        ca: a.ca.clone().unwrap_or_else(|| cfg.resolve(&cfg.hub.ca)),
        token,
        name: a.name.clone(),
        key: key.clone(),
        cert: cert.clone(),
        timeout: Duration::from_secs(30),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EX_UNAVAILABLE, e),
    };
    match rt.block_on(enrol(&e)) {
        Ok(name) => {
            println!(
                "enrolled as {name}\n  {}\n  {}",
                cert.display(),
                key.display()
            );
            ExitCode::SUCCESS
        }
        Err(err @ EnrolError::Refused { .. }) => fail(EX_NOPERM, err),
        Err(err @ EnrolError::Io { .. }) => fail(EX_IOERR, err),
        Err(err) => fail(EX_UNAVAILABLE, err),
    }
}
