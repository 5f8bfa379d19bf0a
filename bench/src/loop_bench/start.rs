//! The text stream's starting version: the shipped text-sentiment folder with its edge head
//! refitted on the `train` split of the other VADER domains only (never the stream's), so the
//! devices meet a domain their head has not seen. Built with the hub's own training code
//! (`tandem_hub::train`: the features computed by the shipped edge model, the head fit, the
//! export with its check against the fitted head), written as a model folder version 1.0.0 that
//! the hub serves (beside the cloud model and the shipped test and replay sets) and the agents
//! copy. Also the start head's accuracy on given sentences (the report phases), computed in
//! process from the same features.

use super::stream::Item;
use super::text::{MODEL, field, lines};
use anyhow::Context as _;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tandem_hub::eval::dataset::{self, Payload};
use tandem_hub::train::head::{self, FitOptions, LinearHead};
use tandem_hub::train::{export, features, graph};

/// scikit-learn's `LogisticRegression(C = 4)`, the shipped head's fit (`models/build_text.py`).
pub const SKLEARN_C: f64 = 4.0;

/// The version the devices and the hub start from.
const VERSION: &str = "1.0.0";

/// A starting version, in a scratch folder (removed on drop).
pub struct Start {
    /// The models folder (holding [`MODEL`]) the hub serves and the agents copy.
    pub models: PathBuf,
    /// What it is, with its fit and its accuracy on the sentences asked for (one line).
    pub summary: String,
    /// The start head's accuracy on each set of sentences asked for.
    pub accuracy: Vec<f64>,
    scratch: PathBuf,
}

impl Drop for Start {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The sentences the start head is fitted on: the `train` split (build_text.py's) of every
/// domain of `domains` (files `bench/data/loop-text/<domain>.jsonl`), with their class index;
/// an error if a domain is also one of the stream's or a sentence is in the shipped test set.
pub fn sentences(
    repo: &Path,
    domains: &[String],
    stream: &[String],
) -> anyhow::Result<Vec<(String, usize)>> {
    if let Some(d) = domains.iter().find(|d| stream.contains(d)) {
        anyhow::bail!("the start head's domains include `{d}`, a domain of the stream");
    }
    let dir = repo.join("models").join(MODEL);
    let (labels, _) = dataset::labels(&dir)?;
    let test: HashSet<String> = dataset::shipped(&dir, 0)?
        .items
        .into_iter()
        .filter_map(|i| match i.input {
            Payload::Text(t) => Some(t),
            Payload::Image(_) => None,
        })
        .collect();
    let mut out = Vec::new();
    for d in domains {
        let path = repo.join("bench/data/loop-text").join(format!("{d}.jsonl"));
        for l in lines(&path)? {
            if field(&l, "split")? != "train" {
                continue;
            }
            let (text, label) = (field(&l, "text")?, field(&l, "label")?);
            anyhow::ensure!(
                !test.contains(&text),
                "{}: a train sentence of the shipped test set: {text}",
                path.display()
            );
            let truth = labels
                .iter()
                .position(|x| *x == label)
                .with_context(|| format!("{}: label {label}", path.display()))?;
            out.push((text, truth));
        }
    }
    anyhow::ensure!(!out.is_empty(), "no train sentence in {domains:?}");
    Ok(out)
}

/// The L2 strength of `head::fit` (on standardised features, both class columns) that matches
/// scikit-learn's binary `LogisticRegression(C)` on `n` rows whose features have variance
/// `var` on average: sklearn minimises `‖w‖²/2 + C·Σ log-loss`, i.e. per row `‖w‖²/(2nC)`
/// on raw features; a two-class softmax holds `w/2` and `−w/2` (penalty `l2·‖w‖²/4`), and
/// standardising scales each weight by its feature's deviation (`‖w_raw‖² ≈ ‖w_std‖²/var`).
pub fn sklearn_l2(n: usize, var: f64, c: f64) -> f64 {
    2.0 / (n as f64 * c * var)
}

/// The mean variance of the features `xs`.
fn mean_variance(xs: &[Vec<f32>]) -> f64 {
    let (n, d) = (xs.len() as f64, xs.first().map_or(0, Vec::len));
    let var: f64 = (0..d)
        .map(|k| {
            let m = xs.iter().map(|x| f64::from(x[k])).sum::<f64>() / n;
            xs.iter()
                .map(|x| (f64::from(x[k]) - m).powi(2))
                .sum::<f64>()
                / n
        })
        .sum();
    var / d.max(1) as f64
}

/// Builds the starting version: the start head fitted on [`sentences`] of `domains`, exported
/// into a copy of the shipped folder; its accuracy on each of `judge` (and the shipped head's).
pub fn build(
    repo: &Path,
    domains: &[String],
    stream: &[String],
    judge: &[&[Item]],
) -> anyhow::Result<Start> {
    let t = Instant::now();
    let train = sentences(repo, domains, stream)?;
    let shipped = repo.join("models").join(MODEL);
    let scratch =
        std::env::temp_dir().join(format!("tandem-bench-loop-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let mut start = Start {
        models: scratch.join("models"),
        summary: String::new(),
        accuracy: Vec::new(),
        scratch: scratch.clone(),
    };
    let base = features::read_folder(&shipped)?;
    let head_of = graph::head(&base.onnx)?;
    let mut settings = crate::cascade::settings(repo, "edge");
    settings.models.enabled = vec![MODEL.into()];
    let utf8 = |i: &Item| Payload::Text(String::from_utf8_lossy(&i.body).into_owned());
    let inputs: Vec<Payload> = train
        .iter()
        .map(|(s, _)| Payload::Text(s.clone()))
        .chain(judge.iter().flat_map(|j| j.iter().map(utf8)))
        .collect();
    let work = scratch.join("work");
    let mut xs = features::extract(&settings, &base, &head_of, &inputs, &work)?;
    let judged = xs.split_off(train.len());
    let ys: Vec<usize> = train.iter().map(|(_, y)| *y).collect();
    let l2 = sklearn_l2(xs.len(), mean_variance(&xs), SKLEARN_C);
    let zero = LinearHead::zeros(head_of.dim, head_of.classes);
    // The hub's step budget (`train.max_steps`).
    let opts = FitOptions {
        l2,
        ..FitOptions::default()
    };
    let (fitted, stats) = head::fit(&zero, &xs, &ys, &opts)?;
    let check: Vec<(Payload, Vec<f32>)> = inputs.iter().cloned().zip(xs).take(32).collect();
    let out = scratch.join("bundle");
    let exported = export::export(
        &settings, &base, &head_of, &fitted, VERSION, &check, &work, &out,
    )?;
    folder(
        &shipped,
        &exported.bundle,
        &start.models.join(MODEL),
        domains,
    )?;
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&out);

    let shipped_head = head_of.linear();
    let mut rest = judged.as_slice();
    let mut figures = Vec::new();
    for items in judge {
        let (xs, more) = rest.split_at(items.len());
        rest = more;
        let acc = |h: &LinearHead| {
            let right = xs
                .iter()
                .zip(items.iter())
                .filter(|(x, it)| h.predict(x) == it.truth)
                .count();
            right as f64 / items.len().max(1) as f64
        };
        start.accuracy.push(acc(&fitted));
        figures.push(format!(
            "{:.4} (the shipped head {:.4})",
            acc(&fitted),
            acc(&shipped_head)
        ));
    }
    start.summary = format!(
        "start {VERSION}: the shipped {MODEL} with its edge head refitted by the hub's trainer on the {} train-split sentences of {} (none of {}), from zero, l2 = {l2:.4} (sklearn C = {SKLEARN_C} on these features), {} steps, train accuracy {:.4}, export max |diff| {:.1e}; accuracy on the report phases (in process): {}; built in {:.0} s",
        stats.examples,
        domains.join("+"),
        stream.join("+"),
        stats.steps,
        stats.train_accuracy_after,
        exported.max_abs_diff,
        figures.join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(start)
}

/// Writes the starting model folder `to`: the shipped folder `from` (the cloud model linked,
/// not copied) with the exported `bundle`'s edge graph, its self-tests' recorded answers in
/// `testdata/expected.json` and `testdata/reference.json` (the edge cases the bundle has), and
/// a manifest saying what it is, with the files' sha256.
fn folder(from: &Path, bundle: &Path, to: &Path, domains: &[String]) -> anyhow::Result<()> {
    let mut m: Value = serde_json::from_slice(&std::fs::read(from.join("manifest.json"))?)?;
    let edge_file = m["variants"]["edge"]["file"]
        .as_str()
        .context("no edge file")?
        .to_string();
    let cloud_file = m["variants"]["cloud"]["file"].as_str().map(str::to_string);
    copy_tree(from, to, cloud_file.as_deref())?;
    std::fs::copy(bundle.join(&edge_file), to.join(&edge_file))
        .with_context(|| format!("{}", bundle.join(&edge_file).display()))?;
    let doc: Value = serde_json::from_slice(&std::fs::read(
        bundle.join(tandem_shared::bundle::BUNDLE_FILE),
    )?)?;
    let recorded: HashMap<&str, &Value> = doc["selftests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["text"].as_str()?, t)))
        .collect();
    let expected_path = to.join("testdata/expected.json");
    let mut expected: Value = serde_json::from_slice(&std::fs::read(&expected_path)?)?;
    if let Some(cases) = expected["cases"].as_array_mut() {
        cases.retain(|c| {
            c["variant"] != "edge" || c["text"].as_str().is_some_and(|t| recorded.contains_key(t))
        });
        for c in cases.iter_mut().filter(|c| c["variant"] == "edge") {
            let r = recorded[c["text"].as_str().unwrap_or_default()];
            for k in ["top1", "top1_index", "score"] {
                c[k] = r[k].clone();
            }
        }
    }
    std::fs::write(&expected_path, serde_json::to_vec_pretty(&expected)?)?;
    // The engine's accuracy gate compares the edge graph with `testdata/reference.json`'s
    // outputs: a binary head's probabilities follow from the recorded top-1 and its score.
    let reference_path = to.join("testdata/reference.json");
    let mut reference: Value = serde_json::from_slice(&std::fs::read(&reference_path)?)?;
    if let Some(cases) = reference["cases"].as_array_mut() {
        cases.retain_mut(|c| {
            if c["variant"] != "edge" {
                return true;
            }
            let Some(r) = c["text"].as_str().and_then(|t| recorded.get(t)) else {
                return false;
            };
            let (Some(top), Some(score)) = (r["top1_index"].as_u64(), r["score"].as_f64()) else {
                return false;
            };
            let probs = if top == 1 {
                [1.0 - score, score]
            } else {
                [score, 1.0 - score]
            };
            c["outputs"][0]["data"] = json!(probs);
            c["outputs"][0]["shape"] == json!([1, 2])
        });
    }
    std::fs::write(&reference_path, serde_json::to_vec_pretty(&reference)?)?;
    m["version"] = json!(VERSION);
    m["description"] = json!(format!(
        "{} (tandem-bench loop's start: edge head fitted on the VADER domains {} only)",
        m["description"].as_str().unwrap_or_default(),
        domains.join(", ")
    ));
    if let Some(e) = m["variants"]["edge"].as_object_mut() {
        e.remove("accuracy");
    }
    if let Some(o) = m.as_object_mut() {
        o.remove("cascade");
    }
    for rel in [
        edge_file.as_str(),
        "testdata/expected.json",
        "testdata/reference.json",
    ] {
        m["files"][rel] = json!(tandem_engine::model::sha256_file(&to.join(rel))?);
    }
    std::fs::write(to.join("manifest.json"), serde_json::to_vec_pretty(&m)?)?;
    Ok(())
}

/// Copies the folder `from` to `to`, the file named `link` hard-linked (copied where it cannot).
fn copy_tree(from: &Path, to: &Path, link: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst, None)?;
        } else if link.is_some_and(|l| e.file_name() == l) {
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst)?;
            }
        } else {
            std::fs::copy(&src, &dst).with_context(|| src.display().to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_head_sentences_are_other_domains_train_split() {
        let repo = crate::procs::repo().expect("repo");
        let others: Vec<String> = ["tweets", "amazon", "nyt"].map(String::from).to_vec();
        let stream = vec!["movies".to_string()];
        let train = sentences(&repo, &others, &stream).expect("sentences");
        let (_, items) = super::super::text::load(&repo, &stream, 13).expect("stream");
        let streamed: HashSet<&[u8]> = items.iter().map(|i| i.body.as_ref()).collect();
        let mut lines_of_train = 0;
        for d in &others {
            let path = repo.join("bench/data/loop-text").join(format!("{d}.jsonl"));
            let all = lines(&path).expect("file");
            lines_of_train += all.iter().filter(|l| l["split"] == "train").count();
            assert!(all.iter().all(|l| l["domain"] == d.as_str()));
        }
        assert_eq!(train.len(), lines_of_train);
        assert!(train.len() > 5000, "{}", train.len());
        let mut seen = HashSet::new();
        for (s, y) in &train {
            assert!(!streamed.contains(s.as_bytes()), "a stream sentence: {s}");
            assert!(seen.insert(s.as_str()), "twice: {s}");
            assert!(*y < 2);
        }
        // A stream domain among the start head's is refused.
        assert!(sentences(&repo, &stream, &stream).is_err());
    }

    #[test]
    fn the_mean_variance_is_over_features() {
        // Variances 1 and 0: the mean 0.5.
        let xs = vec![vec![0.0f32, 1.0], vec![2.0, 1.0]];
        assert!((mean_variance(&xs) - 0.5).abs() < 1e-12);
    }
}
