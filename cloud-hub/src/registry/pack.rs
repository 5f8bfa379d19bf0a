//! `tandem-hub models pack`: makes an (unsigned) bundle from a model folder of the repository
//! (`models/<name>`): the device variant's files, labels and tokenizer, the other variants'
//! descriptions marked `optional` (the hub serves them; the agent reads their output specs),
//! and self-tests from `testdata/expected.json` (image inputs copied under `selftest/`).

use super::store::RegistryError;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use tandem_engine::bundle as folder;
use tandem_engine::model;
use tandem_shared::bundle::{self, BUNDLE_FILE, BUNDLE_VERSION, DEFAULT_TOLERANCE};
use tandem_shared::manifest::{Manifest, Preprocess, VariantRole};

/// What to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The variant devices run.
    pub role: VariantRole,
    /// The bundle's version (default: the manifest's).
    pub version: Option<String>,
    /// Score tolerance of the self-tests.
    pub tolerance: f64,
    /// Most self-tests taken from `testdata/expected.json`.
    pub max_selftests: usize,
    /// Record the self-tests' expected answers with the engine on these settings (runtime,
    /// providers); `None`: the scores of `testdata/expected.json` as they are.
    pub record: Option<tandem_engine::settings::EngineSettings>,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            role: VariantRole::Edge,
            version: None,
            tolerance: DEFAULT_TOLERANCE,
            max_selftests: 10,
            record: None,
        }
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> RegistryError {
    RegistryError::Corrupt {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_json(path: &Path) -> Result<Value, RegistryError> {
    let text = std::fs::read(path).map_err(|source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| invalid(path, e.to_string()))
}

/// Packs `model_dir` into the new folder `out`; returns the bundle's description.
pub fn pack(model_dir: &Path, out: &Path, opts: &PackOptions) -> Result<Value, RegistryError> {
    if out.exists() {
        return Err(invalid(out, "already exists: pack into a new folder"));
    }
    let manifest_path = model_dir.join("manifest.json");
    let mut raw = read_json(&manifest_path)?;
    let typed: Manifest =
        serde_json::from_value(raw.clone()).map_err(|e| invalid(&manifest_path, e.to_string()))?;
    let role = opts.role.as_str();
    let variant = typed
        .variants
        .get(&opts.role)
        .ok_or_else(|| invalid(&manifest_path, format!("no {role} variant")))?;
    // Files the device needs, checked against the source manifest before they are copied.
    let mut shipped: BTreeSet<String> = [variant.file.clone(), typed.labels.clone()].into();
    if let Preprocess::Text(t) = &variant.preprocess {
        shipped.insert(t.tokenizer.clone());
    }
    let (selftests, inputs) = selftests(model_dir, &typed, opts)?;
    let mut files = serde_json::Map::new();
    for rel in &shipped {
        let sha = model::sha256_file(&model_dir.join(rel))
            .map_err(|e| invalid(model_dir, e.to_string()))?;
        if typed.files.get(rel).is_some_and(|want| *want != sha) {
            return Err(invalid(
                &model_dir.join(rel),
                "does not match its sha256 in manifest.json",
            ));
        }
        folder::copy_file(model_dir, out, rel)?;
        files.insert(rel.clone(), json!(sha));
    }
    for (src, dst) in &inputs {
        let bytes = std::fs::read(model_dir.join(src)).map_err(|source| RegistryError::Io {
            path: model_dir.join(src),
            source,
        })?;
        folder::write_synced(&out.join(dst), &bytes)?;
        files.insert(dst.clone(), json!(bundle::sha256_hex(&bytes)));
    }
    // Other variants: described, optional, their file's sha kept (the hub's copy).
    let variants = raw["variants"]
        .as_object_mut()
        .ok_or_else(|| invalid(&manifest_path, "no variants"))?;
    for (name, v) in variants.iter_mut() {
        if name != role {
            v["optional"] = json!(true);
            let tokenizer = v.pointer("/preprocess/tokenizer").and_then(Value::as_str);
            for f in [v["file"].as_str(), tokenizer].into_iter().flatten() {
                if let Some(sha) = typed.files.get(f) {
                    files.entry(f.to_string()).or_insert(json!(sha));
                }
            }
        }
    }
    raw["files"] = Value::Object(files);
    if let Some(v) = &opts.version {
        raw["version"] = json!(v);
    }
    let doc = json!({"bundle_version": BUNDLE_VERSION, "manifest": raw, "selftests": selftests});
    let bytes = bundle::canonical_json(&doc);
    folder::write_synced(&out.join(BUNDLE_FILE), &bytes)?;
    if let Some(settings) = &opts.record {
        super::record::record_expectations(out, settings)?;
    }
    // The same checks a push makes, so a bad pack fails here.
    let read = folder::read_folder(out)?;
    bundle::inspect(&read.bundle_json, &read.files, Some(opts.role))?;
    serde_json::from_slice(&read.bundle_json).map_err(|e| invalid(out, e.to_string()))
}

/// An input file to copy: (path in the model folder, path in the bundle).
type Copy = (String, String);

/// Self-tests for the variant from `testdata/expected.json`, and the input files to copy
/// (source path, path in the bundle).
fn selftests(
    model_dir: &Path,
    m: &Manifest,
    opts: &PackOptions,
) -> Result<(Vec<Value>, Vec<Copy>), RegistryError> {
    let path = model_dir.join("testdata/expected.json");
    let expected = read_json(&path)?;
    let cases = expected["cases"]
        .as_array()
        .ok_or_else(|| invalid(&path, "no cases"))?;
    let (mut tests, mut inputs) = (Vec::new(), Vec::new());
    for c in cases
        .iter()
        .filter(|c| c["variant"] == opts.role.as_str())
        .take(opts.max_selftests)
    {
        let mut t = json!({
            "variant": opts.role.as_str(),
            "top1": c["top1"], "top1_index": c["top1_index"], "score": c["score"],
            "tolerance": opts.tolerance,
        });
        match (c["input"].as_str(), c["text"].as_str()) {
            (Some(src), _) => {
                let name = Path::new(src)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| invalid(&path, format!("input `{src}` has no file name")))?;
                let dst = format!("selftest/{name}");
                t["input"] = json!(dst);
                inputs.push((src.to_string(), dst));
            }
            (None, Some(text)) => t["text"] = json!(text),
            (None, None) => return Err(invalid(&path, "a case without input or text")),
        }
        tests.push(t);
    }
    if tests.is_empty() {
        return Err(invalid(
            &path,
            format!("no {} case for model `{}`", opts.role.as_str(), m.name),
        ));
    }
    Ok((tests, inputs))
}
