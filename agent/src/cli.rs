//! The command line: `run`, `infer`, `models`, `validate`, `print-default-config`, `enrol`.
//!
//! Exit codes (sysexits): 0 ok, 64 usage, 65 bad input data, 66 input file missing,
//! 69 runtime or model unavailable, 70 internal error, 78 bad configuration.

use crate::app;
use crate::config::{Config, DEFAULT_CONFIG};
use crate::hybrid::{Answer, RouteError};
use crate::inference::model;
use crate::inference::{InferenceError, Input};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use tandem_shared::manifest::{Preprocess, VariantRole};

/// Exit code: usage error.
pub const EX_USAGE: u8 = 64;
/// Exit code: bad input data.
pub const EX_DATAERR: u8 = 65;
/// Exit code: input file missing.
pub const EX_NOINPUT: u8 = 66;
/// Exit code: runtime or model unavailable.
pub const EX_UNAVAILABLE: u8 = 69;
/// Exit code: internal error.
pub const EX_SOFTWARE: u8 = 70;
/// Exit code: bad configuration.
pub const EX_CONFIG: u8 = 78;

/// Tandem edge agent.
#[derive(Debug, Parser)]
#[command(name = "tandem-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (local API on loopback).
    Run {
        /// Config file (TOML); defaults apply when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Classify images (paths) or texts with one model and print the answers.
    Infer {
        /// Model name.
        #[arg(long, short)]
        model: String,
        /// One JSON object per input, per line.
        #[arg(long)]
        json: bool,
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override the variant (edge or cloud).
        #[arg(long)]
        variant: Option<String>,
        /// Override the execution providers, comma-separated, in order (e.g. `cuda,cpu`).
        #[arg(long)]
        ep: Option<String>,
        /// Image paths (image models) or texts (text models).
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// List the models in the models folder, their variants and files.
    Models {
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Check a config file and report every problem.
    Validate {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the default config, with a comment on every key.
    PrintDefaultConfig,
    /// Get this device's certificate from the hub with a claim token (the key is made here).
    Enrol(crate::enrol::cli::EnrolArgs),
    /// Append records to a queue until killed, printing each accepted seq (crash tests).
    #[command(hide = true)]
    QueueStress(crate::queue::stress::StressArgs),
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tandem-agent: {msg}");
    ExitCode::from(code)
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.map(PathBuf::as_path)).map_err(|e| fail(EX_CONFIG, e))
}

/// Runs a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Enrol(args) => crate::enrol::cli::run(&args),
        Command::QueueStress(args) => match crate::queue::stress::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EX_SOFTWARE, e),
        },
        Command::Validate { config } => match Config::load(Some(&config)) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(EX_CONFIG, e),
        },
        Command::Models { config, json } => {
            load(config.as_ref()).map_or_else(|c| c, |cfg| models(&cfg, json))
        }
        Command::Run { config } => match load(config.as_ref()) {
            Err(c) => c,
            Ok(cfg) => run(cfg),
        },
        Command::Infer {
            model,
            json,
            config,
            variant,
            ep,
            inputs,
        } => {
            let mut cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(c) => return c,
            };
            cfg.models.enabled = vec![model.clone()];
            cfg.engine.workers = 1;
            if let Some(v) = variant {
                cfg.models.variant = v;
            }
            if let Some(ep) = ep {
                cfg.runtime.execution_providers =
                    ep.split(',').map(|s| s.trim().to_string()).collect();
            }
            let problems = cfg.problems();
            if !problems.is_empty() {
                return fail(EX_USAGE, problems.join("; "));
            }
            infer(&cfg, &model, json, &inputs)
        }
    }
}

/// Initialises logging from the config (RUST_LOG wins for the filter); `run` reloads the
/// filter on SIGHUP.
pub fn init_tracing(log: &crate::config::LogConfig) {
    tandem_engine::daemon::logging::init(&log.filter, log.format);
}

fn run(cfg: Config) -> ExitCode {
    init_tracing(&cfg.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EX_SOFTWARE, format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(app::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (app::AppError::Bind { .. } | app::AppError::Hub(_))) => fail(EX_CONFIG, e),
        Err(e @ app::AppError::Serve(_)) => fail(EX_SOFTWARE, e),
        Err(e @ app::AppError::Enrol(crate::enrol::EnrolError::Refused { .. })) => {
            fail(crate::enrol::cli::EX_NOPERM, e)
        }
        Err(e) => fail(EX_UNAVAILABLE, e),
    }
}

fn infer(cfg: &Config, model_name: &str, json: bool, inputs: &[String]) -> ExitCode {
    let quiet = crate::config::LogConfig {
        filter: "warn,ort=error".into(),
        ..cfg.log.clone()
    };
    init_tracing(if json { &quiet } else { &cfg.log });
    let engine = match app::start_engine(cfg) {
        Ok(e) => e,
        Err(e) => return fail(EX_UNAVAILABLE, e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EX_SOFTWARE, format!("cannot start the async runtime: {e}")),
    };
    // The hub link's UDP socket belongs to this runtime.
    let _rt_guard = rt.enter();
    let router = match app::start_router(cfg, engine.clone()) {
        Ok(r) => r,
        Err(e) => return fail(EX_CONFIG, e),
    };
    let measured: Vec<_> = engine
        .model(model_name)
        .map(|h| h.ep_measured.iter().map(|m| m.to_contract()).collect())
        .unwrap_or_default();
    let (is_image, skipped) = match (engine.model(model_name), router.remote().get(model_name)) {
        (Some(h), _) => {
            for (ep, why) in &h.skipped_eps {
                eprintln!(
                    "tandem-agent: execution provider {ep} unavailable ({why}); using {}",
                    h.ep
                );
            }
            (
                matches!(h.files.variant.preprocess, Preprocess::Image(_)),
                h.skipped_eps.clone(),
            )
        }
        (None, Some(_)) => (
            matches!(router.preprocess(model_name), Some(Preprocess::Image(_))),
            Vec::new(),
        ),
        (None, None) => return fail(EX_UNAVAILABLE, format!("model `{model_name}` did not load")),
    };
    let mut worst = 0u8;
    for arg in inputs {
        let input = if is_image {
            match std::fs::read(arg) {
                Ok(b) => Input::Images(vec![Bytes::from(b)]),
                Err(e) => {
                    eprintln!("tandem-agent: {arg}: cannot read: {e}");
                    worst = worst.max(EX_NOINPUT);
                    continue;
                }
            }
        } else {
            Input::Texts(vec![arg.clone()])
        };
        match rt.block_on(router.classify(model_name, input, None)) {
            Ok(answer) => print_answer(arg, &answer, json, &skipped, &measured),
            Err(e) => {
                eprintln!("tandem-agent: {arg}: {e}");
                let code = match e {
                    RouteError::Local(
                        InferenceError::Preprocess(_) | InferenceError::BadInput(_),
                    ) => EX_DATAERR,
                    RouteError::Hub { .. } => EX_UNAVAILABLE,
                    RouteError::Local(_) => EX_SOFTWARE,
                };
                worst = worst.max(code);
            }
        }
    }
    ExitCode::from(worst)
}

/// One line of `infer --json`: the answer as `/v1/classify` or `/v1/detect` gives it, the
/// input's path or text, and the providers measured and passed over.
#[derive(serde::Serialize)]
struct InferLine<'a> {
    #[serde(flatten)]
    answer: crate::hybrid::AnswerBody<'a>,
    input: &'a str,
    ep_measured: &'a [tandem_shared::provider::EpMeasurement],
    ep_skipped: Vec<Skipped<'a>>,
}

/// A provider passed over, and why.
#[derive(serde::Serialize)]
struct Skipped<'a> {
    ep: &'static str,
    reason: &'a str,
}

fn print_answer(
    input: &str,
    answer: &Answer,
    json: bool,
    skipped: &[(tandem_shared::provider::ExecutionProvider, String)],
    measured: &[tandem_shared::provider::EpMeasurement],
) {
    if json {
        let line = InferLine {
            answer: answer.body(),
            input,
            ep_measured: measured,
            ep_skipped: skipped
                .iter()
                .map(|(e, r)| Skipped {
                    ep: e.as_str(),
                    reason: r,
                })
                .collect(),
        };
        match serde_json::to_string(&line) {
            Ok(l) => println!("{l}"),
            Err(e) => eprintln!("tandem-agent: {input}: cannot print the answer: {e}"),
        }
        return;
    }
    if let Some(d) = answer.detections() {
        let route = match (&answer.cloud, answer.degraded) {
            (Some(c), _) => format!("cloud (hub {})", c.version),
            (None, true) => "local, DEGRADED".to_string(),
            (None, false) => "local".to_string(),
        };
        println!(
            "{input}\n  {} box(es) in {}x{}, {route}",
            d.boxes.len(),
            d.width,
            d.height
        );
        for b in &d.boxes {
            let [x1, y1, x2, y2] = b.bbox;
            println!(
                "    {:<14} {:.3}  [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}]",
                b.label, b.score
            );
        }
        return;
    }
    let Some(p) = answer.prediction() else {
        return;
    };
    let local = answer.local.as_ref();
    let local_p = local.and_then(|l| l.predictions.first());
    let top: Vec<String> = p
        .top_k
        .iter()
        .map(|s| format!("{} {:.3}", s.label, s.score))
        .collect();
    let route = match (&answer.cloud, local_p) {
        (Some(c), Some(l)) => format!(
            "cloud (hub {}; local said {} {:.3})",
            c.version, l.label, l.score
        ),
        (Some(c), None) => format!("cloud (hub {}; no local answer)", c.version),
        (None, _) if answer.degraded => "local, DEGRADED".to_string(),
        (None, _) => "local".to_string(),
    };
    let where_ = local.map_or_else(
        || "hub only".to_string(),
        |l| {
            format!(
                "ep={} variant={} latency={:.2} ms",
                l.ep,
                l.variant.as_str(),
                l.timing.total_us as f64 / 1000.0
            )
        },
    );
    println!(
        "{input}\n  {} ({:.3})  top-{}: {}\n  route={route} reason={} {where_}",
        p.label,
        p.score,
        top.len(),
        top.join(", "),
        crate::telemetry::counters::reason_name(Some(answer.reason)),
    );
}

fn models(cfg: &Config, json: bool) -> ExitCode {
    let dir = cfg.resolve(&cfg.models.dir);
    let names = match model::discover(&dir) {
        Ok(n) => n,
        Err(e) => return fail(EX_CONFIG, e),
    };
    let mut rows = Vec::new();
    for name in &names {
        let mdir = dir.join(name);
        match model::read_manifest(&mdir) {
            Err(e) => rows.push(json!({"name": name, "error": e.to_string()})),
            Ok(m) => {
                let variants: Vec<_> = m
                    .variants
                    .iter()
                    .map(|(role, v)| {
                        let status = match model::open(&dir, name, *role, cfg.models.verify_sha256)
                        {
                            Ok(_) => "ok".to_string(),
                            Err(e) => e.to_string(),
                        };
                        json!({
                            "variant": role.as_str(),
                            "file": v.file,
                            "quantization": v.quantization,
                            "accuracy": v.accuracy,
                            "threshold": v.threshold,
                            "status": status,
                        })
                    })
                    .collect();
                rows.push(json!({"name": m.name, "version": m.version, "task": m.task, "variants": variants}));
            }
        }
    }
    if json {
        for r in &rows {
            println!("{r}");
        }
        return ExitCode::SUCCESS;
    }
    println!("models in {}", dir.display());
    for r in &rows {
        println!(
            "{} {} ({})",
            r["name"].as_str().unwrap_or("?"),
            r["version"].as_str().unwrap_or(""),
            r["task"].as_str().unwrap_or("")
        );
        if let Some(e) = r.get("error") {
            println!("  error: {e}");
        }
        for v in r["variants"].as_array().into_iter().flatten() {
            let acc = v["accuracy"]["top1"]
                .as_f64()
                .map_or(String::new(), |a| format!(" top1={:.2}%", a * 100.0));
            println!(
                "  {:5} {:28} {:30}{acc}  [{}]",
                v["variant"].as_str().unwrap_or(""),
                v["file"].as_str().unwrap_or(""),
                v["quantization"].as_str().unwrap_or(""),
                v["status"].as_str().unwrap_or("")
            );
        }
    }
    let _ = VariantRole::Edge;
    ExitCode::SUCCESS
}
