//! `tandem-hub claim create|list|revoke`: a client of the running hub's `/v1/claims` API (the
//! hub alone opens the claim store).

use crate::client::{Client, HubArgs};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::ExitCode;

/// `tandem-hub claim ...`.
#[derive(Debug, Subcommand)]
pub enum ClaimCmd {
    /// Make a one-time claim token for a new device (printed once; the hub keeps its digest).
    Create {
        /// Labels recorded with the enrolled device, `k=v` (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Put before the name the device proposes (e.g. `lab-`).
        #[arg(long, default_value = "")]
        name_prefix: String,
        /// Validity: a number with `s`, `m`, `h` or `d` (at most 30 days).
        #[arg(long, default_value = "24h")]
        expires: String,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Every claim and its state.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Revoke a claim (by the id `list` shows): its token is refused from now on.
    Revoke {
        /// Claim id.
        id: String,
        #[command(flatten)]
        hub: HubArgs,
    },
}

/// `30s`, `15m`, `24h`, `7d` in seconds.
pub fn parse_duration_s(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit (s, m, h, d)"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    Ok(n.saturating_mul(mul))
}

/// Runs a `claim` command; prints the outcome or the error, returns the exit code.
pub fn run(cmd: ClaimCmd) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("tandem-hub: {message}");
            ExitCode::from(code)
        }
    }
}

fn line(c: &Value, state: &str) -> String {
    format!(
        "{}  prefix `{}`  labels {}  expires_ms {}  {state}",
        c["id"].as_str().unwrap_or("?"),
        c["name_prefix"].as_str().unwrap_or(""),
        c["labels"],
        c["expires_ms"]
    )
}

fn execute(cmd: ClaimCmd) -> Result<(), (u8, String)> {
    match cmd {
        ClaimCmd::Create {
            labels,
            name_prefix,
            expires,
            hub,
        } => {
            let expires_s =
                parse_duration_s(&expires).map_err(|e| (64, format!("--expires {e}")))?;
            let map: serde_json::Map<String, Value> = crate::client::parse_labels(&labels)
                .map_err(|e| (64, e))?
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let body = json!({"labels": map, "name_prefix": name_prefix, "expires_s": expires_s});
            let r = Client::new(&hub)?.call(Method::POST, "/v1/claims", Some(&body))?;
            eprintln!("claim {}", line(&r["claim"], "unused"));
            println!("{}", r["token"].as_str().unwrap_or_default());
        }
        ClaimCmd::List { json, hub } => {
            let r = Client::new(&hub)?.call(Method::GET, "/v1/claims", None)?;
            let all = r["claims"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else if all.is_empty() {
                println!("no claims");
            } else {
                for c in &all {
                    println!("{}", line(&c["claim"], c["state"].as_str().unwrap_or("?")));
                }
            }
        }
        ClaimCmd::Revoke { id, hub } => {
            let r =
                Client::new(&hub)?.call(Method::POST, &format!("/v1/claims/{id}/revoke"), None)?;
            println!("revoked claim {}", r["id"].as_str().unwrap_or(&id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_only() {
        assert_eq!(parse_duration_s("24h"), Ok(86_400));
        assert_eq!(parse_duration_s("90s"), Ok(90));
        assert_eq!(parse_duration_s("7d"), Ok(604_800));
        assert!(parse_duration_s("24").is_err());
        assert!(parse_duration_s("h").is_err());
        assert!(parse_duration_s("3w").is_err());
    }
}
