//! `tandem-hub models push|list|pack` (`list --hub`: the running hub's, [`crate::client`]).

use super::pack::{PackOptions, pack};
use super::store::{Pushed, Registry, RegistryError, load_signer};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `tandem-hub models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// Validate a bundle folder, sign it with the PKI's signing.key and store it in the registry.
    Push {
        /// The bundle folder (bundle.json and the files it lists; `models pack` makes one).
        bundle_dir: PathBuf,
        /// Hub config file naming `registry_dir` and `pki_dir` (default: the built-in default).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List the stored model versions (with --hub: the running hub's registry).
    List {
        /// Hub config file naming `registry_dir` (default: the built-in default).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: crate::client::RemoteArgs,
    },
    /// Make an unsigned bundle from a model folder (`models/<name>`): the device variant's
    /// files and self-tests from testdata/expected.json.
    Pack {
        /// The model folder (manifest.json, testdata/expected.json).
        model_dir: PathBuf,
        /// The bundle folder to create.
        out: PathBuf,
        /// The bundle's version (default: the manifest's).
        #[arg(long)]
        version: Option<String>,
        /// The variant devices run.
        #[arg(long, default_value = "edge")]
        variant: String,
        /// Score tolerance of the self-tests.
        #[arg(long, default_value_t = tandem_shared::bundle::DEFAULT_TOLERANCE)]
        tolerance: f64,
        /// Where the self-tests' expected answers come from: `engine` (run them through the
        /// Tandem engine, the pipeline devices run; needs ONNX Runtime) or `testdata` (the
        /// scores in testdata/expected.json as they are).
        #[arg(long, default_value = "engine")]
        expected: String,
        /// Hub config whose runtime section (ONNX Runtime library, providers) records the answers.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Runs a `models` command; prints the outcome or the error, returns the exit code.
pub fn run(cmd: ModelsCmd) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("tandem-hub: {message}");
            ExitCode::from(code)
        }
    }
}

/// The running hub's registry entries (`GET /v1/models`), every version of every model.
fn remote_entries(
    remote: &crate::client::RemoteArgs,
    config: Option<&Path>,
) -> Result<Vec<super::store::Entry>, (u8, String)> {
    let v = crate::client::Client::with(remote, config)?.call(
        reqwest::Method::GET,
        "/v1/models",
        None,
    )?;
    let mut entries = Vec::new();
    for m in v["models"].as_array().into_iter().flatten() {
        let versions: Vec<super::store::Entry> = serde_json::from_value(m["versions"].clone())
            .map_err(|e| (69, format!("the hub's answer is not a model list: {e}")))?;
        entries.extend(versions);
    }
    Ok(entries)
}

fn load_config(path: Option<&Path>) -> Result<crate::config::Config, (u8, String)> {
    crate::config::Config::load(path).map_err(|e| (78, e.to_string()))
}

fn failed(e: RegistryError) -> (u8, String) {
    let code = match &e {
        RegistryError::Bundle(_) | RegistryError::Exists { .. } | RegistryError::Corrupt { .. } => {
            65
        }
        RegistryError::Key { .. } => 78,
        RegistryError::InvalidName { .. } => 64,
        RegistryError::Engine(_) => 69,
        RegistryError::Folder(_) | RegistryError::Io { .. } => 74,
    };
    (code, e.to_string())
}

fn execute(cmd: ModelsCmd) -> Result<(), (u8, String)> {
    match cmd {
        ModelsCmd::Push { bundle_dir, config } => {
            let cfg = load_config(config.as_deref())?;
            let signer = load_signer(&cfg.pki_dir()).map_err(failed)?;
            let registry = Registry::open(&cfg.registry_dir()).map_err(failed)?;
            match registry.push(&bundle_dir, &signer).map_err(failed)? {
                Pushed::Stored(e) => println!(
                    "stored {} {}: {} files, {} bytes, digest {}, signed by key {}",
                    e.model, e.version, e.files, e.bytes, e.digest, e.key_id
                ),
                Pushed::Unchanged(e) => println!(
                    "{} {} is already stored with the same content (digest {})",
                    e.model, e.version, e.digest
                ),
            }
        }
        ModelsCmd::List {
            config,
            json,
            remote,
        } => {
            let cfg = load_config(config.as_deref())?;
            let entries = match remote.hub {
                Some(_) => remote_entries(&remote, config.as_deref())?,
                None => Registry::open(&cfg.registry_dir())
                    .and_then(|r| r.list())
                    .map_err(failed)?,
            };
            if json {
                let text =
                    serde_json::to_string_pretty(&entries).map_err(|e| (70, e.to_string()))?;
                println!("{text}");
            } else if entries.is_empty() {
                match &remote.hub {
                    Some(hub) => println!("the registry of the hub at {hub} is empty"),
                    None => println!("the registry at {} is empty", cfg.registry_dir().display()),
                }
            } else {
                for e in entries {
                    println!(
                        "{:24} {:10} {:>10} bytes  {}  {}",
                        e.model,
                        e.version,
                        e.bytes,
                        &e.digest[..e.digest.len().min(16)],
                        e.pushed_at
                    );
                }
            }
        }
        ModelsCmd::Pack {
            model_dir,
            out,
            version,
            variant,
            tolerance,
            expected,
            config,
        } => {
            let role = variant
                .parse()
                .map_err(|e: String| (64, format!("--variant: {e}")))?;
            let record = match expected.as_str() {
                "engine" => Some(load_config(config.as_deref())?.engine_settings()),
                "testdata" => None,
                other => {
                    return Err((
                        64,
                        format!("--expected: `{other}` (expected engine or testdata)"),
                    ));
                }
            };
            let opts = PackOptions {
                role,
                version,
                tolerance,
                record,
                ..PackOptions::default()
            };
            let doc = pack(&model_dir, &out, &opts).map_err(failed)?;
            println!(
                "packed {} {} into {} ({} self-tests); sign and store it with `tandem-hub models push {}`",
                doc["manifest"]["name"].as_str().unwrap_or("?"),
                doc["manifest"]["version"].as_str().unwrap_or("?"),
                out.display(),
                doc["selftests"].as_array().map_or(0, Vec::len),
                out.display()
            );
        }
    }
    Ok(())
}
