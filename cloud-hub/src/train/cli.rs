//! `tandem-hub train run|list|show|promote`: the loop's training turn from the command line,
//! on this machine's stores (stop the hub first: the feedback, report and rollout stores are
//! one process's at a time), or with `--hub` on the running hub's `/v1/train` (a job, polled
//! until it ends; [`crate::client`], HTTP or HTTPS).

use super::jobs::{Job, JobState};
use super::service::{Decision, TrainRequest, TrainService};
use crate::client::{Client, RemoteArgs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// `tandem-hub train ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TrainCmd {
    /// Train a candidate from the feedback's train split, gate it on the test split and the
    /// original test set, promote it per `train.promotion`; print the decision.
    Run {
        /// The model (a folder of `models.dir`).
        #[arg(long)]
        model: String,
        /// Training examples at most (0: `train.max_examples`).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
        /// Hub config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// The decisions, oldest first.
    List {
        /// Only this model's.
        #[arg(long)]
        model: Option<String>,
        /// Hub config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// One decision as JSON (checks, reasons, report ids).
    Show {
        /// Its id.
        id: String,
        /// Hub config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Sign a passed candidate into the registry and start its staged rollout.
    Promote {
        /// The decision's id.
        id: String,
        /// Hub config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

type Failure = (u8, String);

fn busy(e: impl std::fmt::Display) -> Failure {
    (
        75,
        format!("{e} (a running hub holds it: give --hub URL to ask it)"),
    )
}

/// The service on this machine's stores; the feedback store only when `feedback`.
fn service(path: Option<&std::path::Path>, feedback: bool) -> Result<TrainService, Failure> {
    let cfg = crate::config::Config::load(path).map_err(|e| (78, e.to_string()))?;
    let reports = crate::eval::store::SledReports::open(&cfg.eval_dir()).map_err(busy)?;
    let store = if feedback {
        Some(Arc::new(
            crate::feedback::Store::open(&cfg.feedback_dir())
                .map(|s| s.with_config(cfg.feedback))
                .map_err(busy)?,
        ))
    } else {
        None
    };
    let registry =
        crate::registry::Registry::open(&cfg.registry_dir()).map_err(|e| (74, e.to_string()))?;
    let rollouts =
        crate::rollout::RolloutStore::open(&cfg.registry_dir().join(".rollouts")).map_err(busy)?;
    Ok(TrainService::from_config(
        &cfg,
        Arc::new(reports),
        store,
        Arc::new(registry),
        Some(rollouts),
    ))
}

/// The running hub's client when `--hub` (or `TANDEM_HUB_URL`) names one.
fn remote_client(
    remote: &RemoteArgs,
    config: Option<&std::path::Path>,
) -> Result<Option<Client>, Failure> {
    match remote.hub {
        Some(_) => Ok(Some(Client::with(remote, config)?)),
        None => Ok(None),
    }
}

fn from_hub<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| {
        (
            69,
            format!("the hub's answer is not what was asked for: {e}"),
        )
    })
}

/// How often `train run --hub` asks how its job stands.
const POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// `POST /v1/train` queues a job; polls it until it ends; the decision it made.
fn run_on_hub(hub: &Client, req: &TrainRequest) -> Result<Decision, Failure> {
    let body = serde_json::json!({"model": req.model, "limit": req.limit});
    let mut job: Job = from_hub(hub.call(reqwest::Method::POST, "/v1/train", Some(&body))?)?;
    let path = format!("/v1/train/jobs/{}", job.id);
    while matches!(job.state, JobState::Queued | JobState::Running) {
        std::thread::sleep(POLL);
        job = from_hub(hub.call(reqwest::Method::GET, &path, None)?)?;
    }
    match (job.state, job.decision) {
        (JobState::Done, Some(id)) => {
            let path = format!("/v1/train/decisions/{id}");
            from_hub(hub.call(reqwest::Method::GET, &path, None)?)
        }
        _ => {
            let client = job.error_status.is_some_and(|s| (400..500).contains(&s));
            Err((
                if client { 65 } else { 70 },
                format!(
                    "training job {} failed: {}",
                    job.id,
                    job.error.as_deref().unwrap_or("no details")
                ),
            ))
        }
    }
}

fn line(d: &Decision) -> String {
    format!(
        "| {} | {} | {} | {} | {:?} | {} | {} |",
        d.id,
        d.candidate.model,
        d.serving_version,
        d.candidate.version,
        d.status,
        d.rollout.as_deref().unwrap_or("-"),
        if d.reasons.is_empty() {
            "-".to_string()
        } else {
            d.reasons.join("; ")
        }
    )
}

const HEADER: &str = "| id | model | serving | candidate | status | rollout | reasons |\n|---|---|---|---|---|---|---|";

fn json(d: &Decision) -> String {
    serde_json::to_string_pretty(d).unwrap_or_default()
}

fn execute(cmd: TrainCmd) -> Result<(), Failure> {
    let code = |e: super::TrainError| {
        let client = super::http::status_of(&e).is_client_error();
        (if client { 65 } else { 70 }, e.to_string())
    };
    match cmd {
        TrainCmd::Run {
            model,
            limit,
            json: as_json,
            config,
            remote,
        } => {
            let req = TrainRequest { model, limit };
            let d: Decision = match remote_client(&remote, config.as_deref())? {
                Some(hub) => run_on_hub(&hub, &req)?,
                None => service(config.as_deref(), true)?.run(&req).map_err(code)?,
            };
            if as_json {
                println!("{}", json(&d));
            } else {
                println!("{HEADER}\n{}", line(&d));
                for c in &d.checks {
                    let verdict = if c.passed { "ok" } else { "FAILED" };
                    println!(
                        "  {}: n={} serving {:.4} candidate {:.4} {verdict}",
                        c.what, c.n, c.serving, c.candidate
                    );
                }
                if let Some(p) = d.candidate.pull.as_ref().filter(|p| p.folds > 0) {
                    let scores: Vec<String> = p
                        .scores
                        .iter()
                        .map(|s| format!("{}: {:.4}", s.l2, s.held_out_accuracy))
                        .collect();
                    println!(
                        "  pull: l2 {} (held-out accuracy on {} folds: {})",
                        p.l2,
                        p.folds,
                        scores.join(", ")
                    );
                }
            }
        }
        TrainCmd::List {
            model,
            config,
            remote,
        } => {
            let all: Vec<Decision> = match remote_client(&remote, config.as_deref())? {
                Some(hub) => {
                    let v = hub.call(reqwest::Method::GET, "/v1/train/decisions", None)?;
                    let all: Vec<Decision> = from_hub(v["decisions"].clone())?;
                    all.into_iter()
                        .filter(|d| model.as_ref().is_none_or(|m| &d.candidate.model == m))
                        .collect()
                }
                None => service(config.as_deref(), false)?
                    .list(model.as_deref())
                    .map_err(code)?,
            };
            println!("{HEADER}");
            for d in all {
                println!("{}", line(&d));
            }
        }
        TrainCmd::Show { id, config, remote } => {
            let d: Decision = match remote_client(&remote, config.as_deref())? {
                Some(hub) => {
                    let path = format!("/v1/train/decisions/{id}");
                    from_hub(hub.call(reqwest::Method::GET, &path, None)?)?
                }
                None => service(config.as_deref(), false)?
                    .get(&id)
                    .map_err(code)?
                    .ok_or_else(|| (66, format!("no decision {id}")))?,
            };
            println!("{}", json(&d));
        }
        TrainCmd::Promote { id, config, remote } => {
            let d: Decision = match remote_client(&remote, config.as_deref())? {
                Some(hub) => {
                    let path = format!("/v1/train/decisions/{id}/promote");
                    from_hub(hub.call(reqwest::Method::POST, &path, None)?)?
                }
                None => service(config.as_deref(), false)?
                    .promote(&id)
                    .map_err(code)?,
            };
            println!("{HEADER}\n{}", line(&d));
        }
    }
    Ok(())
}

/// Runs the command; the exit status says how it went.
pub fn run(cmd: TrainCmd) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("tandem-hub train: {message}");
            ExitCode::from(code)
        }
    }
}
