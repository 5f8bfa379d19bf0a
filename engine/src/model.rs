//! Model folders: read a manifest, check every file the chosen variant needs (presence and
//! sha256) and read its labels, before anything is handed to ONNX Runtime.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tandem_shared::bundle::BUNDLE_FILE;
use tandem_shared::manifest::{Manifest, Preprocess, Variant, VariantRole};

/// Why a model folder cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The models directory cannot be listed.
    #[error("cannot read models directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// No such model in the directory.
    #[error("model `{name}` not found: no {path}")]
    NotFound {
        /// Model name.
        name: String,
        /// The manifest path looked for.
        path: PathBuf,
    },
    /// Manifest unreadable or invalid.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The variant is not in the manifest.
    #[error("model `{name}` has no {role} variant")]
    NoVariant {
        /// Model name.
        name: String,
        /// Role asked for.
        role: &'static str,
    },
    /// A file the variant needs is missing.
    #[error("model file {path} is missing{hint}")]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A file does not match its manifest hash.
    #[error("model file {path} is corrupt: sha256 {actual}, manifest says {expected}")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
}

/// A model variant whose files are present and verified.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The model folder.
    pub dir: PathBuf,
    /// The whole manifest.
    pub manifest: Manifest,
    /// The chosen role.
    pub role: VariantRole,
    /// The chosen variant.
    pub variant: Variant,
    /// Class labels.
    pub labels: Vec<String>,
}

impl ModelFiles {
    /// The ONNX file.
    pub fn onnx_path(&self) -> PathBuf {
        self.dir.join(&self.variant.file)
    }
}

/// Reads and validates `dir/manifest.json`, or, in an installed bundle (no manifest.json), the
/// manifest inside `dir/bundle.json` (its signature was checked when it was installed).
pub fn read_manifest(dir: &Path) -> Result<Manifest, ModelError> {
    let path = dir.join("manifest.json");
    if !path.is_file() && dir.join(BUNDLE_FILE).is_file() {
        let path = dir.join(BUNDLE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| ModelError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let doc = tandem_shared::bundle::parse(&bytes).map_err(|e| ModelError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let problems = doc.manifest.problems();
        if !problems.is_empty() {
            return Err(ModelError::Manifest {
                path,
                message: problems.join("; "),
            });
        }
        return Ok(doc.manifest);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Manifest::from_json(&text).map_err(|e| ModelError::Manifest {
        path,
        message: e.to_string(),
    })
}

/// Names of the model folders (those holding a manifest.json), sorted.
pub fn discover(models_dir: &Path) -> Result<Vec<String>, ModelError> {
    let entries = std::fs::read_dir(models_dir).map_err(|source| ModelError::Dir {
        path: models_dir.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("manifest.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let read_err = |source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read_err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The file in a model folder naming the installed version that serves (the agent's model
/// manager writes it after a swap): `versions/<that version>/` is then the model's folder.
pub const CURRENT_FILE: &str = "current";

/// The folder model `name` is served from: `models_dir/<name>/versions/<v>/` when
/// `models_dir/<name>/current` names an installed version (`v`: digits and dots) with a
/// bundle, else `models_dir/<name>/` (the shipped files).
pub fn serving_dir(models_dir: &Path, name: &str) -> PathBuf {
    let base = models_dir.join(name);
    let Ok(text) = std::fs::read_to_string(base.join(CURRENT_FILE)) else {
        return base;
    };
    let v = text.trim();
    let plausible = !v.is_empty()
        && v.len() <= 64
        && v.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let dir = base.join("versions").join(v);
    if plausible && dir.join(BUNDLE_FILE).is_file() {
        dir
    } else {
        tracing::warn!(model = %name, current = %v, "the installed version named by `current` is unusable; serving the shipped files");
        base
    }
}

/// Opens model `name` under `models_dir` (from [`serving_dir`]), choosing `role`, checking
/// every needed file.
pub fn open(
    models_dir: &Path,
    name: &str,
    role: VariantRole,
    verify: bool,
) -> Result<ModelFiles, ModelError> {
    open_dir(&serving_dir(models_dir, name), name, role, verify)
}

/// Opens the model folder `dir` (its `manifest.json`), choosing `role`, checking every
/// needed file.
pub fn open_dir(
    dir: &Path,
    name: &str,
    role: VariantRole,
    verify: bool,
) -> Result<ModelFiles, ModelError> {
    let dir = dir.to_path_buf();
    if !dir.join("manifest.json").is_file() && !dir.join(BUNDLE_FILE).is_file() {
        return Err(ModelError::NotFound {
            name: name.to_string(),
            path: dir.join("manifest.json"),
        });
    }
    let manifest = read_manifest(&dir)?;
    let variant = manifest
        .variants
        .get(&role)
        .cloned()
        .ok_or(ModelError::NoVariant {
            name: name.to_string(),
            role: role.as_str(),
        })?;
    let mut needed = vec![variant.file.clone(), manifest.labels.clone()];
    if let Preprocess::Text(t) = &variant.preprocess {
        needed.push(t.tokenizer.clone());
    }
    for rel in &needed {
        let path = dir.join(rel);
        if !path.is_file() {
            let hint = if *rel == variant.file {
                format!(
                    " (the {} variant of `{name}` is not in this checkout: `make setup` builds \
                     the uncommitted ones, `make models` rebuilds them all)",
                    role.as_str()
                )
            } else {
                String::new()
            };
            return Err(ModelError::MissingFile { path, hint });
        }
        if verify {
            let expected = manifest.files.get(rel).cloned().unwrap_or_default();
            let actual = sha256_file(&path)?;
            if actual != expected {
                return Err(ModelError::HashMismatch {
                    path,
                    expected,
                    actual,
                });
            }
        }
    }
    let labels_path = dir.join(&manifest.labels);
    let labels = std::fs::read_to_string(&labels_path)
        .map_err(|source| ModelError::Read {
            path: labels_path,
            source,
        })?
        .lines()
        .map(str::to_string)
        .collect();
    Ok(ModelFiles {
        dir,
        manifest,
        role,
        variant,
        labels,
    })
}
