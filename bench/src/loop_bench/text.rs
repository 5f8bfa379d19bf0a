//! The loop's text stream: text-sentiment (MiniLM edge, MPNet cloud on the hub as teacher)
//! meeting the VADER sentences of some of its four domains (tweets, movie snippets, Amazon
//! reviews, NYT editorials; `models/prepare_loop_streams.py` writes them by domain from the
//! vaderSentiment sdist, committed under `bench/data/loop-text/`), through the same rig, phases
//! and scenarios as the image stream: feedback at the shipped threshold, calibrate,
//! report-before, a new head trained, gated and rolled out, settle, calibrate the new version,
//! report-after. The devices and the hub start from a 1.0.0 whose head was fitted on other
//! domains only ([`super::start`]), unless `--text-shipped-head`. Printed before the image
//! stream, with its own table and a `loop-text: offload_before=X offload_after=Y
//! accuracy_ratio=Z` line.
//!
//! The stream leaves out every sentence of the shipped test set (the gate's original set) and
//! of the replay set (the new head is fitted on it): no report input is one a loop fit or the
//! gate saw.

use super::stream::Item;
use super::{Args, report};
use anyhow::Context as _;
use bytes::Bytes;
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;
use tandem_shared::wire::{self, DEFAULT_MAX_FRAME_BYTES, Message, encode_to_vec};

/// The text model the loop runs on.
pub const MODEL: &str = "text-sentiment";

/// Which streams `tandem-bench loop` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Streams {
    /// The text stream ([`MODEL`] on VADER domains).
    Text,
    /// The image stream (Fashion-MNIST under a camera-like shift).
    Image,
    /// Both: text first, then the image stream (whose `loop:` line stays the last line).
    All,
}

impl Streams {
    /// Whether the text stream runs.
    pub fn text(self) -> bool {
        matches!(self, Streams::Text | Streams::All)
    }

    /// Whether the image stream runs.
    pub fn image(self) -> bool {
        matches!(self, Streams::Image | Streams::All)
    }
}

/// The text stream's options.
#[derive(Debug, Clone, clap::Args)]
pub struct TextArgs {
    /// Which streams run.
    #[arg(long, value_enum, default_value = "all")]
    pub stream: Streams,
    /// Domains of the VADER sentences the text stream is made of (comma-separated, files
    /// `bench/data/loop-text/<domain>.jsonl`).
    #[arg(long, default_value = "movies", value_delimiter = ',')]
    pub text_domains: Vec<String>,
    /// Sentences of the text stream's feedback phase.
    #[arg(long, default_value_t = 2400)]
    pub text_feedback: usize,
    /// Sentences of each of the text stream's report phases.
    #[arg(long, default_value_t = 1000)]
    pub text_report: usize,
    /// Sentences of the text stream's settle phase.
    #[arg(long, default_value_t = 2000)]
    pub text_settle: usize,
    /// Domains whose train-split sentences the devices' starting head (1.0.0) is fitted on
    /// (none of the stream's; files `bench/data/loop-text/<domain>.jsonl`).
    #[arg(long, default_value = "tweets,amazon,nyt", value_delimiter = ',')]
    pub text_head_domains: Vec<String>,
    /// Start from the shipped head (fitted on all four domains, the stream's included) instead.
    #[arg(long)]
    pub text_shipped_head: bool,
}

/// The `field` of a JSONL line as a string.
pub(super) fn field(line: &serde_json::Value, field: &str) -> anyhow::Result<String> {
    line[field]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("a line without `{field}`"))
}

/// The lines of a JSONL file.
pub(super) fn lines(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let body = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| path.display().to_string()))
        .collect()
}

/// The stream: the sentences of `domains` without the shipped test and replay sentences, in
/// a seeded order (Fisher-Yates); the class labels.
pub fn load(
    repo: &Path,
    domains: &[String],
    seed: u64,
) -> anyhow::Result<(Vec<String>, Vec<Item>)> {
    let dir = repo.join("models").join(MODEL);
    let (labels, _) = tandem_hub::eval::dataset::labels(&dir)?;
    // The gate's original set and the replay set, as the hub reads them.
    let test = tandem_hub::eval::dataset::shipped(&dir, 0)?;
    let replay = tandem_hub::eval::dataset::replay(&dir, 0)?;
    let left_out: HashSet<&str> = test
        .items
        .iter()
        .chain(replay.iter().flat_map(|r| &r.items))
        .filter_map(|i| match &i.input {
            tandem_hub::eval::dataset::Payload::Text(t) => Some(t.as_str()),
            tandem_hub::eval::dataset::Payload::Image(_) => None,
        })
        .collect();
    let mut items = Vec::new();
    for d in domains {
        let path = repo.join("bench/data/loop-text").join(format!("{d}.jsonl"));
        for l in lines(&path)? {
            // build_text.py's split: the shipped test set is the gate's original set.
            let (text, label) = (field(&l, "text")?, field(&l, "label")?);
            if field(&l, "split")? == "test" || left_out.contains(text.as_str()) {
                continue;
            }
            let truth = labels
                .iter()
                .position(|x| *x == label)
                .with_context(|| format!("{}: label {label}", path.display()))?;
            items.push(Item {
                body: Bytes::from(text),
                truth,
            });
        }
    }
    super::stream::shuffle(&mut items, seed);
    Ok((labels, items))
}

/// The wire frame an agent would send the hub for `body` of `model` (a sentence for
/// [`MODEL`], an image otherwise).
pub fn frame_bytes(model: &str, request_id: u64, body: &[u8]) -> usize {
    if model != MODEL {
        return crate::cascade::frame_bytes(model, request_id, body);
    }
    let msg = Message::InferRequest {
        request_id,
        model: model.into(),
        model_version: None,
        deadline_ms: 0,
        input: wire::Input::Text(String::from_utf8_lossy(body).into_owned()),
    };
    encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES).map_or(0, |f| f.len())
}

/// Runs the text stream's scenarios and prints its table, details and `loop-text` lines.
pub fn run(repo: &Path, a: &Args) -> anyhow::Result<()> {
    let t = &a.text;
    let (labels, items) = load(repo, &t.text_domains, a.seed)?;
    let need = t.text_feedback + 2 * t.text_report + t.text_settle;
    anyhow::ensure!(
        need <= items.len(),
        "the text phases need {need} sentences, the domains {:?} hold {}",
        t.text_domains,
        items.len()
    );
    let (fb, rest) = items.split_at(t.text_feedback);
    let (before, rest) = rest.split_at(t.text_report);
    let (settle, rest) = rest.split_at(t.text_settle);
    let after = &rest[..t.text_report];
    println!(
        "# tandem-bench loop (text): {MODEL}, VADER sentences of {} ({} of them outside the shipped test and replay sets; seed {}), {} devices; phases: feedback {}, report-before {r}, settle {}, report-after {r} (disjoint)",
        t.text_domains.join("+"),
        items.len(),
        a.seed,
        a.devices,
        t.text_feedback,
        t.text_settle,
        r = t.text_report,
    );
    let start = if t.text_shipped_head {
        None
    } else {
        let s = super::start::build(
            repo,
            &t.text_head_domains,
            &t.text_domains,
            &[before, after],
        )?;
        println!("# {}", s.summary);
        Some(s)
    };
    let models = start
        .as_ref()
        .map_or_else(|| repo.join("models"), |s| s.models.clone());
    let clock = Instant::now();
    let cloud_before = super::stream::cloud_answers(repo, MODEL, before)?;
    let cloud_after = super::stream::cloud_answers(repo, MODEL, after)?;
    eprintln!(
        "text: cloud-only answers in {:.0} s",
        clock.elapsed().as_secs_f64()
    );
    let scenarios = super::scenarios(
        &models,
        a,
        MODEL,
        &items,
        &labels,
        [fb, before, settle, after],
        [&cloud_before, &cloud_after],
    )?;
    report::print(a, &scenarios, None, true);
    println!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `text` of every line of a JSONL file of `{"text", ...}` objects.
    fn texts_of(path: &Path) -> anyhow::Result<HashSet<String>> {
        lines(path)?.iter().map(|l| field(l, "text")).collect()
    }

    #[test]
    fn the_stream_leaves_out_the_test_and_replay_sentences() {
        let repo = crate::procs::repo().expect("repo");
        let domains = ["movies".to_string()];
        let (labels, items) = load(&repo, &domains, 13).expect("loads");
        assert_eq!(labels, ["negative", "positive"]);
        let dir = repo.join("models").join(MODEL).join("data");
        let test = texts_of(&dir.join("sentences-test.jsonl")).expect("test");
        let replay = texts_of(&dir.join("sentences-replay.jsonl")).expect("replay");
        let body =
            std::fs::read_to_string(repo.join("bench/data/loop-text/movies.jsonl")).expect("file");
        let train_lines = body
            .lines()
            .filter(|l| l.contains("\"split\": \"train\""))
            .count();
        assert!(
            items.len() > 1000 && items.len() < train_lines,
            "{}",
            items.len()
        );
        let mut seen = HashSet::new();
        for it in &items {
            let s = std::str::from_utf8(&it.body).expect("utf-8").to_string();
            assert!(!test.contains(&s) && !replay.contains(&s), "{s}");
            assert!(seen.insert(s), "a sentence twice");
        }
        let (_, again) = load(&repo, &domains, 13).expect("loads");
        assert!(items.iter().zip(&again).all(|(a, b)| a.body == b.body));
        let frame = frame_bytes(MODEL, 1, &items[0].body);
        assert!(frame > items[0].body.len() && frame < items[0].body.len() + 64);
    }
}
