//! The samples one calibration fits on or reports on: a model's examples in one feedback split
//! from the devices a selector names, each with the edge's confidence signal, whether the
//! edge and the cloud model were right against the reference label (a correction wins, else
//! the cloud model's answer as teacher, counted as such), and a weight.
//!
//! # Weighting (so the sample is not biased)
//! The agent sends two strata of its traffic: shadow samples (a share `feedback.shadow_rate`
//! of the answers it was confident about) and hard examples (a share `feedback.sample_rate`
//! of those it was unsure about and offloaded). Each sample counts `1 / its stratum's rate`
//! (inverse-probability weighting: `calibrate.shadow_weight` and `hard_weight`, set to the
//! fleet's rates), so the weighted sample stands for the device's whole traffic rather than
//! over-representing the unsure side. Degraded examples count as hard ones when their reason
//! is `low_confidence`; corrections that reached the hub alone, without the input's answer,
//! are left out (a person chose them: no known rate), though their labels still win where
//! the input also came as a shadow sample or hard example.

use super::fit::Sample;
use super::truth::Judged;
use crate::feedback::{ExampleFilter, FeedbackError, Labelled, Split, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tandem_shared::manifest::Signal;
use tandem_shared::record::{ExampleKind, Outcome};

/// Examples read per page.
const PAGE: usize = 500;

/// The strata's weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Of a shadow sample (the confident side): `1 / feedback.shadow_rate`.
    pub shadow: f64,
    /// Of a hard example (the unsure side): `1 / feedback.sample_rate`.
    pub hard: f64,
}

/// What the samples of one split are made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Samples used.
    pub samples: u64,
    /// Shadow samples among them.
    pub shadow: u64,
    /// Hard (and low-confidence degraded) examples among them.
    pub hard: u64,
    /// Labelled by a correction.
    pub corrections: u64,
    /// Labelled by the cloud model as teacher.
    pub teacher: u64,
    /// Examples left out, by why (`no_local_answer`, `no_cloud_answer`, `correction_only`,
    /// `other_route`, `no_signal`, `other_devices`, `other_version`).
    pub left_out: BTreeMap<String, u64>,
}

/// One split's samples and their make-up.
#[derive(Debug, Clone, Default)]
pub struct Drawn {
    /// The samples, each with its label's source and whether the two answers agree.
    pub judged: Vec<Judged>,
    /// The inputs' digests, in the samples' order (disjointness is checkable).
    pub digests: Vec<String>,
    /// What they are.
    pub counts: Counts,
}

/// The edge's confidence signal in an answer: its probability (`max_prob`), or its margin
/// over the second best (`margin`, from `top_k`); entropy needs the whole distribution,
/// which examples do not carry.
pub fn signal_of(local: &Outcome, signal: Signal) -> Option<f32> {
    match signal {
        Signal::MaxProb => Some(local.score),
        Signal::Margin => match local.top_k.as_slice() {
            [(_, a), (_, b), ..] => Some(a - b),
            [_] => Some(local.score),
            [] => None,
        },
        Signal::Entropy => None,
    }
}

/// The samples of `model` in `split` from the devices `device_ok` accepts, answered by the
/// edge `version` when one is named.
pub fn draw(
    store: &Store,
    model: &str,
    split: Split,
    signal: Signal,
    weights: Weights,
    version: Option<&str>,
    device_ok: &dyn Fn(&str) -> bool,
) -> Result<Drawn, FeedbackError> {
    let filter = ExampleFilter {
        model: Some(model.to_string()),
        split: Some(split),
        labelled: true,
    };
    let mut out = Drawn::default();
    for page in store.example_pages(&filter, PAGE) {
        for e in &page? {
            let mut skip = |why: &str| *out.counts.left_out.entry(why.into()).or_default() += 1;
            if !e.devices.iter().any(|d| device_ok(d)) {
                skip("other_devices");
                continue;
            }
            let weight = match (e.via, e.reason.as_str()) {
                (ExampleKind::Shadow, _) => weights.shadow,
                (ExampleKind::Hard, _) | (ExampleKind::Degraded, "low_confidence") => weights.hard,
                (ExampleKind::Correction, _) => {
                    skip("correction_only");
                    continue;
                }
                _ => {
                    skip("other_route");
                    continue;
                }
            };
            let (Some(local), Some(label)) = (&e.local, &e.label) else {
                skip("no_local_answer");
                continue;
            };
            if version.is_some_and(|v| v != local.version) {
                skip("other_version");
                continue;
            }
            let Some(cloud) = &e.cloud else {
                skip("no_cloud_answer");
                continue;
            };
            let Some(value) = signal_of(local, signal) else {
                skip("no_signal");
                continue;
            };
            out.judged.push(Judged {
                sample: Sample {
                    signal: value,
                    edge_right: &local.label == label,
                    cloud_right: &cloud.label == label,
                    weight,
                },
                corrected: e.label_source == Some(Labelled::Correction),
                agree: local.label == cloud.label,
            });
            out.digests.push(e.digest.clone());
            let c = &mut out.counts;
            c.samples += 1;
            if e.via == ExampleKind::Shadow {
                c.shadow += 1;
            } else {
                c.hard += 1;
            }
            match e.label_source {
                Some(Labelled::Correction) => c.corrections += 1,
                _ => c.teacher += 1,
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_shared::record::{self, ExampleMeta, Record};

    fn outcome(version: &str, label: &str, score: f32) -> Outcome {
        Outcome {
            version: version.into(),
            label: label.into(),
            index: 0,
            score,
            top_k: vec![],
        }
    }

    /// A hard example of input `n` answered by edge `version`, with the hub's answer.
    fn hard(n: u8, version: &str) -> Vec<u8> {
        record::encode(&Record::Example {
            meta: Box::new(ExampleMeta {
                kind: ExampleKind::Hard,
                request_id: format!("r-{n}"),
                model: "vision-fashion".into(),
                time_ms: 1,
                input_kind: "image".into(),
                reason: "low_confidence".into(),
                local: Some(outcome(version, "Shirt", 0.4)),
                cloud: Some(outcome("1.0.0", "Shirt", 0.9)),
                label: None,
                boxes: None,
            }),
            input: vec![n; 8],
        })
    }

    #[test]
    fn a_version_keeps_only_that_versions_answers() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let records: Vec<Vec<u8>> = (0..40u8)
            .map(|n| hard(n, if n % 4 == 0 { "1.0.1" } else { "1.0.0" }))
            .collect();
        let batch: Vec<(u64, u64, &[u8])> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (1, i as u64 + 1, r.as_slice()))
            .collect();
        store.ingest("cam-1", &batch).expect("ingest");
        let weights = Weights {
            shadow: 1.0,
            hard: 1.0,
        };
        let count = |version: Option<&str>| {
            let (mut kept, mut other) = (0, 0);
            for split in [Split::Train, Split::Calibration, Split::Test] {
                let d = draw(
                    &store,
                    "vision-fashion",
                    split,
                    Signal::MaxProb,
                    weights,
                    version,
                    &|_| true,
                )
                .expect("draw");
                kept += d.counts.samples;
                other += d.counts.left_out.get("other_version").copied().unwrap_or(0);
            }
            (kept, other)
        };
        assert_eq!(count(None), (40, 0));
        assert_eq!(count(Some("1.0.1")), (10, 30));
        assert_eq!(count(Some("1.0.0")), (30, 10));
    }
}
