//! The registry's store: every pushed bundle, signed, under `registry_dir/<model>/<version>/`.
//!
//! Layout: `<model>/<version>/bundle/` is the signed bundle exactly as devices download it
//! (`bundle.json`, `bundle.sig`, the files), `<model>/<version>/entry.json` what `list` shows.
//! A push is staged in `registry_dir/.staging/` and renamed into place in one step, so a
//! version is either absent or complete, and two pushes of one version cannot both land.
//!
//! The folder tree is the index (no database): `tandem-hub models push` runs while the hub
//! serves, and a sled database is locked by the one process that opens it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tandem_engine::bundle::{self as folder, FolderError};
use tandem_shared::bundle::{
    self, BUNDLE_FILE, BundleError, BundleSigner, KeyError, ModelVersion, SIGNATURE_FILE,
};

/// What `list` shows of one stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// `image-classification`, `text-classification`.
    pub task: String,
    /// sha256 of the signed `bundle.json`: identifies the content.
    pub digest: String,
    /// The signing key's id.
    pub key_id: String,
    /// Bytes of all the bundle's files (what a device downloads).
    pub bytes: u64,
    /// Number of files, `bundle.json` and `bundle.sig` included.
    pub files: usize,
    /// When it was pushed, RFC 3339.
    pub pushed_at: String,
}

/// The outcome of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Stored as a new version.
    Stored(Entry),
    /// The same content was already stored under this version: nothing changed.
    Unchanged(Entry),
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The bundle folder cannot be read.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// The bundle is invalid.
    #[error("{0}")]
    Bundle(#[from] BundleError),
    /// The version exists with other content.
    #[error(
        "{model} {version} is already in the registry with other content (digest {stored}, this bundle {pushed}): give the new content a new version"
    )]
    Exists {
        /// Model.
        model: String,
        /// Version.
        version: String,
        /// Digest of the stored `bundle.json`.
        stored: String,
        /// Digest of the pushed one.
        pushed: String,
    },
    /// The signing key cannot be read.
    #[error("signing key {path}: {message}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A registry file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// The engine could not record the self-tests' answers (`models pack`).
    #[error("recording the self-tests with the engine: {0}")]
    Engine(String),
    /// A model name, version or bundle file path from a request that cannot name a stored
    /// file (`..`, an absolute path, characters a manifest does not allow).
    #[error("{what} `{value}` is not valid: {rule}")]
    InvalidName {
        /// `model name`, `version` or `file path`.
        what: &'static str,
        /// What the request said (cut to 64 characters).
        value: String,
        /// What a valid one looks like.
        rule: &'static str,
    },
    /// A stored entry is unreadable.
    #[error("{path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the hub's model-signing key (`signing.key` in the PKI folder, PKCS#8 PEM).
pub fn load_signer(pki_dir: &Path) -> Result<BundleSigner, RegistryError> {
    let path = pki_dir.join("signing.key");
    let key_err = |message: String| RegistryError::Key {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        key_err(format!(
            "{e} (create the PKI with `tandem-hub init --dir {}`)",
            pki_dir.display()
        ))
    })?;
    BundleSigner::from_pkcs8_pem(&text).map_err(|e: KeyError| key_err(e.to_string()))
}

/// The registry folder.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Registry {
    /// Opens (creating) the registry folder.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The signed bundle folder of a stored version (what devices download).
    pub fn bundle_dir(&self, model: &str, version: &str) -> PathBuf {
        self.dir.join(model).join(version).join("bundle")
    }

    /// Validates a bundle folder (manifest, self-tests, every file's sha256, nothing
    /// unlisted), writes `bundle.json` in canonical form, signs it and stores it. A `bundle.sig`
    /// already in the folder is ignored: the registry signs what it stores.
    pub fn push(&self, src: &Path, signer: &BundleSigner) -> Result<Pushed, RegistryError> {
        let read = folder::read_folder(src)?;
        let canonical = bundle::canonicalize(&read.bundle_json)?;
        let (doc, files) = bundle::inspect(&canonical, &read.files, None)?;
        let (model, version) = (doc.manifest.name.clone(), doc.manifest.version.clone());
        let digest = bundle::sha256_hex(&canonical);
        if let Some(stored) = self.get(&model, &version)? {
            return if stored.digest == digest {
                Ok(Pushed::Unchanged(stored))
            } else {
                Err(RegistryError::Exists {
                    model,
                    version,
                    stored: stored.digest,
                    pushed: digest,
                })
            };
        }
        let sig = signer.sign(&canonical);
        let sig_bytes = serde_json::to_vec_pretty(&sig).map_err(|e| RegistryError::Corrupt {
            path: src.join(SIGNATURE_FILE),
            message: e.to_string(),
        })?;
        let staging = self.dir.join(".staging").join(format!(
            "{model}-{version}-{}-{}",
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let out = staging.join("bundle");
        let mut bytes = (canonical.len() + sig_bytes.len()) as u64;
        for rel in &files {
            bytes += folder::copy_file(src, &out, rel)?;
        }
        folder::write_synced(&out.join(BUNDLE_FILE), &canonical)?;
        folder::write_synced(&out.join(SIGNATURE_FILE), &sig_bytes)?;
        let entry = Entry {
            model: model.clone(),
            version: version.clone(),
            task: serde_json::to_value(doc.manifest.task)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            digest,
            key_id: sig.key_id,
            bytes,
            files: files.len() + 2,
            pushed_at: now_rfc3339(),
        };
        let entry_json = serde_json::to_vec_pretty(&entry).map_err(|e| RegistryError::Corrupt {
            path: staging.join("entry.json"),
            message: e.to_string(),
        })?;
        folder::write_synced(&staging.join("entry.json"), &entry_json)?;
        let model_dir = self.dir.join(&model);
        std::fs::create_dir_all(&model_dir).map_err(io(&model_dir))?;
        let target = model_dir.join(&version);
        let landed = std::fs::rename(&staging, &target);
        if landed.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        match landed {
            Ok(()) => {
                folder::sync_dir(&model_dir)?;
                tracing::info!(model = %entry.model, version = %entry.version, digest = %entry.digest, "bundle stored");
                Ok(Pushed::Stored(entry))
            }
            // Another push of this version landed first: same content or a conflict.
            Err(_) if target.exists() => match self.get(&model, &version)? {
                Some(stored) if stored.digest == entry.digest => Ok(Pushed::Unchanged(stored)),
                Some(stored) => Err(RegistryError::Exists {
                    model,
                    version,
                    stored: stored.digest,
                    pushed: entry.digest,
                }),
                None => Err(RegistryError::Corrupt {
                    path: target,
                    message: "a version folder without entry.json".into(),
                }),
            },
            Err(e) => Err(io(&target)(e)),
        }
    }

    /// Checks a model name and version before either touches the disk: the one check every
    /// lookup by name does ([`Registry::get`], downloads over QUIC).
    pub fn check_names(model: &str, version: &str) -> Result<(), RegistryError> {
        let invalid = |what, value: &str, rule| RegistryError::InvalidName {
            what,
            value: value.chars().take(64).collect(),
            rule,
        };
        if !valid_model_name(model) {
            return Err(invalid(
                "model name",
                model,
                "lowercase ASCII letters, digits and `-`",
            ));
        }
        if ModelVersion::parse(version).is_none() {
            return Err(invalid(
                "version",
                version,
                "dot-separated numbers such as 1.0.2",
            ));
        }
        Ok(())
    }

    /// Checks a file path inside a bundle (a download's `ChunkRequest`): relative, `/`
    /// separated, no empty, `.` or `..` component, no backslash.
    pub fn check_file_path(path: &str) -> Result<(), RegistryError> {
        let ok = !path.is_empty()
            && !path.starts_with('/')
            && !path.contains('\\')
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if ok {
            Ok(())
        } else {
            Err(RegistryError::InvalidName {
                what: "file path",
                value: path.chars().take(64).collect(),
                rule: "a relative path inside the bundle, without `.` or `..`",
            })
        }
    }

    /// One stored version (`None` for names [`Registry::check_names`] refuses).
    pub fn get(&self, model: &str, version: &str) -> Result<Option<Entry>, RegistryError> {
        if Self::check_names(model, version).is_err() {
            return Ok(None);
        }
        let path = self.dir.join(model).join(version).join("entry.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| RegistryError::Corrupt {
                path,
                message: e.to_string(),
            })
    }

    /// Every stored version, by model, oldest version first.
    pub fn list(&self) -> Result<Vec<Entry>, RegistryError> {
        let mut out = Vec::new();
        for model in sorted_names(&self.dir)? {
            if !valid_model_name(&model) {
                continue;
            }
            let mut versions: Vec<(ModelVersion, String)> = sorted_names(&self.dir.join(&model))?
                .into_iter()
                .filter_map(|v| ModelVersion::parse(&v).map(|p| (p, v)))
                .collect();
            versions.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, v) in versions {
                if let Some(e) = self.get(&model, &v)? {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }
}

/// Model names as the manifest allows them (no `.staging`, no path tricks).
fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn sorted_names(dir: &Path) -> Result<Vec<String>, RegistryError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
