//! Commands from the hub (`tandem/{device}/cmd/{name}`, flow 4): decoded with the shared
//! schema and applied to the router's policy. Every command, well-formed or not, gets exactly
//! one result; a malformed one gets an error result, never a crash.
//!
//! - `set_threshold {model, threshold, signal?, source?}`: a model's confidence threshold (and
//!   signal), kept across restarts (`policy.thresholds_file`) and reported with its source
//!   (`operator` unless the hub's calibration says `hub-calibrated`).
//! - `set_policy {model?, mode}`: a model's routing mode, or the default one.
//! - `telemetry_now {}`: telemetry at once (returned for the caller to publish).
//! - `update_model {model, version, rollback?}`: download and install a model version from the
//!   hub (`models::update`, in the background; `ok` means started).

use crate::hybrid::Router;
use crate::policy::Mode;
use crate::telemetry::Reporter;
use tandem_shared::mqtt::{
    Command, CommandResult, PolicyMode, PolicyView, Telemetry, ThresholdSource,
};

/// What a command produced: its result, and telemetry to publish for `telemetry_now`.
#[derive(Debug)]
pub struct Handled {
    /// The result to publish on `.../cmd/{name}/result`.
    pub result: CommandResult,
    /// Telemetry to publish now.
    pub telemetry: Option<Telemetry>,
}

fn mode(m: PolicyMode) -> Mode {
    match m {
        PolicyMode::Local => Mode::Local,
        PolicyMode::Cloud => Mode::Cloud,
        PolicyMode::Cascade => Mode::Cascade,
    }
}

fn policy_mode(m: Mode) -> PolicyMode {
    match m {
        Mode::Local => PolicyMode::Local,
        Mode::Cloud => PolicyMode::Cloud,
        Mode::Cascade => PolicyMode::Cascade,
    }
}

/// The routing of `model` now in force (the default mode when `None`). Without a hub link every
/// model is effectively `local`, and that is what is reported.
fn view(router: &Router, model: Option<&str>) -> PolicyView {
    match model {
        Some(m) => {
            let p = router.policy(m);
            PolicyView {
                model: Some(m.to_string()),
                mode: policy_mode(p.mode),
                signal: Some(p.signal),
                threshold: Some(p.threshold),
                source: Some(router.threshold_view(m).source),
            }
        }
        None => PolicyView {
            model: None,
            mode: policy_mode(router.policy_config().mode),
            signal: None,
            threshold: None,
            source: None,
        },
    }
}

/// Decodes and carries out command `name` with `payload`.
pub fn handle(reporter: &Reporter, name: &str, payload: &[u8]) -> Handled {
    let router = reporter.router();
    let (id, cmd) = match Command::decode(name, payload) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(command = name, error = %e, "malformed command");
            return Handled {
                result: CommandResult::error(e.id.as_deref(), e.to_string()),
                telemetry: None,
            };
        }
    };
    let changed = match &cmd {
        Command::SetThreshold {
            model,
            threshold,
            signal,
            source,
        } => router
            .set_threshold(
                model,
                *threshold,
                *signal,
                source.unwrap_or(ThresholdSource::Operator),
            )
            .map(|()| Some(view(router, Some(model)))),
        Command::SetPolicy { model, mode: m } => router
            .update_policy(model.as_deref(), Some(mode(*m)), None, None)
            .map(|_| Some(view(router, model.as_deref()))),
        Command::TelemetryNow => Ok(None),
        Command::UpdateModel {
            model,
            version,
            rollback,
        } => crate::models::update::start(router, model, version, *rollback).map(|()| None),
    };
    match changed {
        Err(e) => {
            tracing::warn!(command = name, id, error = %e, "command refused");
            Handled {
                result: CommandResult::error(Some(&id), e),
                telemetry: None,
            }
        }
        Ok(policy) => {
            let mut result = CommandResult::ok(&id);
            result.policy = policy;
            let telemetry = matches!(cmd, Command::TelemetryNow).then(|| reporter.telemetry());
            result.telemetry_seq = telemetry.as_ref().map(|t| t.seq);
            tracing::info!(command = name, id, "command carried out");
            Handled { result, telemetry }
        }
    }
}
