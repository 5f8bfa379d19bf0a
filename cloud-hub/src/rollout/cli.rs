//! `tandem-hub rollout start|status|pause|resume|abort`: a client of the running hub's
//! `/v1/rollouts` API (the hub alone opens the rollout database), through [`crate::client`].

use super::plan::Spec;
use clap::Subcommand;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::ExitCode;

pub use crate::client::{Client, HubArgs};

/// `tandem-hub rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Start rolling a registry version out: the canary share first, then the later stages
    /// (with --rollback: an older version back to the devices serving a newer one).
    Start {
        /// Model.
        #[arg(long)]
        model: String,
        /// Version (in the registry).
        #[arg(long)]
        version: String,
        /// Percentage of the targeted devices in the canary stage.
        #[arg(long)]
        canary: u8,
        /// Only devices whose `group` label is this (the same as `--labels group=G`).
        #[arg(long)]
        group: Option<String>,
        /// Only devices with all these labels, `k=v[,k=v]` (hub-assigned by their claim over
        /// their own).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Later stages, percentages ending with 100 (e.g. `25,100`).
        #[arg(long, value_delimiter = ',', default_value = "100")]
        stages: Vec<u8>,
        /// Share of a stage's devices that must run the version for it to succeed.
        #[arg(long, default_value_t = 0.9)]
        success_share: f64,
        /// Share of a stage's devices whose failure halts the rollout.
        #[arg(long, default_value_t = 0.2)]
        failure_share: f64,
        /// Longest a stage may take, in seconds.
        #[arg(long, default_value_t = 1800)]
        stage_timeout_s: u64,
        /// Put this older version back: only devices serving a newer version are targeted,
        /// and they are ordered to accept the older one.
        #[arg(long)]
        rollback: bool,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// One rollout, or all of them.
    Status {
        /// Rollout id (all when absent).
        id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Stop commanding devices; `resume` carries on.
    Pause {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Resume a paused rollout.
    Resume {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Stop a rollout for good (devices keep what they run).
    Abort {
        /// Rollout id.
        id: String,
        #[command(flatten)]
        hub: HubArgs,
    },
}

fn summary(r: &Value) -> String {
    let targets = r["targets"]
        .as_object()
        .map(|t| t.values().collect::<Vec<_>>())
        .unwrap_or_default();
    let count = |o: &str| {
        targets
            .iter()
            .filter(|t| t["outcome"]["state"] == o)
            .count()
    };
    let phase = match r["phase"]["state"].as_str() {
        Some("running") | Some("paused") => format!(
            "{} (stage {})",
            r["phase"]["state"].as_str().unwrap_or("?"),
            r["phase"]["stage"]
        ),
        Some("halted") => format!("halted: {}", r["phase"]["reason"].as_str().unwrap_or("")),
        Some(other) => other.to_string(),
        None => "?".into(),
    };
    let rollback = if r["spec"]["rollback"] == true {
        " (rollback)"
    } else {
        ""
    };
    format!(
        "{:32} {} {}{rollback} -> {}: {} devices, {} active, {} failed",
        r["id"].as_str().unwrap_or("?"),
        r["spec"]["model"].as_str().unwrap_or("?"),
        r["spec"]["version"].as_str().unwrap_or("?"),
        phase,
        targets.len(),
        count("active"),
        count("failed"),
    )
}

/// Runs a `rollout` command; prints the outcome or the error, returns the exit code.
pub fn run(cmd: RolloutCmd) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("tandem-hub: {message}");
            ExitCode::from(code)
        }
    }
}

fn execute(cmd: RolloutCmd) -> Result<(), (u8, String)> {
    use reqwest::Method;
    match cmd {
        RolloutCmd::Start {
            model,
            version,
            canary,
            group,
            labels,
            stages,
            success_share,
            failure_share,
            stage_timeout_s,
            rollback,
            hub,
        } => {
            let mut selector: BTreeMap<String, String> = crate::client::parse_labels(&labels)
                .map_err(|e| (64, e))?
                .into_iter()
                .collect();
            if let Some(g) = group {
                selector.insert("group".to_string(), g);
            }
            let spec = Spec {
                model,
                version,
                canary_pct: canary,
                stages_pct: stages,
                labels: selector,
                success_share,
                failure_share,
                stage_timeout_ms: stage_timeout_s.saturating_mul(1000),
                resend_after_ms: 5 * 60 * 1000,
                rollback,
            };
            let body = serde_json::to_value(&spec).map_err(|e| (70, e.to_string()))?;
            let r = Client::new(&hub)?.call(Method::POST, "/v1/rollouts", Some(&body))?;
            println!("started {}", summary(&r));
        }
        RolloutCmd::Status { id, json, hub } => {
            let c = Client::new(&hub)?;
            let all = match id {
                Some(id) => vec![c.call(Method::GET, &format!("/v1/rollouts/{id}"), None)?],
                None => c.call(Method::GET, "/v1/rollouts", None)?["rollouts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else if all.is_empty() {
                println!("no rollouts");
            } else {
                for r in &all {
                    println!("{}", summary(r));
                }
            }
        }
        RolloutCmd::Pause { id, hub } => act(&hub, &id, "pause")?,
        RolloutCmd::Resume { id, hub } => act(&hub, &id, "resume")?,
        RolloutCmd::Abort { id, hub } => act(&hub, &id, "abort")?,
    }
    Ok(())
}

fn act(hub: &HubArgs, id: &str, action: &str) -> Result<(), (u8, String)> {
    let r = Client::new(hub)?.call(
        reqwest::Method::POST,
        &format!("/v1/rollouts/{id}/{action}"),
        None,
    )?;
    println!("{action}: {}", summary(&r));
    Ok(())
}
