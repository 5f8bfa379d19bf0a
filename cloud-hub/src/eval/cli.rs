//! `tandem-hub eval run|list|show`: evaluation from the command line, on this machine's
//! engine and report store (stop the hub first: the stores are one process's at a time), or
//! with `--hub` on the running hub's `/v1/eval` ([`crate::client`], HTTP or HTTPS).

use super::store::{ReportStore, SledReports};
use super::{EvalRequest, Evaluator, SetKind};
use crate::client::{Client, RemoteArgs};
use crate::feedback::Split;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// `tandem-hub eval ...`.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCmd {
    /// Evaluate a model version on a labelled set; print the table (or JSON) and store it.
    Run {
        /// The model (a folder of `models.dir`).
        #[arg(long)]
        model: String,
        /// Its variant.
        #[arg(long, default_value = "edge")]
        variant: String,
        /// `shipped` (its test set) or `feedback` (the fleet's, one split).
        #[arg(long, default_value = "shipped")]
        set: String,
        /// The feedback split.
        #[arg(long, default_value = "test")]
        split: String,
        /// Items at most (0: `eval.max_items`).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// A declared shift (`blur:1.0`), repeatable; default: the standard image shifts.
        #[arg(long = "shift")]
        shifts: Vec<String>,
        /// No shifted variants.
        #[arg(long, conflicts_with = "shifts")]
        no_shifts: bool,
        /// Print the report as JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Hub config file (`models.dir`, `eval.dir`, `feedback_dir`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// The stored reports, oldest first.
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
    /// One stored report.
    Show {
        /// Its id.
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Hub config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
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

fn print_report(report: &super::report::Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
    }
}

fn from_hub<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| (69, format!("the hub's answer is not a report: {e}")))
}

type Failure = (u8, String);

fn config(path: Option<&std::path::Path>) -> Result<crate::config::Config, Failure> {
    crate::config::Config::load(path).map_err(|e| (78, e.to_string()))
}

fn reports(cfg: &crate::config::Config) -> Result<SledReports, Failure> {
    SledReports::open(&cfg.eval_dir()).map_err(|e| {
        (
            75,
            format!("{e} (a running hub holds it: give --hub URL to ask it)"),
        )
    })
}

fn execute(cmd: EvalCmd) -> Result<(), Failure> {
    match cmd {
        EvalCmd::Run {
            model,
            variant,
            set,
            split,
            limit,
            shifts,
            no_shifts,
            json,
            config: path,
            remote,
        } => {
            let set = match set.as_str() {
                "shipped" => SetKind::Shipped,
                "feedback" => SetKind::Feedback,
                other => return Err((64, format!("--set `{other}`: shipped or feedback"))),
            };
            let split: Split = split.parse().map_err(|e| (64, format!("--split: {e}")))?;
            let shifts = match (no_shifts, shifts.is_empty()) {
                (true, _) => Some(Vec::new()),
                (false, true) => None,
                (false, false) => Some(shifts),
            };
            let req = EvalRequest {
                model,
                variant,
                set,
                split: Some(split),
                limit,
                shifts,
            };
            if let Some(hub) = remote_client(&remote, path.as_deref())? {
                let body = serde_json::to_value(&req).map_err(|e| (70, e.to_string()))?;
                let v = hub.call(reqwest::Method::POST, "/v1/eval", Some(&body))?;
                print_report(&from_hub(v)?, json);
                return Ok(());
            }
            let cfg = config(path.as_deref())?;
            let feedback = match set {
                SetKind::Feedback => Some(Arc::new(
                    crate::feedback::Store::open(&cfg.feedback_dir())
                        .map(|s| s.with_config(cfg.feedback))
                        .map_err(|e| (75, e.to_string()))?,
                )),
                SetKind::Shipped => None,
            };
            let evaluator = Evaluator {
                settings: cfg.engine_settings(),
                cfg: cfg.eval.clone(),
                reports: Arc::new(reports(&cfg)?),
                feedback,
            };
            let report = evaluator
                .run(&req, Default::default())
                .map_err(|e| (65, e.to_string()))?;
            print_report(&report, json);
            Ok(())
        }
        EvalCmd::List {
            model,
            config: path,
            remote,
        } => {
            let list: Vec<super::report::ReportSummary> =
                match remote_client(&remote, path.as_deref())? {
                    Some(hub) => {
                        let v = hub.call(reqwest::Method::GET, "/v1/eval/reports", None)?;
                        let all: Vec<super::report::ReportSummary> =
                            from_hub(v["reports"].clone())?;
                        all.into_iter()
                            .filter(|r| model.as_ref().is_none_or(|m| &r.model == m))
                            .collect()
                    }
                    None => reports(&config(path.as_deref())?)?
                        .list(model.as_deref())
                        .map_err(|e| (74, e.to_string()))?,
                };
            println!("| id | model | version | variant | set | n | accuracy | macro-F1 | ECE |");
            println!("|---|---|---|---|---|---|---|---|---|");
            for r in list {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {:.4} | {:.4} | {:.4} |",
                    r.id, r.model, r.version, r.variant, r.set, r.n, r.accuracy, r.macro_f1, r.ece
                );
            }
            Ok(())
        }
        EvalCmd::Show {
            id,
            json,
            config: path,
            remote,
        } => {
            let r = match remote_client(&remote, path.as_deref())? {
                Some(hub) => from_hub(hub.call(
                    reqwest::Method::GET,
                    &format!("/v1/eval/reports/{id}"),
                    None,
                )?)?,
                None => reports(&config(path.as_deref())?)?
                    .get(&id)
                    .map_err(|e| (74, e.to_string()))?
                    .ok_or_else(|| (66, format!("no report {id}")))?,
            };
            print_report(&r, json);
            Ok(())
        }
    }
}

/// Runs the command; the exit status says how it went.
pub fn run(cmd: EvalCmd) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("tandem-hub eval: {message}");
            ExitCode::from(code)
        }
    }
}
