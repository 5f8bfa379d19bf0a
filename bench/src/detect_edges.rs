//! Candidate detectors for `tandem-bench detect --edge NAME` and `--cloud NAME`: the variants
//! of `models/detect-coco-edges/candidates.json` (built by `models/build_detection.py`: the
//! INT8 NanoDet-g at 416 or 512 px or at two scales in one graph; the cloud file's levels
//! without its mirrored ones), measured through the engine in place of detect-coco's shipped
//! edge or cloud variant, in a temporary copy of the model folder.

use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// The folder of the candidates, under the repository.
const FOLDER: &str = "models/detect-coco-edges";

/// One candidate: its manifest variant and the folder holding the files it adds.
pub struct Candidate {
    /// The variant it replaces: `edge` or `cloud`.
    pub role: &'static str,
    /// Its name in candidates.json (`edge-416`).
    pub name: String,
    /// The manifest variant (`variants.<role>` of the copy).
    pub variant: serde_json::Value,
    /// sha256 of the files it adds, by name (in [`Candidate::dir`]).
    pub files: serde_json::Map<String, serde_json::Value>,
    /// Where those files are.
    pub dir: PathBuf,
}

impl Candidate {
    /// `name` of the repository's candidates.json, for `role` (`edge`: its `variants`,
    /// `cloud`: its `clouds`).
    pub fn load(repo: &Path, name: &str, role: &'static str) -> anyhow::Result<Self> {
        let dir = repo.join(FOLDER);
        let path = dir.join("candidates.json");
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
        )?;
        let key = if role == "edge" { "variants" } else { "clouds" };
        let variants = doc[key]
            .as_object()
            .with_context(|| format!("candidates.json: {key}"))?;
        let variant = variants.get(name).cloned().with_context(|| {
            let known: Vec<&str> = variants.keys().map(String::as_str).collect();
            format!("no {role} candidate `{name}` (candidates.json has {known:?})")
        })?;
        Ok(Self {
            role,
            name: name.into(),
            variant,
            files: doc["files"].as_object().cloned().unwrap_or_default(),
            dir,
        })
    }

    /// Puts the candidate into `manifest` (a copy of detect-coco's) as its variant and links
    /// the files it adds into `model_dir` (that copy's folder); an edge keeps the shipped
    /// variant's cascade band, which the bench then overrides.
    pub fn install(
        &self,
        manifest: &mut serde_json::Value,
        model_dir: &Path,
    ) -> anyhow::Result<()> {
        let mut v = self.variant.clone();
        if self.role == "edge" {
            v["detection"]["cascade"] =
                manifest["variants"]["edge"]["detection"]["cascade"].clone();
        }
        manifest["variants"][self.role] = v;
        for (file, sha) in &self.files {
            manifest["files"][file] = sha.clone();
            let link = model_dir.join(file);
            if !link.exists() {
                std::os::unix::fs::symlink(self.dir.join(file), link)?;
            }
        }
        Ok(())
    }

    /// The row's label: `INT8 608+416` from `nanodet-g-608+416`.
    pub fn label(&self) -> String {
        let arch = self.variant["architecture"].as_str().unwrap_or(&self.name);
        let precision = if self.role == "edge" { "INT8" } else { "FP32" };
        format!("{precision} {}", size(arch))
    }
}

/// The size part of an `architecture` (`608+416` of `nanodet-g-608+416`).
pub fn size(arch: &str) -> &str {
    arch.rsplit('-').next().unwrap_or(arch)
}
