//! `tandem-agent`: parse the command line and hand over to [`tandem_agent::cli`].

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Everything the agent creates is its own: queued inputs, keys, models. Files other
    // libraries create (sled's snapshots) get 0600/0700 from this mask, not from a chmod later.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
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
