//! The loop benchmark's table: before and after the turn on the report phases (inputs no fit
//! saw), the calibrations (fitted on the calibration split, their own test-split figures),
//! the gate's checks, the refused candidate, what the devices uplinked; last line
//! `loop: offload_before=X offload_after=Y accuracy_ratio=Z`.

use super::Args;
use super::phase::Figures;
use serde_json::Value;
use tandem_hub::train::service::Decision;

/// Feedback the devices sent (counters since they started) and what the hub held after a
/// phase.
#[derive(Debug, Clone)]
pub struct FeedbackCount {
    /// The phase it closes.
    pub phase: String,
    /// Examples (distinct inputs) at the hub.
    pub examples: u64,
    /// Of which labelled (teacher or correction).
    pub labelled: u64,
    /// Hard examples the devices queued.
    pub hard: f64,
    /// Shadow samples the devices sent.
    pub shadow: f64,
}

/// Everything measured.
pub struct Measured {
    /// Report phase before the turn.
    pub before: Figures,
    /// Report phase after the turn.
    pub after: Figures,
    /// The hub's calibrations: of the shipped version, of the new one.
    pub calibrations: [Value; 2],
    /// The loop's gate decision (rolled out).
    pub decision: Value,
    /// The candidate the gate refused.
    pub refused: Decision,
    /// Feedback after each feedback phase.
    pub feedback: Vec<FeedbackCount>,
}

fn row(name: &str, threshold: f64, f: &Figures) {
    println!(
        "| {name} | {:.4} | {threshold:.4} | {:.3} | {:.4} | {:.4} | {:.4} | {} | {:.3} |",
        f.edge,
        f.offload,
        f.cascade,
        f.cloud,
        f.ratio(),
        f.uplink_bytes,
        f.uplink_bytes as f64 / f.cloud_only_bytes.max(1) as f64,
    );
}

fn calibration_line(c: &Value) {
    let fit = &c["fit"];
    let test = &c["test"]["at_fitted"];
    println!(
        "- {}: threshold {:.4} fitted on {} calibration-split samples ({} shadow, {} hard); on its {} test-split samples: offload {:.3}, accuracy ratio {:.4}",
        c["version"].as_str().unwrap_or("?"),
        c["threshold"].as_f64().unwrap_or(f64::NAN),
        fit["counts"]["samples"],
        fit["counts"]["shadow"],
        fit["counts"]["hard"],
        c["test"]["counts"]["samples"],
        test["offload"].as_f64().unwrap_or(f64::NAN),
        test["accuracy_ratio"].as_f64().unwrap_or(f64::NAN),
    );
}

fn checks(d: &Value) -> String {
    d["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["what"] == "target" || c["what"] == "original")
        .map(|c| {
            format!(
                "{} {:.4} -> {:.4} (n {})",
                c["what"].as_str().unwrap_or("?"),
                c["serving"].as_f64().unwrap_or(f64::NAN),
                c["candidate"].as_f64().unwrap_or(f64::NAN),
                c["n"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the table and the last line.
pub fn print(a: &Args, m: &Measured) {
    let th = |c: &Value| c["threshold"].as_f64().unwrap_or(f64::NAN);
    let version = |f: &Figures| f.versions.iter().cloned().collect::<Vec<_>>().join(",");
    println!();
    println!(
        "| report phase ({} new inputs each) | edge accuracy | threshold | offload | cascade accuracy | cloud-only accuracy | cascade / cloud-only | inference bytes uplinked | vs cloud-only |",
        a.report
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    row(
        &format!("before: edge {}", version(&m.before)),
        th(&m.calibrations[0]),
        &m.before,
    );
    row(
        &format!("after: edge {}", version(&m.after)),
        th(&m.calibrations[1]),
        &m.after,
    );
    let r = &m.refused;
    let sources = &r.candidate.label_sources;
    println!(
        "| refused: {} trained on {} wrongly labelled examples (+{} replayed) | gate: {} | - | - | - | - | - | - | - |",
        r.candidate.version,
        sources.get("correction").copied().unwrap_or(0),
        sources.get("replay").copied().unwrap_or(0),
        r.reasons.join("; ")
    );
    println!();
    println!("calibrations (hub, from the devices' feedback; pushed, kept by the devices):");
    for c in &m.calibrations {
        calibration_line(c);
    }
    let d = &m.decision;
    println!(
        "gate: {} from {} on {} training examples ({}): {}; status {}",
        d["candidate"]["version"].as_str().unwrap_or("?"),
        d["serving_version"].as_str().unwrap_or("?"),
        d["candidate"]["fit"]["examples"],
        d["candidate"]["label_sources"],
        checks(d),
        d["status"].as_str().unwrap_or("?"),
    );
    println!(
        "refused candidate {}: {:?} ({:?}), checks: {}",
        r.candidate.version,
        r.status,
        r.candidate.label_sources,
        r.checks
            .iter()
            .filter(|c| c.what == "target" || c.what == "original")
            .map(|c| format!(
                "{} {:.4} -> {:.4} (n {})",
                c.what, c.serving, c.candidate, c.n
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for f in &m.feedback {
        println!(
            "feedback after the {} phase: {} examples at the hub ({} labelled); devices sent {} hard examples, {} shadow samples so far (shadow rate {})",
            f.phase, f.examples, f.labelled, f.hard, f.shadow, a.shadow_rate
        );
    }
    let (b, f) = (m.before.offload, m.after.offload);
    let met = f <= b * 2.0 / 3.0 && m.after.ratio() >= 0.995;
    println!(
        "target (offload at least a third lower, accuracy ratio >= 0.995 after): {}",
        if met { "met" } else { "NOT met" }
    );
    println!(
        "loop: offload_before={b:.3} offload_after={f:.3} accuracy_ratio={:.4}",
        m.after.ratio()
    );
}
