//! What `bundle.json` and `bundle.sig` hold (docs/bundle.md).

use crate::manifest::{Manifest, Task, VariantRole};
use serde::{Deserialize, Serialize};

/// The bundle format version this code reads and writes.
pub const BUNDLE_VERSION: u32 = 1;
/// The signed description of a bundle, at the root of its folder.
pub const BUNDLE_FILE: &str = "bundle.json";
/// The detached signature over the exact bytes of [`BUNDLE_FILE`].
pub const SIGNATURE_FILE: &str = "bundle.sig";
/// Prepended to the bytes of `bundle.json` before signing (domain separation: a signature
/// over a bundle is never valid for anything else the key might sign).
pub const SIGNING_CONTEXT: &[u8] = b"tandem-bundle-v1\0";
/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";
/// Largest `bundle.json` accepted, in bytes.
pub const MAX_BUNDLE_JSON_BYTES: usize = 4 << 20;
/// Largest `bundle.sig` accepted, in bytes.
pub const MAX_SIGNATURE_BYTES: usize = 4096;
/// Score tolerance of a self-test that names none.
pub const DEFAULT_TOLERANCE: f64 = 0.02;

/// `bundle.json`: the model manifest, the format version and the self-tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleDoc {
    /// Format version; must equal [`BUNDLE_VERSION`].
    pub bundle_version: u32,
    /// The model manifest (docs/manifest.md). Its `files` lists every file of the bundle with
    /// its sha256 (the files of an `optional` variant may be left out of the folder).
    pub manifest: Manifest,
    /// Inputs with their expected answers, run on the device before the swap.
    #[serde(default)]
    pub selftests: Vec<SelfTest>,
}

/// One self-test: an input and the answer the model must give for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    /// The variant it runs on.
    pub variant: VariantRole,
    /// An input file of the bundle (images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// An input text (text models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Expected top-1 label.
    pub top1: String,
    /// Expected top-1 class index.
    pub top1_index: usize,
    /// Expected top-1 probability.
    pub score: f64,
    /// Largest accepted |score - expected|.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    DEFAULT_TOLERANCE
}

/// `bundle.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// Id of the signing key ([`super::key_id`]); tells "another key" from "altered content"
    /// in the error (it is not itself trusted).
    pub key_id: String,
    /// The 64-byte signature, lowercase hex.
    pub signature: String,
}

impl BundleDoc {
    /// Every problem with the self-tests (the manifest checks its own).
    pub fn selftest_problems(&self) -> Vec<String> {
        let m = &self.manifest;
        let mut p = Vec::new();
        for (i, t) in self.selftests.iter().enumerate() {
            let at = format!("selftests[{i}]");
            if !m.variants.contains_key(&t.variant) {
                p.push(format!("{at}: no {} variant", t.variant.as_str()));
            }
            match (&t.input, &t.text, m.task) {
                (Some(f), None, Task::ImageClassification) => {
                    if !m.files.contains_key(f) {
                        p.push(format!("{at}: input `{f}` has no sha256 in `files`"));
                    }
                }
                (None, Some(_), Task::TextClassification) => {}
                _ => p.push(format!(
                    "{at}: give `input` (a file) for an image model or `text` for a text model"
                )),
            }
            if !(0.0..=1.0).contains(&t.score) {
                p.push(format!("{at}: score {} is not in 0..1", t.score));
            }
            if !(0.0..=1.0).contains(&t.tolerance) {
                p.push(format!("{at}: tolerance {} is not in 0..1", t.tolerance));
            }
        }
        for (role, v) in &m.variants {
            if !v.optional && !self.selftests.iter().any(|t| t.variant == *role) {
                p.push(format!("no self-test for the {} variant", role.as_str()));
            }
        }
        p
    }
}
