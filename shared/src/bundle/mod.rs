//! Model bundles (docs/bundle.md): what the hub signs and an agent installs.
//!
//! A bundle is a folder: `bundle.json` (format version, the model manifest, the self-tests),
//! `bundle.sig` (an ed25519 signature by the hub's model-signing key over the exact bytes of
//! `bundle.json`), and the files the manifest lists with their sha256 (model, labels,
//! tokenizer, self-test inputs).
//!
//! Invariants:
//! - Nothing in `bundle.json` is trusted before the signature verifies against the key the
//!   agent's config names ([`verify`] checks it first).
//! - Every file the manifest lists is present with its sha256, and nothing else is, except the
//!   files of an `optional` variant (the cloud model, which the hub serves), which may be left
//!   out.
//! - A version not newer than the active one is refused unless a rollback is ordered.
//! - The I/O of the device's variant equals the active version's.
//!
//! Sans-IO: callers hand in bytes and the sha256 of each file.

mod canonical;
mod doc;
mod key;
mod verify;
mod version;

#[cfg(test)]
mod tests;

pub use doc::{
    ALGORITHM, BUNDLE_FILE, BUNDLE_VERSION, BundleDoc, DEFAULT_TOLERANCE, MAX_BUNDLE_JSON_BYTES,
    MAX_SIGNATURE_BYTES, SIGNATURE_FILE, SIGNING_CONTEXT, SelfTest, SignatureFile,
};
pub use key::{BundleSigner, KeyError, TrustedKey, key_id};
pub use verify::{
    Active, BundleError, BundleInput, Expect, VerifiedBundle, inspect, io_differences, parse,
    sha256_hex, verify, verify_signature,
};
pub use version::ModelVersion;

/// The canonical bytes of a `bundle.json` (keys sorted, no whitespace; extra manifest keys
/// kept), after checking that it reads as a bundle. The hub writes this form before signing.
pub fn canonicalize(bundle_json: &[u8]) -> Result<Vec<u8>, BundleError> {
    let value: serde_json::Value =
        serde_json::from_slice(bundle_json).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let bytes = canonical::to_vec(&value);
    parse(&bytes)?;
    Ok(bytes)
}

/// The canonical bytes of any JSON value (see `canonicalize`).
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    canonical::to_vec(value)
}
