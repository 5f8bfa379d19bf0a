//! The installed versions on disk, under the models folder:
//!
//! ```text
//! <models.dir>/<model>/manifest.json ...     the shipped version (read-only here)
//! <model>/versions/<version>/                 an installed bundle, as verified (bundle.json,
//!                                             bundle.sig, its files)
//! <model>/current                             the installed version serving (the engine reads
//!                                             it at start: `tandem_engine::model::serving_dir`)
//! <model>/previous                            the version it replaced: the rollback
//! ```
//!
//! A version folder is staged beside the others and renamed into place, so it is either absent
//! or complete; `current` and `previous` are replaced by rename too. Every file is synced before
//! the rename that publishes it.

use super::error::{InstallError, io};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tandem_engine::bundle::{self as folder, BundleFolder};
use tandem_engine::model::CURRENT_FILE;
use tandem_shared::bundle::{BUNDLE_FILE, ModelVersion, SIGNATURE_FILE, VerifiedBundle};

/// The file naming the version a swap replaced.
pub const PREVIOUS_FILE: &str = "previous";
/// The versions rolled back after their watch window, one a line.
pub const ROLLED_BACK_FILE: &str = "rolled_back";

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// The installed versions of every model.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    budget: u64,
    keep: usize,
}

impl Store {
    /// The store in the models folder, within `budget` bytes, keeping `keep` versions a model.
    pub fn new(models_dir: &Path, budget: u64, keep: usize) -> Self {
        Self {
            dir: models_dir.to_path_buf(),
            budget,
            keep: keep.max(2),
        }
    }

    /// The models folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn versions(&self, model: &str) -> PathBuf {
        self.dir.join(model).join("versions")
    }

    /// The folder of an installed version.
    pub fn version_dir(&self, model: &str, version: &str) -> PathBuf {
        self.versions(model).join(version)
    }

    fn pointer(&self, model: &str, file: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(model).join(file)).ok()?;
        let v = text.trim();
        ModelVersion::parse(v).map(|_| v.to_string())
    }

    /// The installed version serving, if one is (else the shipped files serve).
    pub fn current(&self, model: &str) -> Option<String> {
        self.pointer(model, CURRENT_FILE)
    }

    /// The version the last swap replaced.
    pub fn previous(&self, model: &str) -> Option<String> {
        self.pointer(model, PREVIOUS_FILE)
    }

    /// Copies a verified bundle into `versions/<version>/` (the exact bytes of `bundle.json`
    /// and `bundle.sig` that were verified, and its files), making room within the budget.
    /// An identical version already there is reused.
    pub fn place(
        &self,
        read: &BundleFolder,
        verified: &VerifiedBundle,
    ) -> Result<PathBuf, InstallError> {
        let (model, version) = (verified.model(), verified.version());
        let target = self.version_dir(model, version);
        if target.exists() {
            let same = std::fs::read(target.join(BUNDLE_FILE))
                .map(|b| tandem_shared::bundle::sha256_hex(&b) == verified.digest())
                .unwrap_or(false);
            if same {
                return Ok(target);
            }
            if self.current(model).as_deref() == Some(version) {
                return Err(InstallError::Io {
                    path: target,
                    source: std::io::Error::other(
                        "this version is serving with other content; give the bundle a new version",
                    ),
                });
            }
            std::fs::remove_dir_all(&target).map_err(io(&target))?;
        }
        let mut need =
            (read.bundle_json.len() + read.signature.as_ref().map_or(0, Vec::len)) as u64;
        for rel in verified.files() {
            let p = read.dir.join(rel);
            need += std::fs::metadata(&p).map_err(io(&p))?.len();
        }
        self.make_room(need)?;
        let versions = self.versions(model);
        let staging = versions.join(format!(
            ".staging-{version}-{}-{}",
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let copied = (|| {
            for rel in verified.files() {
                folder::copy_file(&read.dir, &staging, rel)?;
            }
            folder::write_synced(&staging.join(BUNDLE_FILE), &read.bundle_json)?;
            if let Some(sig) = &read.signature {
                folder::write_synced(&staging.join(SIGNATURE_FILE), sig)?;
            }
            Ok::<_, InstallError>(())
        })();
        if let Err(e) =
            copied.and_then(|()| std::fs::rename(&staging, &target).map_err(io(&target)))
        {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        folder::sync_dir(&versions)?;
        Ok(target)
    }

    /// Makes `version` the serving one and `previous` the rollback (both by rename).
    pub fn set_current(
        &self,
        model: &str,
        version: &str,
        previous: Option<&str>,
    ) -> Result<(), InstallError> {
        let dir = self.dir.join(model);
        if let Some(p) = previous {
            replace(&dir, PREVIOUS_FILE, p)?;
        }
        replace(&dir, CURRENT_FILE, version)
    }

    /// The shipped model folder (`<models.dir>/<model>/`).
    pub fn shipped_dir(&self, model: &str) -> PathBuf {
        self.dir.join(model)
    }

    /// Forgets the installed version serving: the shipped files serve from the next start.
    pub fn clear_current(&self, model: &str) -> Result<(), InstallError> {
        let path = self.dir.join(model).join(CURRENT_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => folder::sync_dir(&self.dir.join(model)).map_err(Into::into),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Versions of `model` rolled back on this device (`<model>/rolled_back`, one a line).
    pub fn rolled_back(&self, model: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(model).join(ROLLED_BACK_FILE))
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds `version` to the rolled-back list.
    pub fn mark_rolled_back(&self, model: &str, version: &str) -> Result<(), InstallError> {
        let mut all = self.rolled_back(model);
        if !all.iter().any(|v| v == version) {
            all.push(version.to_string());
        }
        replace(&self.dir.join(model), ROLLED_BACK_FILE, &all.join("\n"))
    }

    /// Removes an installed version that was refused (never the current or previous one).
    pub fn discard(&self, model: &str, version: &str) {
        if self.current(model).as_deref() == Some(version)
            || self.previous(model).as_deref() == Some(version)
        {
            return;
        }
        let dir = self.version_dir(model, version);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove a refused version");
        }
    }

    /// Removes the oldest versions of `model` beyond `keep` (never current or previous).
    pub fn prune(&self, model: &str) {
        let mut all = self.installed(model);
        let protected = [self.current(model), self.previous(model)];
        while all.len() > self.keep {
            let Some(i) = all
                .iter()
                .position(|(v, _)| !protected.iter().flatten().any(|p| p == v.as_str()))
            else {
                break;
            };
            let (v, _) = all.remove(i);
            self.discard(model, v.as_str());
        }
    }

    /// Installed versions of a model, oldest version first, with their sizes.
    pub fn installed(&self, model: &str) -> Vec<(ModelVersion, u64)> {
        let Ok(entries) = std::fs::read_dir(self.versions(model)) else {
            return Vec::new();
        };
        let mut out: Vec<(ModelVersion, u64)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = ModelVersion::parse(e.file_name().to_str()?)?;
                Some((v, tree_size(&e.path())))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn models(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().join("versions").is_dir())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bytes the installed versions take.
    pub fn usage(&self) -> u64 {
        self.models()
            .iter()
            .flat_map(|m| self.installed(m))
            .map(|(_, n)| n)
            .sum()
    }

    /// Removes old versions (oldest first, any model; never current or previous) until `need`
    /// more bytes fit in the budget.
    fn make_room(&self, need: u64) -> Result<(), InstallError> {
        let mut used = self.usage();
        if used + need <= self.budget {
            return Ok(());
        }
        for model in self.models() {
            let protected = [self.current(&model), self.previous(&model)];
            for (v, size) in self.installed(&model) {
                if used + need <= self.budget {
                    return Ok(());
                }
                if protected.iter().flatten().any(|p| p == v.as_str()) {
                    continue;
                }
                self.discard(&model, v.as_str());
                used = used.saturating_sub(size);
                tracing::info!(model = %model, version = %v, "old version removed to stay within models.store_max_bytes");
            }
        }
        if used + need <= self.budget {
            Ok(())
        } else {
            Err(InstallError::DiskBudget {
                need,
                free: self.budget.saturating_sub(used),
                budget: self.budget,
            })
        }
    }
}

fn replace(dir: &Path, file: &str, text: &str) -> Result<(), InstallError> {
    let tmp = dir.join(format!(".{file}.tmp"));
    folder::write_synced(&tmp, format!("{text}\n").as_bytes())?;
    let path = dir.join(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    folder::sync_dir(dir)?;
    Ok(())
}

fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::Store;
    use serde_json::json;
    use std::path::Path;
    use tandem_engine::bundle::{BundleFolder, read_folder};
    use tandem_shared::bundle::{self, BundleSigner, Expect, VerifiedBundle};
    use tandem_shared::manifest::VariantRole;

    /// A signed bundle of `version` whose model file is `size` bytes.
    fn bundle(dir: &Path, version: &str, size: usize) -> (BundleFolder, VerifiedBundle) {
        let signer = BundleSigner::from_seed(&[3; 32]);
        let out = dir.join(format!("src-{version}"));
        std::fs::create_dir_all(out.join("selftest")).expect("mkdir");
        let files = [
            ("edge.onnx", vec![7u8; size]),
            ("labels.txt", b"a\nb\n".to_vec()),
            ("selftest/0.png", b"png".to_vec()),
        ];
        for (p, b) in &files {
            std::fs::write(out.join(p), b).expect("write");
        }
        let sha: serde_json::Map<String, serde_json::Value> = files
            .iter()
            .map(|(p, b)| (p.to_string(), json!(bundle::sha256_hex(b))))
            .collect();
        let doc = json!({"bundle_version": 1, "manifest": {
            "manifest_version": 1, "name": "m", "version": version, "task": "image-classification",
            "labels": "labels.txt", "files": sha, "variants": {"edge": {"file": "edge.onnx",
            "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 1, 2, 2]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 2], "kind": "logits"}],
            "preprocess": {"type": "image", "layout": "NCHW", "color": "gray", "width": 2,
            "height": 2, "resize": "stretch", "scale": 1.0, "mean": [0.0], "std": [1.0]}}}},
            "selftests": [{"variant": "edge", "input": "selftest/0.png", "top1": "a",
            "top1_index": 0, "score": 0.9}]});
        let json = bundle::canonical_json(&doc);
        std::fs::write(out.join("bundle.json"), &json).expect("write");
        let sig = serde_json::to_vec(&signer.sign(&json)).expect("sig");
        std::fs::write(out.join("bundle.sig"), sig).expect("write");
        let read = read_folder(&out).expect("read");
        let expect = Expect {
            role: VariantRole::Edge,
            model: None,
            active: None,
            allow_older: true,
        };
        let v = bundle::verify(read.input(), &signer.trusted_key(), &expect).expect("valid");
        (read, v)
    }

    #[test]
    fn old_versions_make_room_but_current_and_previous_stay() {
        let tmp = tempfile::tempdir().expect("tmp");
        let models = tmp.path().join("models");
        let store = Store::new(&models, 25_000, 2);
        for v in ["1.0.1", "1.0.2", "1.0.3"] {
            let (read, verified) = bundle(tmp.path(), v, 10_000);
            store.place(&read, &verified).expect("fits");
            store.set_current("m", v, None).expect("current");
        }
        store
            .set_current("m", "1.0.3", Some("1.0.2"))
            .expect("pointers");
        let left: Vec<String> = store
            .installed("m")
            .into_iter()
            .map(|(v, _)| v.to_string())
            .collect();
        // 3 x 10 kB do not fit in 25 kB: the oldest, neither current nor previous, went.
        assert_eq!(left, ["1.0.2", "1.0.3"]);
        assert!(store.usage() <= 25_000);

        // Too big even after evicting everything that may go.
        let (read, verified) = bundle(tmp.path(), "1.0.4", 20_000);
        let err = store.place(&read, &verified).expect_err("over budget");
        assert_eq!(err.reason(), "disk_budget", "{err}");
        assert!(!store.version_dir("m", "1.0.4").exists());
        assert!(
            std::fs::read_dir(models.join("m/versions"))
                .expect("ls")
                .filter_map(Result::ok)
                .all(|e| !e.file_name().to_string_lossy().starts_with(".staging")),
            "no staging left"
        );
    }

    #[test]
    fn prune_keeps_the_newest_and_the_pointers() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::new(&tmp.path().join("models"), 1 << 30, 2);
        for v in ["1.0.1", "1.0.2", "1.0.3", "1.0.4"] {
            let (read, verified) = bundle(tmp.path(), v, 100);
            store.place(&read, &verified).expect("fits");
        }
        store
            .set_current("m", "1.0.4", Some("1.0.1"))
            .expect("pointers");
        store.prune("m");
        let left: Vec<String> = store
            .installed("m")
            .into_iter()
            .map(|(v, _)| v.to_string())
            .collect();
        assert_eq!(left, ["1.0.1", "1.0.4"]);
    }
}
