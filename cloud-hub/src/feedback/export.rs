//! `tandem-hub feedback export --format jsonl DIR`: the stored examples as a dataset a training
//! job can read — `DIR/dataset.jsonl` (one example per line: device, model, kind, the right
//! label for corrections, both models' answers, versions, times, the input's file, its
//! digest and split), the
//! inputs under `DIR/inputs/`, and `DIR/events.jsonl` for the events and telemetry that were
//! queued offline. Rejected payloads are listed in `DIR/rejected.jsonl`.

use super::store::{FeedbackError, Store};
use serde_json::json;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// JSON Lines.
    Jsonl,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Self::Jsonl),
            other => Err(format!("unknown format `{other}` (supported: jsonl)")),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Examples (hard, degraded, corrections).
    pub examples: usize,
    /// Of which corrections.
    pub corrections: usize,
    /// Events and telemetry snapshots.
    pub events: usize,
    /// Payloads that did not decode.
    pub rejected: usize,
}

impl Store {
    /// Writes the dataset to `out` (created if missing; existing files there are replaced).
    pub fn export(
        &self,
        out: &Path,
        _format: ExportFormat,
    ) -> Result<ExportSummary, FeedbackError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FeedbackError::Io {
                path: path.clone(),
                source,
            }
        };
        let inputs = out.join("inputs");
        std::fs::create_dir_all(&inputs).map_err(io(&inputs))?;
        let open = |name: &str| -> Result<BufWriter<std::fs::File>, FeedbackError> {
            let p = out.join(name);
            Ok(BufWriter::new(std::fs::File::create(&p).map_err(io(&p))?))
        };
        let (mut dataset, mut events, mut rejected) = (
            open("dataset.jsonl")?,
            open("events.jsonl")?,
            open("rejected.jsonl")?,
        );
        let mut sum = ExportSummary::default();
        for r in self.iter() {
            let r = r?;
            let (line, (file, name)) = match (&r.example, r.kind.as_str()) {
                (Some(ex), _) => {
                    if let Some(rel) = &r.input {
                        let (src, dst) = (self.dir().join(rel), out.join(rel));
                        if !dst.is_file() {
                            std::fs::copy(&src, &dst).map_err(io(&src))?;
                        }
                    }
                    sum.examples += 1;
                    if ex.label.is_some() {
                        sum.corrections += 1;
                    }
                    let line = json!({
                        "id": format!("{}/{}/{}", r.device, r.epoch, r.seq),
                        "device": r.device,
                        "model": ex.model,
                        "kind": ex.kind,
                        "request_id": ex.request_id,
                        "input": r.input,
                        "input_kind": ex.input_kind,
                        "label": ex.label,
                        "reason": ex.reason,
                        "local": ex.local,
                        "cloud": ex.cloud,
                        "time_ms": ex.time_ms,
                        "received_ms": r.received_ms,
                        "digest": r.digest,
                        "split": r
                            .digest
                            .as_deref()
                            .and_then(|d| hex::decode(d).ok()?.try_into().ok())
                            .map(|d| self.split_of(&d)),
                    });
                    (line, (&mut dataset, "dataset.jsonl"))
                }
                (None, "rejected") => {
                    sum.rejected += 1;
                    (
                        serde_json::to_value(&r).unwrap_or_default(),
                        (&mut rejected, "rejected.jsonl"),
                    )
                }
                (None, _) => {
                    sum.events += 1;
                    (
                        serde_json::to_value(&r).unwrap_or_default(),
                        (&mut events, "events.jsonl"),
                    )
                }
            };
            writeln!(file, "{line}").map_err(io(&out.join(name)))?;
        }
        for (w, name) in [
            (&mut dataset, "dataset.jsonl"),
            (&mut events, "events.jsonl"),
            (&mut rejected, "rejected.jsonl"),
        ] {
            w.flush().map_err(io(&out.join(name)))?;
        }
        Ok(sum)
    }
}
