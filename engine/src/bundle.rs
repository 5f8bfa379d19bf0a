//! Bundle folders on disk (docs/bundle.md): reads what `tandem_shared::bundle::verify` checks
//! (the bytes of `bundle.json` and `bundle.sig`, the sha256 of every other file) and copies a
//! bundle's files. The agent installs with it, the hub's registry stores with it.

use crate::model::{ModelError, sha256_file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tandem_shared::bundle::{
    BUNDLE_FILE, BundleInput, MAX_BUNDLE_JSON_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE_FILE,
};

/// Most files a bundle folder may hold.
pub const MAX_FILES: usize = 4096;
/// Deepest folder nesting in a bundle.
pub const MAX_DEPTH: usize = 8;

/// A bundle folder that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// A file or folder cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// No `bundle.json`.
    #[error("{0} holds no bundle.json")]
    NoDescription(PathBuf),
    /// `bundle.json` or `bundle.sig` is larger than allowed.
    #[error("{path} is {len} bytes, more than {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// Something that is not a plain file or folder (a link, a device), a name that is not
    /// UTF-8, or too many files or levels.
    #[error("{path}: {why}")]
    Refused {
        /// The path.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FolderError + '_ {
    move |source| FolderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a bundle folder holds, ready for `verify`.
#[derive(Debug, Clone)]
pub struct BundleFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The bytes of `bundle.json`.
    pub bundle_json: Vec<u8>,
    /// The bytes of `bundle.sig`, when present.
    pub signature: Option<Vec<u8>>,
    /// Every other file: relative path (`/`-separated) → sha256, lowercase hex.
    pub files: BTreeMap<String, String>,
}

impl BundleFolder {
    /// The input `tandem_shared::bundle::verify` takes.
    pub fn input(&self) -> BundleInput<'_> {
        BundleInput {
            bundle_json: &self.bundle_json,
            signature: self.signature.as_deref(),
            files: &self.files,
        }
    }
}

/// Reads a bundle folder: `bundle.json`, `bundle.sig` (if any), and the sha256 of every other
/// file. Links and special files are refused, not followed.
pub fn read_folder(dir: &Path) -> Result<BundleFolder, FolderError> {
    let bundle_json = read_limited(&dir.join(BUNDLE_FILE), MAX_BUNDLE_JSON_BYTES)?
        .ok_or_else(|| FolderError::NoDescription(dir.to_path_buf()))?;
    let signature = read_limited(&dir.join(SIGNATURE_FILE), MAX_SIGNATURE_BYTES)?;
    let mut files = BTreeMap::new();
    walk(dir, dir, 0, &mut files)?;
    Ok(BundleFolder {
        dir: dir.to_path_buf(),
        bundle_json,
        signature,
        files,
    })
}

fn read_limited(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, FolderError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    if !meta.is_file() {
        return Err(FolderError::Refused {
            path: path.to_path_buf(),
            why: "not a plain file",
        });
    }
    if meta.len() > limit as u64 {
        return Err(FolderError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
            limit,
        });
    }
    std::fs::read(path).map(Some).map_err(io(path))
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut BTreeMap<String, String>,
) -> Result<(), FolderError> {
    if depth > MAX_DEPTH {
        return Err(FolderError::Refused {
            path: dir.to_path_buf(),
            why: "folders nested too deep",
        });
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let path = e.path();
        let kind = e.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            walk(root, &path, depth + 1, out)?;
            continue;
        }
        if !kind.is_file() {
            return Err(FolderError::Refused {
                path,
                why: "not a plain file (links are not followed)",
            });
        }
        let rel = relative(root, &path)?;
        if depth == 0 && (rel == BUNDLE_FILE || rel == SIGNATURE_FILE) {
            continue;
        }
        if out.len() >= MAX_FILES {
            return Err(FolderError::Refused {
                path,
                why: "too many files",
            });
        }
        let sha = sha256_file(&path).map_err(|e| match e {
            ModelError::Read { path, source } => FolderError::Io { path, source },
            other => FolderError::Io {
                path: path.clone(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        out.insert(rel, sha);
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> Result<String, FolderError> {
    let refused = |why| FolderError::Refused {
        path: path.to_path_buf(),
        why,
    };
    let rel = path
        .strip_prefix(root)
        .map_err(|_| refused("outside the bundle"))?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Ok(parts.ok_or_else(|| refused("name is not UTF-8"))?.join("/"))
}

/// Copies `rel` from `from` into `to` (folders made as needed) and syncs it to disk.
pub fn copy_file(from: &Path, to: &Path, rel: &str) -> Result<u64, FolderError> {
    let (src, dst) = (from.join(rel), to.join(rel));
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let n = std::fs::copy(&src, &dst).map_err(io(&src))?;
    std::fs::File::open(&dst)
        .and_then(|f| f.sync_all())
        .map_err(io(&dst))?;
    Ok(n)
}

/// Writes `bytes` to `path` and syncs it to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), FolderError> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Syncs a folder's entries (after a rename into it).
pub fn sync_dir(dir: &Path) -> Result<(), FolderError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}
