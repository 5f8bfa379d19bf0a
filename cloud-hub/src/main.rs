//! `tandem-hub`: command line of the cloud hub.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Tandem cloud hub.
#[derive(Debug, Parser)]
#[command(name = "tandem-hub", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub.
    Run {
        /// Config file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file.
    Validate {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the default config.
    PrintDefaultConfig,
    /// Create a development PKI: CA, hub certificate, model-signing key, empty CRL.
    Init {
        /// Folder to create it in.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        #[command(flatten)]
        names: HubNameArgs,
    },
    /// The PKI itself (the hub certificate).
    Pki {
        #[command(subcommand)]
        action: PkiCmd,
    },
    /// The model registry: pack, push (validate, sign, store) and list bundles.
    Models {
        #[command(subcommand)]
        action: tandem_hub::registry::ModelsCmd,
    },
    /// Staged rollouts of a registry version to the fleet (through the running hub's API).
    Rollout {
        #[command(subcommand)]
        action: tandem_hub::rollout::RolloutCmd,
    },
    /// One-time claim tokens for enrolling new devices (through the running hub's API).
    Claim {
        #[command(subcommand)]
        action: tandem_hub::enrol::cli::ClaimCmd,
    },
    /// Manage device certificates.
    Device {
        #[command(subcommand)]
        action: DeviceCmd,
    },
    /// Manage operator certificates (HTTPS API clients with every right).
    Operator {
        #[command(subcommand)]
        action: tandem_hub::pki::operator::OperatorCmd,
    },
    /// The fleet: list devices, show one, send a command (through the running hub's API).
    Fleet {
        #[command(subcommand)]
        action: tandem_hub::fleet::cli::FleetCmd,
    },
    /// Read-only MQTT identities for dashboards (status, telemetry, events; no writes).
    Subscriber {
        #[command(subcommand)]
        action: tandem_hub::pki::subscriber::SubscriberCmd,
    },
    /// Evaluate a model version on a labelled set (reports kept per version).
    Eval {
        #[command(subcommand)]
        action: tandem_hub::eval::cli::EvalCmd,
    },
    /// Retrain a model's edge head from feedback, gate it, promote it (decisions kept).
    Train {
        #[command(subcommand)]
        action: tandem_hub::train::cli::TrainCmd,
    },
    /// Routing thresholds fitted from feedback and pushed to devices (through the running
    /// hub's API).
    Calibrate {
        #[command(subcommand)]
        action: tandem_hub::calibrate::cli::CalibrateCmd,
    },
    /// The feedback the fleet delivered (hard examples, corrections).
    Feedback {
        #[command(subcommand)]
        action: FeedbackCmd,
    },
}

#[derive(Debug, Subcommand)]
enum FeedbackCmd {
    /// Write the stored examples as a dataset: DIR/dataset.jsonl, DIR/inputs/, DIR/events.jsonl.
    Export {
        /// Output folder.
        dir: PathBuf,
        /// Format (jsonl).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Hub config file naming `feedback_dir` (default: the built-in default).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn feedback_command(cmd: FeedbackCmd) -> ExitCode {
    let FeedbackCmd::Export {
        dir,
        format,
        config,
    } = cmd;
    let format: tandem_hub::feedback::ExportFormat = match format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tandem-hub: --format: {e}");
            return ExitCode::from(64);
        }
    };
    let cfg = match tandem_hub::config::Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tandem-hub: {e}");
            return ExitCode::from(78);
        }
    };
    let store_dir = cfg.feedback_dir();
    if !store_dir.join("index").exists() {
        eprintln!(
            "tandem-hub: no feedback store at {} (feedback_dir): nothing was delivered yet, or the config names another folder",
            store_dir.display()
        );
        return ExitCode::from(66);
    }
    let exported =
        tandem_hub::feedback::Store::open(&store_dir).and_then(|s| s.export(&dir, format));
    match exported {
        Ok(sum) => {
            println!(
                "exported {} examples ({} corrections), {} events/telemetry, {} rejected to {}",
                sum.examples,
                sum.corrections,
                sum.events,
                sum.rejected,
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem-hub: {e}");
            ExitCode::from(74)
        }
    }
}

/// The names and addresses a hub certificate is issued for.
#[derive(Debug, clap::Args)]
struct HubNameArgs {
    /// A DNS name devices reach the hub by (repeatable); `localhost` is always included.
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// An IP address devices reach the hub at (repeatable); `127.0.0.1` is always included.
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<std::net::IpAddr>,
}

impl HubNameArgs {
    fn hub_names(self) -> tandem_hub::pki::HubNames {
        tandem_hub::pki::HubNames {
            dns: self.names,
            ips: self.ips,
        }
    }
}

#[derive(Debug, Subcommand)]
enum PkiCmd {
    /// Issue a new hub certificate (new key, same CA) for these names; restart the hub after.
    ReissueHub {
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        #[command(flatten)]
        names: HubNameArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// Issue a certificate for a device (name: lowercase letters, digits and `-`).
    Add {
        /// Device name; becomes its identity (certificate CN).
        name: String,
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Revoke a device's certificate (the hub refuses it at the handshake).
    Revoke {
        /// Device name.
        name: String,
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
    },
    /// List issued device certificates.
    List {
        /// PKI folder.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
    },
}

/// The names a hub certificate for `names` carries, for the operator.
fn hub_names(names: &tandem_hub::pki::HubNames) -> Result<String, tandem_hub::pki::PkiError> {
    let sans: Vec<String> = names
        .sans()?
        .iter()
        .map(|s| match s {
            rcgen::SanType::DnsName(n) => n.as_str().to_string(),
            rcgen::SanType::IpAddress(ip) => ip.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    Ok(sans.join(", "))
}

fn pki_command(cmd: Command) -> Result<(), tandem_hub::pki::PkiError> {
    use tandem_hub::pki::Pki;
    match cmd {
        Command::Init { dir, names } => {
            let names = names.hub_names();
            Pki::init_for(&dir, &names)?;
            let token = dir.join(tandem_hub::api::auth::OPERATOR_TOKEN_FILE);
            tandem_hub::api::auth::create_token_file(&token).map_err(|e| {
                tandem_hub::pki::PkiError::Io {
                    path: token.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
            println!(
                "created a PKI in {}: ca.pem, hub.pem/.key ({}), signing.key/.pub, crl.pem, operator.token",
                dir.display(),
                hub_names(&names)?
            );
        }
        Command::Pki {
            action: PkiCmd::ReissueHub { dir, names },
        } => {
            let names = names.hub_names();
            let serial = Pki::open(&dir)?.reissue_hub(&names)?;
            println!(
                "hub certificate re-issued (serial {serial}, {}, same CA): restart the hub to serve it",
                hub_names(&names)?
            );
        }
        Command::Device {
            action: DeviceCmd::Add { name, dir, days },
        } => {
            let pki = Pki::open(&dir)?;
            let rec = pki.add_device(&name, days)?;
            let (cert, key) = pki.device_files(&name);
            println!(
                "device {name}: serial {}, valid until {}
  {}
  {}",
                rec.serial,
                rec.not_after,
                cert.display(),
                key.display()
            );
        }
        Command::Device {
            action: DeviceCmd::Revoke { name, dir },
        } => {
            let serials = Pki::open(&dir)?.revoke_device(&name)?;
            println!("device {name}: revoked serial(s) {serials:?}; crl.pem rewritten");
        }
        Command::Device {
            action: DeviceCmd::List { dir },
        } => {
            tandem_hub::pki::print_records(&Pki::open(&dir)?.ledger()?.devices);
        }
        _ => {}
    }
    Ok(())
}

/// The exit of a PKI command: 64 for a bad argument, 74 for IO, 65 for the rest.
fn pki_exit(result: Result<(), tandem_hub::pki::PkiError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-hub: {e}");
            ExitCode::from(match e {
                tandem_hub::pki::PkiError::BadName(_)
                | tandem_hub::pki::PkiError::BadHubName(_)
                | tandem_hub::pki::PkiError::BadDays(_) => 64,
                tandem_hub::pki::PkiError::Io { .. } => 74,
                _ => 65,
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        cmd @ (Command::Init { .. } | Command::Device { .. } | Command::Pki { .. }) => {
            pki_exit(pki_command(cmd))
        }
        Command::Operator { action } => pki_exit(tandem_hub::pki::operator::command(action)),
        Command::Subscriber { action } => pki_exit(tandem_hub::pki::subscriber::command(action)),
        Command::Feedback { action } => feedback_command(action),
        Command::Models { action } => tandem_hub::registry::cli::run(action),
        Command::Eval { action } => tandem_hub::eval::cli::run(action),
        Command::Train { action } => tandem_hub::train::cli::run(action),
        Command::Calibrate { action } => tandem_hub::calibrate::cli::run(action),
        Command::Rollout { action } => tandem_hub::rollout::cli::run(action),
        Command::Claim { action } => tandem_hub::enrol::cli::run(action),
        Command::Fleet { action } => tandem_hub::fleet::cli::run(action),
        Command::PrintDefaultConfig => {
            print!("{}", tandem_hub::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Validate { config } => match tandem_hub::config::Config::load(Some(&config)) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tandem-hub: {e}");
                ExitCode::from(78)
            }
        },
        Command::Run { config } => {
            let cfg = match tandem_hub::config::Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tandem-hub: {e}");
                    return ExitCode::from(78);
                }
            };
            tandem_engine::daemon::logging::init(&cfg.log_filter, cfg.log.format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tandem-hub: cannot start the async runtime: {e}");
                    return ExitCode::from(70);
                }
            };
            match rt.block_on(tandem_hub::app::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tandem-hub: {e}");
                    ExitCode::from(69)
                }
            }
        }
    }
}
