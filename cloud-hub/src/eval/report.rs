//! An evaluation report: the model version it judged, the set, the metrics overall, by slice
//! and by declared shift; as JSON (stored, served) and as a table a person reads.

use super::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The set a report judged on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetInfo {
    /// `shipped:<dataset>` or `feedback:<split>`.
    pub name: String,
    /// Items judged.
    pub items: u64,
    /// Items by where their label came from (`dataset`, `correction`, `teacher`).
    pub label_sources: BTreeMap<String, u64>,
}

/// The metrics of one slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceMetrics {
    /// `device`, `device_label`, `window` or `label_source`.
    pub kind: String,
    /// The device, `key=value`, the window's start (RFC 3339), or the label source.
    pub value: String,
    /// Its figures.
    pub metrics: Metrics,
}

/// The metrics on one shifted variant of the set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShiftMetrics {
    /// The declaration (`blur:1`).
    pub shift: String,
    /// Its figures.
    pub metrics: Metrics,
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unique, ordered by creation (`<created_ms, 13 digits>-<8 hex>`).
    pub id: String,
    /// The model.
    pub model: String,
    /// The version judged (its manifest's).
    pub version: String,
    /// The variant judged (`edge`, `cloud`).
    pub variant: String,
    /// When it was made, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The set.
    pub set: SetInfo,
    /// Over the whole set.
    pub overall: Metrics,
    /// By slice (device, device label, time window, label source); feedback sets only.
    pub slices: Vec<SliceMetrics>,
    /// On each declared shifted variant.
    pub shifts: Vec<ShiftMetrics>,
}

/// What a listing shows of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// Its id.
    pub id: String,
    /// The model.
    pub model: String,
    /// The version judged.
    pub version: String,
    /// The variant judged.
    pub variant: String,
    /// When it was made (ms since the Unix epoch).
    pub created_ms: u64,
    /// The set's name.
    pub set: String,
    /// Items judged.
    pub n: u64,
    /// Overall accuracy.
    pub accuracy: f64,
    /// Overall macro-F1.
    pub macro_f1: f64,
    /// Overall expected calibration error.
    pub ece: f64,
}

impl Report {
    /// Its listing entry.
    pub fn summary(&self) -> ReportSummary {
        ReportSummary {
            id: self.id.clone(),
            model: self.model.clone(),
            version: self.version.clone(),
            variant: self.variant.clone(),
            created_ms: self.created_ms,
            set: self.set.name.clone(),
            n: self.overall.n,
            accuracy: self.overall.accuracy,
            macro_f1: self.overall.macro_f1,
            ece: self.overall.ece,
        }
    }

    /// A table a person reads (Markdown).
    pub fn table(&self) -> String {
        let mut t = String::new();
        let sources: Vec<String> = self
            .set
            .label_sources
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            t,
            "report {}: {} {} ({}) on {} ({} items; labels: {})\n",
            self.id,
            self.model,
            self.version,
            self.variant,
            self.set.name,
            self.set.items,
            sources.join(", ")
        );
        let _ = writeln!(
            t,
            "| set | n | accuracy | macro-F1 | ECE | mean confidence |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        let mut row = |name: &str, m: &Metrics| {
            let _ = writeln!(
                t,
                "| {name} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
                m.n, m.accuracy, m.macro_f1, m.ece, m.mean_confidence
            );
        };
        row("all", &self.overall);
        for s in &self.slices {
            row(&format!("{} {}", s.kind, s.value), &s.metrics);
        }
        for s in &self.shifts {
            row(&format!("shift {}", s.shift), &s.metrics);
        }
        let _ = writeln!(
            t,
            "\n| class | support | predicted | precision | recall | F1 |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        for c in self
            .overall
            .classes
            .iter()
            .filter(|c| c.support + c.predicted > 0)
        {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {:.4} | {:.4} | {:.4} |",
                c.label, c.support, c.predicted, c.precision, c.recall, c.f1
            );
        }
        let k = self.overall.confusion.len();
        if (1..=20).contains(&k) {
            let _ = writeln!(
                t,
                "\nconfusion (rows: truth, columns: predicted, in class order)"
            );
            for (label, r) in self.overall.classes.iter().zip(&self.overall.confusion) {
                let cells: Vec<String> = r.iter().map(|v| format!("{v:>5}")).collect();
                let _ = writeln!(t, "{:>12} {}", label.label, cells.join(""));
            }
        }
        t
    }
}
