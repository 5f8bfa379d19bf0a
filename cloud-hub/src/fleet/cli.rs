//! `tandem-hub fleet list|show|cmd`: the fleet from the command line, a client of the running
//! hub's `/v1/fleet` routes ([`crate::client`]; the hub alone opens the fleet database).

use crate::client::{Client, ClientError, HubArgs};
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;

/// `tandem-hub fleet ...`.
#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Every device: online state, last seen, agent version, models, labels.
    List {
        /// Only devices with all these labels, `k=v[,k=v]`.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Everything the hub knows about one device (JSON: last status and telemetry, labels).
    Show {
        /// Device name.
        device: String,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Send a command to a device and wait for its result (docs/mqtt.md, "Commands").
    Cmd {
        /// Device name.
        device: String,
        /// Command name (`telemetry_now`, `set_threshold`, `set_policy`, ...).
        name: String,
        /// Its arguments, a JSON object (e.g. `{"model":"m","threshold":0.7}`).
        #[arg(long, default_value = "{}")]
        args: String,
        /// Longest wait for the device's result, in milliseconds (1 to 60000; default: the
        /// hub's mqtt.command_timeout_ms).
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[command(flatten)]
        hub: HubArgs,
    },
}

/// Runs a `fleet` command; prints the outcome or the error, returns the exit code.
pub fn run(cmd: FleetCmd) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-hub: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// One line of `fleet list`.
fn line(d: &Value) -> String {
    let models: Vec<String> = d["models"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|v| {
                    format!(
                        "{}@{}/{}",
                        v["name"].as_str().unwrap_or("?"),
                        v["version"].as_str().unwrap_or("?"),
                        v["ep"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let labels: Vec<String> = d["labels"]
        .as_object()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{:24} {:7} agent {:8} last_seen_ms {:14} models [{}] labels [{}]",
        d["device"].as_str().unwrap_or("?"),
        if d["online"] == true {
            "online"
        } else {
            "offline"
        },
        d["agent_version"].as_str().unwrap_or("?"),
        d["last_seen_ms"],
        models.join(" "),
        labels.join(","),
    )
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn execute(cmd: FleetCmd) -> Result<(), ClientError> {
    match cmd {
        FleetCmd::List { labels, json, hub } => {
            let want = crate::client::parse_labels(&labels).map_err(ClientError::Usage)?;
            let r = Client::new(&hub)?.call(Method::GET, "/v1/fleet", None)?;
            let devices: Vec<Value> = r["devices"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|d| want.iter().all(|(k, v)| d["labels"][k] == v.as_str()))
                .collect();
            if json {
                println!("{}", pretty(&Value::Array(devices)));
            } else if devices.is_empty() {
                println!("no devices");
            } else {
                for d in &devices {
                    println!("{}", line(d));
                }
            }
        }
        FleetCmd::Show { device, hub } => {
            let r = Client::new(&hub)?.call(Method::GET, &format!("/v1/fleet/{device}"), None)?;
            println!("{}", pretty(&r));
        }
        FleetCmd::Cmd {
            device,
            name,
            args,
            timeout_ms,
            hub,
        } => {
            let body: Value = serde_json::from_str(&args)
                .map_err(|e| ClientError::Usage(format!("--args is not JSON: {e}")))?;
            if !body.is_object() {
                return Err(ClientError::Usage(
                    "--args must be a JSON object (`{}` for none)".into(),
                ));
            }
            let query = timeout_ms.map_or_else(String::new, |t| format!("?timeout_ms={t}"));
            let r = Client::new(&hub)?.call(
                Method::POST,
                &format!("/v1/fleet/{device}/cmd/{name}{query}"),
                Some(&body),
            )?;
            println!("{}", pretty(&r));
        }
    }
    Ok(())
}
