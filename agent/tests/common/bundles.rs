//! Signed bundles of the repository's models for update tests: a models folder with the
//! shipped version, a PKI and a registry; [`Fixture::signed`] packs, edits, signs and pushes a
//! version and returns a copy of the signed bundle.

use super::{config, models_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tandem_agent::config::Config;
use tandem_hub::pki::Pki;
use tandem_hub::registry::{PackOptions, Registry, load_signer, pack};
use tandem_shared::bundle::{BUNDLE_FILE, BundleSigner, SIGNATURE_FILE};
use tandem_shared::manifest::VariantRole;

/// The model [`Fixture::new`] uses.
pub const MODEL: &str = "vision-fashion";

/// A models folder, PKI and registry in a temporary folder.
pub struct Fixture {
    /// The model.
    pub model: &'static str,
    /// Everything lives here: `models/`, `pki/`, `registry/`, the packed and signed copies.
    pub dir: tempfile::TempDir,
    /// An agent config over `models/` (edge variant, CPU), trusting the PKI's signing key.
    pub cfg: Config,
    /// The hub's registry.
    pub registry: Registry,
    /// The hub's bundle signer.
    pub signer: BundleSigner,
    /// The variant packed (default: edge).
    pub role: VariantRole,
    /// Bundles packed so far (names the folders).
    packs: AtomicUsize,
}

impl Fixture {
    /// A models folder with the shipped vision-fashion 1.0.0, a PKI and a registry.
    pub fn new() -> Self {
        Self::of(MODEL, &["manifest.json", "edge.onnx", "labels.txt"])
    }

    /// The same for `model`, with its shipped `files`.
    pub fn of(model: &'static str, files: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let models = dir.path().join("models");
        let src = models_dir().join(model);
        for f in files {
            let to = models.join(model).join(f);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(src.join(f), to).expect("copy");
        }
        let pki = dir.path().join("pki");
        Pki::init(&pki).expect("pki");
        let mut cfg = config(&[model], "edge", &["cpu"]);
        cfg.base_dir = dir.path().to_path_buf();
        cfg.models.dir = PathBuf::from("models");
        cfg.models.trusted_key = "pki/signing.pub".into();
        cfg.models.selftest_runs = 2;
        let registry = Registry::open(&dir.path().join("registry")).expect("registry");
        let signer = load_signer(&pki).expect("signer");
        Self {
            model,
            dir,
            cfg,
            registry,
            signer,
            role: VariantRole::Edge,
            packs: AtomicUsize::new(0),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Packs the model as `version` with a 0.05 score tolerance, lets `tweak` edit bundle.json
    /// before the hub signs it, pushes it, and returns a copy of the signed bundle.
    pub fn signed(&self, version: &str, tweak: impl FnOnce(&mut Value)) -> PathBuf {
        self.signed_with(version, 0.05, tweak)
    }

    pub fn signed_with(
        &self,
        version: &str,
        tolerance: f64,
        tweak: impl FnOnce(&mut Value),
    ) -> PathBuf {
        let n = self.packs.fetch_add(1, Ordering::Relaxed);
        let src = self.path(&format!("pack-{n}"));
        let opts = PackOptions {
            version: Some(version.into()),
            tolerance,
            role: self.role,
            ..PackOptions::default()
        };
        pack(&models_dir().join(self.model), &src, &opts).expect("pack");
        let mut doc: Value =
            serde_json::from_slice(&std::fs::read(src.join(BUNDLE_FILE)).expect("read"))
                .expect("json");
        tweak(&mut doc);
        std::fs::write(
            src.join(BUNDLE_FILE),
            serde_json::to_vec(&doc).expect("json"),
        )
        .expect("write");
        self.registry.push(&src, &self.signer).expect("push");
        let out = self.path(&format!("signed-{n}"));
        copy_tree(&self.registry.bundle_dir(self.model, version), &out);
        out
    }

    /// Signs a bundle folder's bundle.json with `signer` (what a hub would do, or a thief).
    pub fn sign_with(dir: &Path, signer: &BundleSigner) {
        let json = std::fs::read(dir.join(BUNDLE_FILE)).expect("read");
        let sig = serde_json::to_vec(&signer.sign(&json)).expect("json");
        std::fs::write(dir.join(SIGNATURE_FILE), sig).expect("write");
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}
