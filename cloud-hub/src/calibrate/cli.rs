//! `tandem-hub calibrate run|list|show|status|pin|unpin`: a client of the running hub's
//! `/v1/calibrations` and `/v1/thresholds` (the hub alone holds the feedback and calibration
//! stores).

use crate::client::{Client, HubArgs};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;

/// `tandem-hub calibrate ...`.
#[derive(Debug, clap::Subcommand)]
pub enum CalibrateCmd {
    /// Fit a model's routing threshold on the calibration split, report it on the test split,
    /// and (unless --dry-run) push it to the devices as their desired threshold.
    Run {
        /// The model.
        #[arg(long)]
        model: String,
        /// Only devices whose `group` label is this (the same as `--labels group=G`).
        #[arg(long)]
        group: Option<String>,
        /// Only devices with all these labels, `k=v[,k=v]`.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Keep this share of cloud-only accuracy with the least offload (default:
        /// `calibrate.keep_accuracy_factor`, 0.995).
        #[arg(long, conflicts_with = "offload_budget")]
        keep_accuracy: Option<f64>,
        /// Instead: the best accuracy offloading at most this share of inputs.
        #[arg(long)]
        offload_budget: Option<f64>,
        /// `max_prob` or `margin` (default: the manifest's signal).
        #[arg(long)]
        signal: Option<String>,
        /// Fit and report only; devices keep what they use.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// The kept calibrations, oldest first.
    List {
        /// Only this model's.
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// One calibration with its reports, as JSON.
    Show {
        /// Its id.
        id: String,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Desired thresholds, and what each device should use and reports.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Pin a value for a group: calibration does not override it until `unpin`.
    Pin {
        /// The model.
        #[arg(long)]
        model: String,
        /// The threshold.
        #[arg(long)]
        threshold: f32,
        /// Only devices whose `group` label is this.
        #[arg(long)]
        group: Option<String>,
        /// Only devices with all these labels, `k=v[,k=v]`.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Remove a pin: calibration decides again.
    Unpin {
        /// The model.
        #[arg(long)]
        model: String,
        /// The group the pin was for.
        #[arg(long)]
        group: Option<String>,
        /// The labels the pin was for.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[command(flatten)]
        hub: HubArgs,
    },
}

type Failure = (u8, String);

fn selector(labels: &[String], group: Option<String>) -> Result<BTreeMap<String, String>, Failure> {
    let mut out: BTreeMap<String, String> = crate::client::parse_labels(labels)
        .map_err(|e| (64, e))?
        .into_iter()
        .collect();
    if let Some(g) = group {
        out.insert("group".into(), g);
    }
    Ok(out)
}

fn figures(f: &Value) -> String {
    format!(
        "accuracy {:.4} (cloud-only {:.4}, ratio {:.4}), offload {:.3}",
        f["accuracy"].as_f64().unwrap_or(f64::NAN),
        f["cloud_accuracy"].as_f64().unwrap_or(f64::NAN),
        f["accuracy_ratio"].as_f64().unwrap_or(f64::NAN),
        f["offload"].as_f64().unwrap_or(f64::NAN),
    )
}

/// A calibration as a few lines a person reads.
fn summary(c: &Value) -> String {
    let mut out = format!(
        "{} {} v{} {} -> threshold {:.4} ({} {}){}\n",
        c["id"].as_str().unwrap_or("?"),
        c["model"].as_str().unwrap_or("?"),
        c["version"].as_str().unwrap_or("?"),
        serde_json::to_string(&c["labels"]).unwrap_or_default(),
        c["threshold"].as_f64().unwrap_or(f64::NAN),
        c["objective"]["kind"].as_str().unwrap_or("?"),
        c["objective"]
            .get("factor")
            .or(c["objective"].get("budget"))
            .map(Value::to_string)
            .unwrap_or_default(),
        if c["applied"] == true {
            ", pushed to the devices"
        } else {
            ", not applied"
        },
    );
    for part in ["fit", "test"] {
        let r = &c[part];
        let n = &r["counts"];
        out.push_str(&format!(
            "  {part:4} on {} split: {} samples ({} shadow, {} hard; {} corrected, {} teacher): {}\n",
            r["split"].as_str().unwrap_or("?"),
            n["samples"],
            n["shadow"],
            n["hard"],
            n["corrections"],
            n["teacher"],
            figures(&r["at_fitted"]),
        ));
        if r["at_manifest"].is_object() {
            out.push_str(&format!(
                "       at the manifest threshold {}: {}\n",
                c["manifest_threshold"],
                figures(&r["at_manifest"])
            ));
        }
    }
    out
}

/// Runs a `calibrate` command; prints the outcome or the error, returns the exit code.
pub fn run(cmd: CalibrateCmd) -> ExitCode {
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("tandem-hub: {message}");
            ExitCode::from(code)
        }
    }
}

fn execute(cmd: CalibrateCmd) -> Result<(), Failure> {
    match cmd {
        CalibrateCmd::Run {
            model,
            group,
            labels,
            keep_accuracy,
            offload_budget,
            signal,
            dry_run,
            json,
            hub,
        } => {
            let objective = match (keep_accuracy, offload_budget) {
                (_, Some(b)) => json!({"kind": "offload_budget", "budget": b}),
                (Some(f), None) => json!({"kind": "keep_accuracy", "factor": f}),
                (None, None) => Value::Null,
            };
            let body = json!({
                "model": model,
                "labels": selector(&labels, group)?,
                "objective": objective,
                "signal": signal,
                "apply": !dry_run,
            });
            let c = Client::new(&hub)?.call(Method::POST, "/v1/calibrations", Some(&body))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
            } else {
                print!("{}", summary(&c));
            }
        }
        CalibrateCmd::List { model, hub } => {
            let path = match model {
                Some(m) => format!("/v1/calibrations?model={m}"),
                None => "/v1/calibrations".into(),
            };
            let all = Client::new(&hub)?.call(Method::GET, &path, None)?;
            let all = all["calibrations"].as_array().cloned().unwrap_or_default();
            if all.is_empty() {
                println!("no calibrations");
            }
            for c in &all {
                print!("{}", summary(c));
            }
        }
        CalibrateCmd::Show { id, hub } => {
            let c =
                Client::new(&hub)?.call(Method::GET, &format!("/v1/calibrations/{id}"), None)?;
            println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
        }
        CalibrateCmd::Status { json, hub } => {
            let s = Client::new(&hub)?.call(Method::GET, "/v1/thresholds", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                return Ok(());
            }
            for d in s["desired"].as_array().into_iter().flatten() {
                println!(
                    "desired {} {} = {} ({})",
                    d["model"].as_str().unwrap_or("?"),
                    serde_json::to_string(&d["labels"]).unwrap_or_default(),
                    d["threshold"],
                    d["source"].as_str().unwrap_or("?"),
                );
            }
            for d in s["devices"].as_array().into_iter().flatten() {
                println!(
                    "device {} {}: reports {} ({}){}",
                    d["device"].as_str().unwrap_or("?"),
                    d["model"].as_str().unwrap_or("?"),
                    d["reported"]["threshold"],
                    d["reported"]["source"].as_str().unwrap_or("?"),
                    if d["in_sync"] == true {
                        ""
                    } else {
                        ", being brought to the desired value"
                    },
                );
            }
        }
        CalibrateCmd::Pin {
            model,
            threshold,
            group,
            labels,
            hub,
        } => {
            let body = json!({"model": model, "labels": selector(&labels, group)?, "threshold": threshold});
            let d = Client::new(&hub)?.call(Method::POST, "/v1/thresholds/pin", Some(&body))?;
            println!(
                "pinned {} {} = {}",
                d["model"].as_str().unwrap_or("?"),
                serde_json::to_string(&d["labels"]).unwrap_or_default(),
                d["threshold"]
            );
        }
        CalibrateCmd::Unpin {
            model,
            group,
            labels,
            hub,
        } => {
            let body = json!({"model": model, "labels": selector(&labels, group)?});
            Client::new(&hub)?.call(Method::POST, "/v1/thresholds/unpin", Some(&body))?;
            println!("unpinned {model}");
        }
    }
    Ok(())
}
