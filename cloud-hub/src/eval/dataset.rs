//! Labelled sets an evaluation runs on: a model's shipped test set (the one its manifest's
//! accuracy figure names: Fashion-MNIST's IDX files, a JSONL file of `{text, label}`, or
//! `samples/` whose file names end in the class index) and, from [`super::feedback`], the
//! fleet's examples labelled by corrections or by the cloud model as teacher.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a set cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// A file that is not what it should be.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model names no test set this module reads.
    #[error("model {model}: no shipped test set (manifest accuracy.dataset `{dataset}`)")]
    NoSet {
        /// The model.
        model: String,
        /// What the manifest names.
        dataset: String,
    },
}

/// One input as the engine takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// An encoded image file (PNG/JPEG).
    Image(Bytes),
    /// A text.
    Text(String),
}

/// One engine request of same-kind payloads (those of the first one's kind).
pub fn engine_input(chunk: &[Payload]) -> tandem_engine::Input {
    match chunk.first() {
        Some(Payload::Text(_)) => tandem_engine::Input::Texts(
            chunk
                .iter()
                .filter_map(|p| match p {
                    Payload::Text(t) => Some(t.clone()),
                    Payload::Image(_) => None,
                })
                .collect(),
        ),
        _ => tandem_engine::Input::Images(
            chunk
                .iter()
                .filter_map(|p| match p {
                    Payload::Image(b) => Some(b.clone()),
                    Payload::Text(_) => None,
                })
                .collect(),
        ),
    }
}

/// Where an item's true label comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// The shipped test set's label.
    Dataset,
    /// A person's correction (`POST /v1/feedback` on the agent).
    Correction,
    /// The cloud model's answer (a teacher label: only as good as the cloud model).
    Teacher,
    /// The model's original training data, replayed into a fit (`train.replay_share`).
    Replay,
}

impl LabelSource {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dataset => "dataset",
            Self::Correction => "correction",
            Self::Teacher => "teacher",
            Self::Replay => "replay",
        }
    }
}

/// One labelled item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The input.
    pub input: Payload,
    /// The true class index.
    pub truth: usize,
    /// Where the label comes from.
    pub source: LabelSource,
    /// The device that saw it (feedback only).
    pub device: Option<String>,
    /// When it was answered, milliseconds since the Unix epoch (feedback only).
    pub time_ms: Option<u64>,
}

/// A labelled set.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledSet {
    /// Its name in reports (`shipped:data/sentences-test.jsonl`, `feedback:test`).
    pub name: String,
    /// The model's class labels, in index order.
    pub labels: Vec<String>,
    /// The items.
    pub items: Vec<Item>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format(path: &Path, message: impl Into<String>) -> DatasetError {
    DatasetError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The model's labels (`manifest.json` → `labels`, one per line) and its manifest.
pub fn labels(model_dir: &Path) -> Result<(Vec<String>, serde_json::Value), DatasetError> {
    let path = model_dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format(&path, e.to_string()))?;
    let file = manifest["labels"].as_str().unwrap_or("labels.txt");
    let lpath = model_dir.join(file);
    let labels = std::fs::read_to_string(&lpath)
        .map_err(io(&lpath))?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Ok((labels, manifest))
}

/// The shipped test set of the model in `model_dir`, its first `limit` items (0: all).
pub fn shipped(model_dir: &Path, limit: usize) -> Result<LabelledSet, DatasetError> {
    let (labels, manifest) = labels(model_dir)?;
    let model = manifest["name"].as_str().unwrap_or_default().to_string();
    let dataset = manifest["variants"]
        .as_object()
        .and_then(|v| v.values().find_map(|v| v["accuracy"]["dataset"].as_str()))
        .unwrap_or_default()
        .to_string();
    let limit = if limit == 0 { usize::MAX } else { limit };
    let idx_images = model_dir.join("data/t10k-images-idx3-ubyte.gz");
    let items = if dataset.ends_with(".jsonl") {
        jsonl(&model_dir.join(&dataset), &labels, limit)?
    } else if dataset == "samples" {
        samples(&model_dir.join("samples"), labels.len(), limit)?
    } else if idx_images.is_file() {
        idx(
            &idx_images,
            &model_dir.join("data/t10k-labels-idx1-ubyte.gz"),
            limit,
        )?
    } else {
        return Err(DatasetError::NoSet { model, dataset });
    };
    Ok(LabelledSet {
        name: format!("shipped:{dataset}"),
        labels,
        items,
    })
}

/// Replay files (a sample of the model's original training data, `models/build_replay.py`):
/// Fashion-MNIST-style IDX pairs, or a JSONL file of `{text, label}`. Never a test set.
const REPLAY_IDX: (&str, &str) = (
    "data/replay-images-idx3-ubyte.gz",
    "data/replay-labels-idx1-ubyte.gz",
);
/// The text replay file.
const REPLAY_JSONL: &str = "data/sentences-replay.jsonl";

/// The replay set shipped with the model in `model_dir` (a sample of its original training
/// data), its first `limit` items (0: all), labelled [`LabelSource::Replay`]; `None` when the
/// model ships none.
pub fn replay(model_dir: &Path, limit: usize) -> Result<Option<LabelledSet>, DatasetError> {
    let (labels, _) = labels(model_dir)?;
    let limit = if limit == 0 { usize::MAX } else { limit };
    let (images, jsonl_file) = (model_dir.join(REPLAY_IDX.0), model_dir.join(REPLAY_JSONL));
    let (name, mut items) = if images.is_file() {
        let items = idx(&images, &model_dir.join(REPLAY_IDX.1), limit)?;
        (REPLAY_IDX.0, items)
    } else if jsonl_file.is_file() {
        (REPLAY_JSONL, jsonl(&jsonl_file, &labels, limit)?)
    } else {
        return Ok(None);
    };
    for i in &mut items {
        i.source = LabelSource::Replay;
    }
    Ok(Some(LabelledSet {
        name: format!("replay:{name}"),
        labels,
        items,
    }))
}

fn item(input: Payload, truth: usize) -> Item {
    Item {
        input,
        truth,
        source: LabelSource::Dataset,
        device: None,
        time_ms: None,
    }
}

/// `{"text": ..., "label": "<class label>"}` per line.
fn jsonl(path: &Path, labels: &[String], limit: usize) -> Result<Vec<Item>, DatasetError> {
    #[derive(Deserialize)]
    struct Line {
        text: String,
        label: String,
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if out.len() >= limit {
            break;
        }
        let l: Line =
            serde_json::from_str(line).map_err(|e| format(path, format!("line {}: {e}", n + 1)))?;
        let truth = labels.iter().position(|x| *x == l.label).ok_or_else(|| {
            format(
                path,
                format!("line {}: label `{}` is not a class", n + 1, l.label),
            )
        })?;
        out.push(item(Payload::Text(l.text), truth));
    }
    Ok(out)
}

/// Image files named `<anything>_<class index>.<png|jpg>`, in name order.
fn samples(dir: &Path, classes: usize, limit: usize) -> Result<Vec<Item>, DatasetError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names.into_iter().take(limit) {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let truth = stem
            .rsplit('_')
            .next()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|i| *i < classes)
            .ok_or_else(|| format(&p, "the name does not end in `_<class index>`"))?;
        let bytes = std::fs::read(&p).map_err(io(&p))?;
        out.push(item(Payload::Image(Bytes::from(bytes)), truth));
    }
    Ok(out)
}

fn gunzip(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(io(path))?)
        .read_to_end(&mut out)
        .map_err(io(path))?;
    Ok(out)
}

/// IDX files (gzip): grey images (magic 2051) and their labels (magic 2049), each image given
/// to the engine as a PNG, as a camera would send it.
fn idx(images: &Path, labels: &Path, limit: usize) -> Result<Vec<Item>, DatasetError> {
    let (img, lab) = (gunzip(images)?, gunzip(labels)?);
    let be = |b: &[u8], i: usize| {
        b.get(i * 4..i * 4 + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let (Some(2051), Some(n), Some(rows), Some(cols)) =
        (be(&img, 0), be(&img, 1), be(&img, 2), be(&img, 3))
    else {
        return Err(format(images, "not an IDX image file (magic 2051)"));
    };
    if be(&lab, 0) != Some(2049) || be(&lab, 1) != Some(n) {
        return Err(format(labels, format!("not the IDX labels of {n} images")));
    }
    let size = rows * cols;
    if img.len() < 16 + n * size || lab.len() < 8 + n {
        return Err(format(images, "shorter than its header says"));
    }
    let mut out = Vec::new();
    for i in 0..n.min(limit) {
        let px = img[16 + i * size..16 + (i + 1) * size].to_vec();
        let gray = image::GrayImage::from_raw(cols as u32, rows as u32, px)
            .ok_or_else(|| format(images, "image size"))?;
        let png = super::shift::encode(&super::shift::Pixels::Gray(gray), None)
            .map_err(|e| format(images, e.to_string()))?;
        out.push(item(
            Payload::Image(Bytes::from(png)),
            usize::from(lab[8 + i]),
        ));
    }
    Ok(out)
}
