//! The head's input features of a labelled set, computed by the current edge model itself: a
//! scratch copy of the model folder whose graph also outputs the head's feature tensor
//! (declared in its manifest as a `raw` output), run by the real engine (ONNX Runtime, the
//! engine's own decoders and tokenizer: the pipeline devices run).

use super::TrainError;
use super::graph::{self, Head};
use crate::eval::dataset::{Payload, engine_input};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tandem_engine::Engine;
use tandem_engine::settings::EngineSettings;
use tandem_shared::oip::TensorData;

/// A model folder's parts the trainer reads: its manifest as JSON (from `manifest.json`, or
/// `bundle.json` for a registry bundle) and the edge graph.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Value,
    /// The edge variant's ONNX file.
    pub onnx: Vec<u8>,
    /// Its file name in the folder.
    pub onnx_file: String,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the model folder `dir`.
pub fn read_folder(dir: &Path) -> Result<ModelFolder, TrainError> {
    let manifest = if dir.join("manifest.json").is_file() {
        let p = dir.join("manifest.json");
        serde_json::from_slice(&std::fs::read(&p).map_err(io(&p))?)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", p.display())))?
    } else {
        let p = dir.join(tandem_shared::bundle::BUNDLE_FILE);
        let doc: Value = serde_json::from_slice(&std::fs::read(&p).map_err(io(&p))?)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", p.display())))?;
        doc["manifest"].clone()
    };
    let onnx_file = manifest["variants"]["edge"]["file"]
        .as_str()
        .ok_or_else(|| TrainError::Invalid(format!("{}: no edge variant", dir.display())))?
        .to_string();
    let p = dir.join(&onnx_file);
    let onnx = std::fs::read(&p).map_err(io(&p))?;
    Ok(ModelFolder {
        dir: dir.to_path_buf(),
        manifest,
        onnx,
        onnx_file,
    })
}

/// Copies the files the edge variant needs (labels, tokenizer) from `from` to `to`.
pub fn copy_support_files(manifest: &Value, from: &Path, to: &Path) -> Result<(), TrainError> {
    let edge = &manifest["variants"]["edge"];
    for rel in [
        manifest["labels"].as_str(),
        edge["preprocess"]["tokenizer"].as_str(),
    ]
    .into_iter()
    .flatten()
    {
        tandem_engine::bundle::copy_file(from, to, rel)?;
    }
    Ok(())
}

/// Writes `manifest` into `dir` with the version `version`, the edge variant's ONNX file
/// `onnx` (and `extra_output` among its outputs: then the edge variant alone) and the sha256
/// of the files the folder holds (the other entries kept: another variant's files).
pub fn write_model(
    dir: &Path,
    manifest: &Value,
    version: &str,
    onnx: &[u8],
    extra_output: Option<Value>,
) -> Result<Value, TrainError> {
    let mut m = manifest.clone();
    m["version"] = json!(version);
    if extra_output.is_some()
        && let Some(v) = m["variants"].as_object_mut()
    {
        v.retain(|k, _| k == "edge");
    }
    if let Some(out) = extra_output
        && let Some(list) = m["variants"]["edge"]["outputs"].as_array_mut()
    {
        list.push(out);
    }
    let file = m["variants"]["edge"]["file"]
        .as_str()
        .unwrap_or("edge.onnx")
        .to_string();
    tandem_engine::bundle::write_synced(&dir.join(&file), onnx)?;
    let mut files = m["files"].as_object().cloned().unwrap_or_default();
    let edge = &m["variants"]["edge"];
    for rel in [
        Some(file.as_str()),
        m["labels"].as_str(),
        edge["preprocess"]["tokenizer"].as_str(),
    ]
    .into_iter()
    .flatten()
    {
        let sha = tandem_engine::model::sha256_file(&dir.join(rel))
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        files.insert(rel.to_string(), json!(sha));
    }
    m["files"] = Value::Object(files);
    m.as_object_mut().map(|o| o.remove("cascade"));
    let text = serde_json::to_vec_pretty(&m).map_err(|e| TrainError::Invalid(e.to_string()))?;
    tandem_engine::bundle::write_synced(&dir.join("manifest.json"), &text)?;
    Ok(m)
}

/// An engine serving only the model folder `dir` as model `name` on its edge variant (through
/// a link in a scratch folder when the folder has another name, e.g. a registry bundle).
pub fn engine_on(settings: &EngineSettings, dir: &Path, name: &str) -> Result<Engine, TrainError> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
    let direct = dir.file_name().and_then(|n| n.to_str()) == Some(name);
    let scratch = std::env::temp_dir().join(format!(
        "tandem-train-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let models = match dir.parent() {
        Some(p) if direct => p.to_path_buf(),
        _ => {
            std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
            link(&dir, &scratch.join(name))?;
            scratch.clone()
        }
    };
    let mut s = settings.clone();
    s.models.dir = models;
    s.models.enabled = vec![name.to_string()];
    s.models.variant = "edge".into();
    s.engine.workers = 1;
    let started = tandem_engine::engine::start(&s, Default::default());
    if !direct {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let (_, engine) = started.map_err(|e| TrainError::Engine(e.to_string()))?;
    Ok(engine)
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) -> Result<(), TrainError> {
    std::os::unix::fs::symlink(target, at).map_err(io(at))
}

#[cfg(not(unix))]
fn link(_target: &Path, at: &Path) -> Result<(), TrainError> {
    Err(TrainError::Io {
        path: at.to_path_buf(),
        source: std::io::Error::other("serving a differently named folder needs symbolic links"),
    })
}

/// The rows of the FP32 output `name` of each chunk of `inputs` run on `engine`.
pub fn output_rows(
    engine: &Engine,
    model: &str,
    inputs: &[Payload],
    name: &str,
    rows: usize,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(rows.max(1)) {
        let inf = engine
            .infer_blocking(model, engine_input(chunk))
            .map_err(|e| TrainError::Engine(e.to_string()))?;
        let t = inf
            .outputs
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| TrainError::Engine(format!("no output `{name}`")))?;
        let TensorData::F32(d) = &t.data else {
            return Err(TrainError::Engine(format!("output `{name}` is not FP32")));
        };
        let width = d.len() / chunk.len().max(1);
        if width == 0 || width * chunk.len() != d.len() {
            return Err(TrainError::Engine(format!(
                "output `{name}` of shape {:?}",
                t.shape
            )));
        }
        out.extend(d.chunks_exact(width).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// The head's features of `inputs`, computed by the edge model of `model` in a scratch
/// folder under `work` (removed afterwards).
pub fn extract(
    settings: &EngineSettings,
    model: &ModelFolder,
    head: &Head,
    inputs: &[Payload],
    work: &Path,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let name = model.manifest["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dir = work.join("features").join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let result = (|| {
        copy_support_files(&model.manifest, &model.dir, &dir)?;
        let exposed = graph::expose(&model.onnx, &head.feature, head.dim)?;
        let version = model.manifest["version"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let out = json!({"name": head.feature, "dtype": "float32", "shape": [-1, head.dim], "kind": "raw"});
        write_model(&dir, &model.manifest, &version, &exposed, Some(out))?;
        let engine = engine_on(settings, &dir, &name)?;
        let rows = output_rows(
            &engine,
            &name,
            inputs,
            &head.feature,
            settings.engine.max_rows_per_request,
        );
        engine.shutdown();
        rows
    })();
    let _ = std::fs::remove_dir_all(work.join("features"));
    result
}
