//! The loop benchmark's table: per scenario (teacher labels only; an operator's corrections on
//! a share of the feedback), before and after the turn on the report phases (inputs no fit
//! saw), the calibrations (fitted on the calibration split, their own test-split figures, how
//! many labels were corrections), the gate's checks, the refused candidate, what the devices
//! uplinked; last line `loop: offload_before=X offload_after=Y accuracy_ratio=Z`.

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
    /// Corrections the operator posted so far.
    pub corrected: u64,
    /// Hard examples the devices queued.
    pub hard: f64,
    /// Shadow samples the devices sent.
    pub shadow: f64,
}

/// What one scenario measured.
pub struct Scenario {
    /// Share of the feedback the operator corrected (0: the teacher's labels only).
    pub share: f64,
    /// Report phase before the turn.
    pub before: Figures,
    /// Report phase after the turn.
    pub after: Figures,
    /// The hub's calibrations: of the shipped version, of the new one.
    pub calibrations: [Value; 2],
    /// The loop's gate decision (rolled out).
    pub decision: Value,
    /// Feedback after each feedback phase.
    pub feedback: Vec<FeedbackCount>,
}

impl Scenario {
    fn name(&self) -> String {
        if self.share > 0.0 {
            format!("corrections on {:.0}%", self.share * 100.0)
        } else {
            "teacher only".into()
        }
    }

    fn met(&self) -> bool {
        self.after.offload <= self.before.offload * 2.0 / 3.0 && self.after.ratio() >= 0.995
    }
}

fn row(scenario: &str, name: &str, threshold: f64, f: &Figures) {
    println!(
        "| {scenario} | {name} | {:.4} | {threshold:.4} | {:.3} | {:.4} | {:.4} | {:.4} | {} | {:.3} |",
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
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let check = &fit["teacher_check"];
    let judged = if check.is_object() {
        let bins: Vec<String> = check["disagree_bins"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{}{:.2}/{:.2} (n {})",
                    b["below"]
                        .as_f64()
                        .map_or("rest: ".into(), |t| format!("<{t:.3}: ")),
                    num(&b["edge_right"]),
                    num(&b["cloud_right"]),
                    b["n"]
                )
            })
            .collect();
        format!(
            "; teacher labels judged by the corrections: where edge and cloud disagree the edge is right {:.2}, the cloud {:.2} (n {}; by confidence, edge/cloud: {})",
            num(&check["disagree_edge_right"]),
            num(&check["disagree_cloud_right"]),
            check["corrected_disagreements"],
            bins.join(", "),
        )
    } else {
        String::new()
    };
    let truth = &c["test"]["corrected_only"];
    let truth = if truth.is_object() {
        format!(
            "; on its {} corrected test samples alone (true labels): offload {:.3}, ratio {:.4}",
            truth["n"],
            num(&truth["offload"]),
            num(&truth["accuracy_ratio"])
        )
    } else {
        String::new()
    };
    println!(
        "- {}: threshold {:.4} fitted on {} calibration-split samples ({} shadow, {} hard; labels: {} corrections, {} teacher{judged}); on its {} test-split samples: offload {:.3}, accuracy ratio {:.4}{truth}",
        c["version"].as_str().unwrap_or("?"),
        num(&c["threshold"]),
        fit["counts"]["samples"],
        fit["counts"]["shadow"],
        fit["counts"]["hard"],
        fit["counts"]["corrections"],
        fit["counts"]["teacher"],
        c["test"]["counts"]["samples"],
        num(&test["offload"]),
        num(&test["accuracy_ratio"]),
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

/// Prints the table and the last line of a stream: the image stream's (with its `refused`
/// candidate; `loop:`), or the text stream's when `text` (`loop-text:`).
pub fn print(a: &Args, scenarios: &[Scenario], refused: Option<&Decision>, text: bool) {
    let (report, stream, last) = if text {
        (a.text.text_report, " (text)", "loop-text")
    } else {
        (a.report, "", "loop")
    };
    let th = |c: &Value| c["threshold"].as_f64().unwrap_or(f64::NAN);
    let version = |f: &Figures| f.versions.iter().cloned().collect::<Vec<_>>().join(",");
    println!();
    println!(
        "| scenario | report phase ({report} new inputs each) | edge accuracy | threshold | offload | cascade accuracy | cloud-only accuracy | cascade / cloud-only | inference bytes uplinked | vs cloud-only |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in scenarios {
        let name = s.name();
        row(
            &name,
            &format!("before: edge {}", version(&s.before)),
            th(&s.calibrations[0]),
            &s.before,
        );
        row(
            &name,
            &format!("after: edge {}", version(&s.after)),
            th(&s.calibrations[1]),
            &s.after,
        );
    }
    if let Some(r) = refused {
        let sources = &r.candidate.label_sources;
        println!(
            "| - | refused: {} trained on {} wrongly labelled examples (+{} replayed) | gate: {} | - | - | - | - | - | - | - |",
            r.candidate.version,
            sources.get("correction").copied().unwrap_or(0),
            sources.get("replay").copied().unwrap_or(0),
            r.reasons.join("; ")
        );
    }
    for s in scenarios {
        println!();
        println!("{}:", s.name());
        println!("calibrations (hub, from the devices' feedback; pushed, kept by the devices):");
        for c in &s.calibrations {
            calibration_line(c);
        }
        let d = &s.decision;
        println!(
            "gate: {} from {} on {} training examples ({}): {}; status {}",
            d["candidate"]["version"].as_str().unwrap_or("?"),
            d["serving_version"].as_str().unwrap_or("?"),
            d["candidate"]["fit"]["examples"],
            d["candidate"]["label_sources"],
            checks(d),
            d["status"].as_str().unwrap_or("?"),
        );
        for f in &s.feedback {
            println!(
                "feedback after the {} phase: {} examples at the hub ({} labelled, {} corrected by the operator); devices sent {} hard examples, {} shadow samples so far (shadow rate {})",
                f.phase, f.examples, f.labelled, f.corrected, f.hard, f.shadow, a.shadow_rate
            );
        }
    }
    println!();
    if let Some(r) = refused {
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
    }
    for s in scenarios {
        println!(
            "target{stream} with {} (offload at least a third lower, accuracy ratio >= 0.995 after): {}",
            s.name(),
            if s.met() { "met" } else { "NOT met" }
        );
    }
    for (i, s) in scenarios.iter().enumerate() {
        let (b, f) = (s.before.offload, s.after.offload);
        println!(
            "{}: offload_before={b:.3} offload_after={f:.3} accuracy_ratio={:.4}",
            if i + 1 == scenarios.len() {
                last.to_string()
            } else {
                format!("{last} ({})", s.name())
            },
            s.after.ratio()
        );
    }
}
