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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_filter));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
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
