//! Fuzzes `bundle.json` and `bundle.sig` handling (`tandem_shared::bundle`): parsing,
//! canonicalisation, the signature check, and the whole verification behind a good signature.
//!
//! Input: one mode byte, two bytes of signature length (little endian), the signature, then
//! `bundle.json`. Mode bit 0 clear: the signature is the fuzzer's (parse, canonicalize,
//! verify_signature on arbitrary bytes; canonical form must be a fixed point). Set: the
//! `bundle.json` is signed with the test key first, so `verify` runs past the signature into
//! the format, manifest, self-test and file checks (files: the manifest's own list, so the
//! hashes match; bit 1 picks the role, bit 2 allows an older version, bit 3 compares with an
//! active version 1 that has the bundle's own variant). Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use tandem_shared::bundle::{self, Active, BundleInput, BundleSigner, Expect};
use tandem_shared::manifest::VariantRole;

fuzz_target!(|data: &[u8]| {
    let [mode, a, b, rest @ ..] = data else {
        return;
    };
    let sig_len = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
    let (sig, json) = rest.split_at(sig_len);
    let signer = BundleSigner::from_seed(&[7; 32]);
    let key = signer.trusted_key();
    if mode & 1 == 0 {
        let _ = bundle::verify_signature(json, Some(sig), &key);
        let _ = bundle::parse(json);
        if let Ok(canonical) = bundle::canonicalize(json) {
            let twice = bundle::canonicalize(&canonical).expect("canonical bytes are a bundle");
            assert_eq!(twice, canonical, "canonicalisation is a fixed point");
        }
        return;
    }
    let signature = serde_json::to_vec(&signer.sign(json)).expect("a signature file serialises");
    let doc = bundle::parse(json).ok();
    let files: BTreeMap<String, String> = doc
        .as_ref()
        .map(|d| d.manifest.files.clone())
        .unwrap_or_default();
    let input = BundleInput {
        bundle_json: json,
        signature: Some(&signature),
        files: &files,
    };
    let role = if mode & 2 == 0 {
        VariantRole::Edge
    } else {
        VariantRole::Cloud
    };
    // Mode bit 3: the bundle replaces a version 1 with its own variant (I/O compared).
    let active = doc
        .as_ref()
        .filter(|_| mode & 8 != 0)
        .and_then(|d| d.manifest.variants.get(&role))
        .map(|variant| Active {
            version: "1",
            variant,
        });
    let expect = Expect {
        model: None,
        role,
        active,
        allow_older: mode & 4 != 0,
    };
    let _ = bundle::verify(input, &key, &expect);
    let _ = bundle::inspect(json, &files, Some(role));
});
