//! Model-signing keys: the hub's ed25519 key (PKCS#8 PEM, as `tandem-hub init` writes
//! `signing.key`) and the public key an agent trusts (SPKI PEM, `signing.pub`).

use super::doc::{ALGORITHM, SIGNING_CONTEXT, SignatureFile};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// A key that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a PEM ed25519 key of the expected kind.
    #[error("not an ed25519 {kind} key in PEM: {message}")]
    Pem {
        /// `public` or `private (PKCS#8)`.
        kind: &'static str,
        /// What the decoder said.
        message: String,
    },
}

/// The id of a public key: the first 8 bytes of the sha256 of its 32 raw bytes, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The public key bundles must be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    key: VerifyingKey,
    id: String,
}

impl TrustedKey {
    /// From an SPKI PEM (`-----BEGIN PUBLIC KEY-----`), e.g. the hub's `signing.pub`.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        VerifyingKey::from_public_key_pem(text.trim())
            .map(Self::from_key)
            .map_err(|e| KeyError::Pem {
                kind: "public",
                message: e.to_string(),
            })
    }

    /// From a dalek verifying key.
    pub fn from_key(key: VerifyingKey) -> Self {
        let id = key_id(&key);
        Self { key, id }
    }

    /// Its id ([`key_id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `signature` is this key's (strict verification) over the bundle bytes.
    pub(crate) fn verifies(
        &self,
        bundle_json: &[u8],
        signature: &ed25519_dalek::Signature,
    ) -> bool {
        self.key
            .verify_strict(&signed_message(bundle_json), signature)
            .is_ok()
    }
}

/// The hub's signing key.
pub struct BundleSigner {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for BundleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleSigner")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl BundleSigner {
    /// From a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), e.g. the hub's `signing.key`.
    pub fn from_pkcs8_pem(text: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(text.trim())
            .map(Self::from_key)
            .map_err(|e| KeyError::Pem {
                kind: "private (PKCS#8)",
                message: e.to_string(),
            })
    }

    /// From a 32-byte seed (tests, tools).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_key(SigningKey::from_bytes(seed))
    }

    fn from_key(key: SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// The matching public key.
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey::from_key(self.key.verifying_key())
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs the exact bytes of a `bundle.json`; the result is the content of `bundle.sig`.
    pub fn sign(&self, bundle_json: &[u8]) -> SignatureFile {
        let sig = self.key.sign(&signed_message(bundle_json));
        SignatureFile {
            algorithm: ALGORITHM.to_string(),
            key_id: self.id.clone(),
            signature: hex::encode(sig.to_bytes()),
        }
    }
}

fn signed_message(bundle_json: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + bundle_json.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(bundle_json);
    m
}
