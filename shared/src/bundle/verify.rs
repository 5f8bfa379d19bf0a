//! Verifying a bundle before anything loads it: signature first, then the description, the
//! files, the model, the version and the I/O schema. Sans-IO: the caller hands in the bytes
//! of `bundle.json` and `bundle.sig` and the sha256 of every other file it found.

use super::doc::{
    ALGORITHM, BUNDLE_VERSION, BundleDoc, MAX_BUNDLE_JSON_BYTES, MAX_SIGNATURE_BYTES, SelfTest,
    SignatureFile,
};
use super::key::TrustedKey;
use super::version::ModelVersion;
use crate::manifest::{MANIFEST_VERSION, Manifest, Variant, VariantRole};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Why a bundle is refused. Each variant is a distinct reason ([`BundleError::reason`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// `bundle.sig` is absent.
    #[error("the bundle is not signed (no bundle.sig)")]
    Unsigned,
    /// `bundle.sig` cannot be read (not JSON, other algorithm, not 64 bytes of hex).
    #[error("bundle.sig is malformed: {0}")]
    MalformedSignature(String),
    /// Signed by a key other than the trusted one.
    #[error("the bundle is signed by key {key_id}, not by the trusted key {trusted}")]
    UntrustedKey {
        /// The id the signature names.
        key_id: String,
        /// The trusted key's id.
        trusted: String,
    },
    /// The signature does not match the content (altered after signing, or forged).
    #[error("the signature does not match bundle.json (altered after signing?)")]
    BadSignature,
    /// `bundle.json` is not a bundle description this code reads.
    #[error("bundle.json is malformed: {0}")]
    Malformed(String),
    /// Another format version.
    #[error("bundle_version {found} is not supported (expected {BUNDLE_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// The manifest or the self-tests are invalid: every problem.
    #[error("the bundle's manifest is invalid: {}", .0.join("; "))]
    Schema(Vec<String>),
    /// A file the manifest lists is not in the bundle.
    #[error("file `{path}` is missing from the bundle")]
    FileMissing {
        /// Relative path.
        path: String,
    },
    /// A file does not have the sha256 the manifest says.
    #[error("file `{path}` is corrupt: sha256 {actual}, the manifest says {expected}")]
    HashMismatch {
        /// Relative path.
        path: String,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A file is in the bundle but not in the manifest.
    #[error("file `{path}` is in the bundle but not in the manifest")]
    UnlistedFile {
        /// Relative path.
        path: String,
    },
    /// The bundle is for another model.
    #[error("the bundle holds model `{found}`, expected `{expected}`")]
    WrongModel {
        /// The model asked for.
        expected: String,
        /// The bundle's.
        found: String,
    },
    /// Not newer than the active version (a replayed old bundle) and no rollback was ordered.
    #[error("version {version} is not newer than the active {active} (a rollback must be ordered)")]
    NotNewer {
        /// The bundle's version.
        version: String,
        /// The active version.
        active: String,
    },
    /// The variant's inputs or outputs differ from the active version's.
    #[error("the {role} variant's I/O differs from the active version's: {}", .problems.join("; "))]
    IoSchema {
        /// The variant compared.
        role: &'static str,
        /// Every difference.
        problems: Vec<String>,
    },
}

impl BundleError {
    /// A short, stable reason for reports and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::MalformedSignature(_) => "malformed_signature",
            Self::UntrustedKey { .. } => "untrusted_key",
            Self::BadSignature => "bad_signature",
            Self::Malformed(_) => "malformed",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::Schema(_) => "schema",
            Self::FileMissing { .. } => "file_missing",
            Self::HashMismatch { .. } => "sha256_mismatch",
            Self::UnlistedFile { .. } => "unlisted_file",
            Self::WrongModel { .. } => "wrong_model",
            Self::NotNewer { .. } => "not_newer",
            Self::IoSchema { .. } => "io_schema",
        }
    }
}

/// A bundle as read from its folder.
#[derive(Debug, Clone, Copy)]
pub struct BundleInput<'a> {
    /// The bytes of `bundle.json`.
    pub bundle_json: &'a [u8],
    /// The bytes of `bundle.sig`; `None` when absent.
    pub signature: Option<&'a [u8]>,
    /// Every other file in the folder: relative path (`/`-separated) → sha256 (lowercase hex).
    pub files: &'a BTreeMap<String, String>,
}

/// The model a bundle would replace.
#[derive(Debug, Clone, Copy)]
pub struct Active<'a> {
    /// Its version.
    pub version: &'a str,
    /// Its variant on this device (inputs and outputs must stay the same).
    pub variant: &'a Variant,
}

/// What the installer expects of a bundle.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The variant this device runs: it must be in the bundle with its files.
    pub role: VariantRole,
    /// The model name asked for, when known.
    pub model: Option<&'a str>,
    /// The version now serving, when the model is installed.
    pub active: Option<Active<'a>>,
    /// An explicitly ordered rollback: an older version is accepted.
    pub allow_older: bool,
}

/// A bundle whose signature, description and files all checked out. Only [`verify`] makes
/// one, so holding one means the checks ran.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBundle {
    doc: BundleDoc,
    key_id: String,
    digest: String,
    files: Vec<String>,
}

impl VerifiedBundle {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.doc.manifest
    }
    /// Model name.
    pub fn model(&self) -> &str {
        &self.doc.manifest.name
    }
    /// Model version.
    pub fn version(&self) -> &str {
        &self.doc.manifest.version
    }
    /// The self-tests.
    pub fn selftests(&self) -> &[SelfTest] {
        &self.doc.selftests
    }
    /// The whole description.
    pub fn doc(&self) -> &BundleDoc {
        &self.doc
    }
    /// The signing key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    /// sha256 of `bundle.json`: identifies the content.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// The files present (and verified), besides `bundle.json` and `bundle.sig`.
    pub fn files(&self) -> &[String] {
        &self.files
    }
}

/// sha256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a bundle against the trusted key and what the installer expects.
///
/// Order: signature (nothing in `bundle.json` is looked at before it verifies), format,
/// manifest and self-tests, files (each listed file present with its sha256, nothing
/// unlisted), model name, version, I/O schema.
pub fn verify(
    input: BundleInput<'_>,
    key: &TrustedKey,
    expect: &Expect<'_>,
) -> Result<VerifiedBundle, BundleError> {
    if input.bundle_json.len() > MAX_BUNDLE_JSON_BYTES {
        return Err(BundleError::Malformed(format!(
            "{} bytes, more than {MAX_BUNDLE_JSON_BYTES}",
            input.bundle_json.len()
        )));
    }
    check_signature(input, key)?;
    let (doc, files) = inspect(input.bundle_json, input.files, Some(expect.role))?;
    let version = ModelVersion::parse(&doc.manifest.version);
    if let Some(want) = expect.model.filter(|m| *m != doc.manifest.name) {
        return Err(BundleError::WrongModel {
            expected: want.to_string(),
            found: doc.manifest.name.clone(),
        });
    }
    if let Some(active) = expect.active {
        let newer = match (&version, ModelVersion::parse(active.version)) {
            (Some(v), Some(a)) => *v > a,
            _ => false,
        };
        if !newer && !expect.allow_older {
            return Err(BundleError::NotNewer {
                version: doc.manifest.version.clone(),
                active: active.version.to_string(),
            });
        }
        if let Some(new) = doc.manifest.variants.get(&expect.role) {
            let problems = io_differences(active.variant, new);
            if !problems.is_empty() {
                return Err(BundleError::IoSchema {
                    role: expect.role.as_str(),
                    problems,
                });
            }
        }
    }
    Ok(VerifiedBundle {
        key_id: key.id().to_string(),
        digest: sha256_hex(input.bundle_json),
        files,
        doc,
    })
}

/// Checks an (unsigned) bundle's description and files: format, manifest and self-tests
/// (`role`: the variant a device needs, when known), every listed file present with its
/// sha256, nothing unlisted. The hub runs this before signing; [`verify`] after the signature.
pub fn inspect(
    bundle_json: &[u8],
    files: &BTreeMap<String, String>,
    role: Option<VariantRole>,
) -> Result<(BundleDoc, Vec<String>), BundleError> {
    if bundle_json.len() > MAX_BUNDLE_JSON_BYTES {
        return Err(BundleError::Malformed(format!(
            "{} bytes, more than {MAX_BUNDLE_JSON_BYTES}",
            bundle_json.len()
        )));
    }
    let doc = parse(bundle_json)?;
    let mut problems = doc.manifest.problems();
    problems.extend(doc.selftest_problems());
    match role.map(|r| (r, doc.manifest.variants.get(&r))) {
        Some((r, None)) => problems.push(format!("no {} variant", r.as_str())),
        Some((r, Some(v))) if v.optional => problems.push(format!(
            "the {} variant is marked optional: a device bundle must carry it",
            r.as_str()
        )),
        _ => {}
    }
    if ModelVersion::parse(&doc.manifest.version).is_none() {
        problems.push(format!(
            "version `{}` is not dotted numbers (1.0.1)",
            doc.manifest.version
        ));
    }
    if !problems.is_empty() {
        return Err(BundleError::Schema(problems));
    }
    let files = check_files(&doc, files)?;
    Ok((doc, files))
}

/// Checks only the signature of `bundle.json` (a downloader runs it before it fetches the
/// large files; [`verify`] runs it again with everything else).
pub fn verify_signature(
    bundle_json: &[u8],
    signature: Option<&[u8]>,
    key: &TrustedKey,
) -> Result<(), BundleError> {
    if bundle_json.len() > MAX_BUNDLE_JSON_BYTES {
        return Err(BundleError::Malformed(format!(
            "{} bytes, more than {MAX_BUNDLE_JSON_BYTES}",
            bundle_json.len()
        )));
    }
    check_signature(
        BundleInput {
            bundle_json,
            signature,
            files: &BTreeMap::new(),
        },
        key,
    )
}

fn check_signature(input: BundleInput<'_>, key: &TrustedKey) -> Result<(), BundleError> {
    let raw = input.signature.ok_or(BundleError::Unsigned)?;
    let bad = |m: &str| BundleError::MalformedSignature(m.to_string());
    if raw.len() > MAX_SIGNATURE_BYTES {
        return Err(bad("larger than 4 KiB"));
    }
    let sig: SignatureFile =
        serde_json::from_slice(raw).map_err(|e| BundleError::MalformedSignature(e.to_string()))?;
    if sig.algorithm != ALGORITHM {
        return Err(BundleError::MalformedSignature(format!(
            "algorithm `{}`, expected `{ALGORITHM}`",
            sig.algorithm
        )));
    }
    let bytes: [u8; 64] = hex::decode(&sig.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the signature is not 64 bytes of hex"))?;
    if key.verifies(
        input.bundle_json,
        &ed25519_dalek::Signature::from_bytes(&bytes),
    ) {
        Ok(())
    } else if sig.key_id != key.id() {
        Err(BundleError::UntrustedKey {
            key_id: sig.key_id,
            trusted: key.id().to_string(),
        })
    } else {
        Err(BundleError::BadSignature)
    }
}

/// Reads `bundle.json` (no signature check: [`verify`] does that first).
pub fn parse(bundle_json: &[u8]) -> Result<BundleDoc, BundleError> {
    let value: serde_json::Value =
        serde_json::from_slice(bundle_json).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let found = value
        .get("bundle_version")
        .and_then(serde_json::Value::as_u64);
    if found != Some(u64::from(BUNDLE_VERSION)) {
        return match found {
            Some(found) => Err(BundleError::UnsupportedVersion { found }),
            None => Err(BundleError::Malformed("no bundle_version".into())),
        };
    }
    let manifest_version = value
        .pointer("/manifest/manifest_version")
        .and_then(serde_json::Value::as_u64);
    if manifest_version != Some(u64::from(MANIFEST_VERSION)) {
        return Err(BundleError::Schema(vec![format!(
            "manifest.manifest_version must be {MANIFEST_VERSION}"
        )]));
    }
    serde_json::from_value(value).map_err(|e| BundleError::Schema(vec![e.to_string()]))
}

/// Files only optional variants use (their model file and tokenizer) may be left out;
/// everything else listed must be present with its hash, and nothing unlisted may be present.
fn check_files(
    doc: &BundleDoc,
    present: &BTreeMap<String, String>,
) -> Result<Vec<String>, BundleError> {
    let m = &doc.manifest;
    let uses = |v: &crate::manifest::Variant| {
        let mut f = vec![v.file.clone()];
        if let crate::manifest::Preprocess::Text(t) = &v.preprocess {
            f.push(t.tokenizer.clone());
        }
        f
    };
    let required: BTreeSet<String> = m
        .variants
        .values()
        .filter(|v| !v.optional)
        .flat_map(uses)
        .collect();
    let may_be_absent: BTreeSet<String> = m
        .variants
        .values()
        .filter(|v| v.optional)
        .flat_map(uses)
        .filter(|f| !required.contains(f) && *f != m.labels)
        .collect();
    for (path, expected) in &m.files {
        match present.get(path) {
            None if may_be_absent.contains(path) => {}
            None => return Err(BundleError::FileMissing { path: path.clone() }),
            Some(actual) if !actual.eq_ignore_ascii_case(expected) => {
                return Err(BundleError::HashMismatch {
                    path: path.clone(),
                    expected: expected.clone(),
                    actual: actual.clone(),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(path) = present.keys().find(|p| !m.files.contains_key(*p)) {
        return Err(BundleError::UnlistedFile { path: path.clone() });
    }
    Ok(present.keys().cloned().collect())
}

/// How a new variant's inputs and outputs differ from the active one's (names, types, shapes,
/// output kinds), in words.
pub fn io_differences(active: &Variant, new: &Variant) -> Vec<String> {
    let mut p = Vec::new();
    let ins = |v: &Variant| {
        v.inputs
            .iter()
            .map(|t| format!("{} {:?} {:?}", t.name, t.dtype, t.shape))
            .collect::<Vec<_>>()
    };
    let outs = |v: &Variant| {
        v.outputs
            .iter()
            .map(|t| format!("{} {:?} {:?} {:?}", t.name, t.dtype, t.shape, t.kind))
            .collect::<Vec<_>>()
    };
    let (a, b) = (ins(active), ins(new));
    if a != b {
        p.push(format!("inputs [{}] → [{}]", a.join(", "), b.join(", ")));
    }
    let (a, b) = (outs(active), outs(new));
    if a != b {
        p.push(format!("outputs [{}] → [{}]", a.join(", "), b.join(", ")));
    }
    if std::mem::discriminant(&active.preprocess) != std::mem::discriminant(&new.preprocess) {
        p.push("the input modality changed (image ↔ text)".into());
    }
    p
}
