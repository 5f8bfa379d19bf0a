//! `tandem-agent`: parse the command line and hand over to [`tandem_agent::cli`].

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match tandem_agent::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(tandem_agent::cli::EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tandem_agent::cli::main(cli)
}
