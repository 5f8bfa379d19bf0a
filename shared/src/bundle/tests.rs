//! Every rejection reason, and that no byte of `bundle.json` can change unnoticed.

use super::*;
use crate::manifest::{Manifest, VariantRole};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const EDGE: &[u8] = b"edge onnx bytes";
const CLOUD: &[u8] = b"cloud onnx bytes";
const LABELS: &[u8] = b"a\nb\n";
const SAMPLE: &[u8] = b"png bytes";

fn variant(file: &str, optional: bool, classes: i64) -> Value {
    json!({
        "file": file, "optional": optional, "quantization": "none",
        "threshold": 0.7, "threshold_signal": "max_prob",
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, classes], "kind": "logits"}],
        "preprocess": {"type": "image", "layout": "NCHW", "color": "gray", "width": 28,
            "height": 28, "resize": "stretch", "scale": 0.00392156862745098,
            "mean": [0.286], "std": [0.353]}
    })
}

fn doc(version: &str) -> Value {
    json!({
        "bundle_version": 1,
        "manifest": {
            "manifest_version": 1, "name": "vision-fashion", "version": version,
            "task": "image-classification", "labels": "labels.txt",
            "variants": {"edge": variant("edge.onnx", false, 2), "cloud": variant("cloud.onnx", true, 2)},
            "files": {
                "edge.onnx": sha256_hex(EDGE), "cloud.onnx": sha256_hex(CLOUD),
                "labels.txt": sha256_hex(LABELS), "selftest/0.png": sha256_hex(SAMPLE)
            },
            "cascade": {"signal": "max_prob"}
        },
        "selftests": [{"variant": "edge", "input": "selftest/0.png", "top1": "b",
            "top1_index": 1, "score": 0.9}]
    })
}

fn files() -> BTreeMap<String, String> {
    [
        ("edge.onnx", EDGE),
        ("labels.txt", LABELS),
        ("selftest/0.png", SAMPLE),
    ]
    .into_iter()
    .map(|(p, b)| (p.to_string(), sha256_hex(b)))
    .collect()
}

fn hub() -> BundleSigner {
    BundleSigner::from_seed(&[7; 32])
}

struct Signed {
    json: Vec<u8>,
    sig: Vec<u8>,
}

fn sign_with(signer: &BundleSigner, doc: &Value) -> Signed {
    let json = canonicalize(&serde_json::to_vec(doc).expect("json")).expect("canonical");
    let sig = serde_json::to_vec(&signer.sign(&json)).expect("json");
    Signed { json, sig }
}

fn signed(doc: &Value) -> Signed {
    sign_with(&hub(), doc)
}

fn expect() -> Expect<'static> {
    Expect {
        role: VariantRole::Edge,
        model: Some("vision-fashion"),
        active: None,
        allow_older: false,
    }
}

fn check(
    s: &Signed,
    files: &BTreeMap<String, String>,
    e: &Expect<'_>,
) -> Result<VerifiedBundle, BundleError> {
    verify(
        BundleInput {
            bundle_json: &s.json,
            signature: Some(&s.sig),
            files,
        },
        &hub().trusted_key(),
        e,
    )
}

fn active_manifest(version: &str) -> Manifest {
    serde_json::from_value(doc(version)["manifest"].clone()).expect("manifest")
}

#[test]
fn a_good_bundle_verifies() {
    let v = check(&signed(&doc("1.0.1")), &files(), &expect()).expect("valid");
    assert_eq!((v.model(), v.version()), ("vision-fashion", "1.0.1"));
    assert_eq!(v.key_id(), hub().id());
    assert_eq!(v.selftests().len(), 1);
    assert_eq!(v.files(), ["edge.onnx", "labels.txt", "selftest/0.png"]);
    assert_eq!(v.digest().len(), 64);
}

#[test]
fn unsigned_is_refused() {
    let s = signed(&doc("1.0.1"));
    let r = verify(
        BundleInput {
            bundle_json: &s.json,
            signature: None,
            files: &files(),
        },
        &hub().trusted_key(),
        &expect(),
    );
    assert_eq!(r, Err(BundleError::Unsigned));
}

#[test]
fn another_key_is_refused() {
    let other = BundleSigner::from_seed(&[9; 32]);
    let s = sign_with(&other, &doc("1.0.1"));
    match check(&s, &files(), &expect()) {
        Err(BundleError::UntrustedKey { key_id, trusted }) => {
            assert_eq!(
                (key_id.as_str(), trusted.as_str()),
                (other.id(), hub().id())
            );
        }
        other => panic!("expected UntrustedKey, got {other:?}"),
    }
}

#[test]
fn altered_content_is_refused() {
    let mut s = signed(&doc("1.0.1"));
    let text = String::from_utf8(s.json.clone()).expect("utf-8");
    s.json = text
        .replace("\"top1\":\"b\"", "\"top1\":\"a\"")
        .into_bytes();
    assert_eq!(
        check(&s, &files(), &expect()),
        Err(BundleError::BadSignature)
    );
}

#[test]
fn a_malformed_signature_file_is_refused() {
    let mut s = signed(&doc("1.0.1"));
    for bad in [
        &b"not json"[..],
        br#"{"algorithm":"rsa","key_id":"x","signature":"00"}"#,
        br#"{"algorithm":"ed25519","key_id":"x","signature":"abcd"}"#,
    ] {
        s.sig = bad.to_vec();
        let r = check(&s, &files(), &expect());
        assert!(
            matches!(r, Err(BundleError::MalformedSignature(_))),
            "{r:?}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let mut f = files();
    f.remove("labels.txt");
    assert_eq!(
        check(&signed(&doc("1.0.1")), &f, &expect()),
        Err(BundleError::FileMissing {
            path: "labels.txt".into()
        })
    );
}

#[test]
fn a_corrupt_file_is_named_with_both_hashes() {
    let mut f = files();
    f.insert("edge.onnx".into(), sha256_hex(b"flipped"));
    assert_eq!(
        check(&signed(&doc("1.0.1")), &f, &expect()),
        Err(BundleError::HashMismatch {
            path: "edge.onnx".into(),
            expected: sha256_hex(EDGE),
            actual: sha256_hex(b"flipped"),
        })
    );
}

#[test]
fn a_wrong_sha256_in_the_manifest_is_refused() {
    let mut d = doc("1.0.1");
    d["manifest"]["files"]["labels.txt"] = json!(sha256_hex(b"other labels"));
    let r = check(&signed(&d), &files(), &expect());
    assert!(
        matches!(r, Err(BundleError::HashMismatch { ref path, .. }) if path == "labels.txt"),
        "{r:?}"
    );
}

#[test]
fn an_unlisted_file_is_refused() {
    let mut f = files();
    f.insert("extra.bin".into(), sha256_hex(b"x"));
    assert_eq!(
        check(&signed(&doc("1.0.1")), &f, &expect()),
        Err(BundleError::UnlistedFile {
            path: "extra.bin".into()
        })
    );
}

#[test]
fn schema_problems_are_all_listed() {
    let mut d = doc("1.0.x");
    d["selftests"] = json!([]);
    d["manifest"]["variants"]["edge"]["optional"] = json!(true);
    match check(&signed(&d), &files(), &expect()) {
        Err(BundleError::Schema(p)) => {
            let all = p.join("\n");
            assert!(all.contains("not dotted numbers"), "{all}");
            assert!(all.contains("edge variant is marked optional"), "{all}");
            assert!(!all.contains("no self-test for the cloud"), "{all}");
        }
        other => panic!("expected Schema, got {other:?}"),
    }
    let mut d = doc("1.0.1");
    d["selftests"] = json!([]);
    let r = check(&signed(&d), &files(), &expect());
    assert!(
        matches!(r, Err(BundleError::Schema(ref p)) if p[0].contains("no self-test for the edge")),
        "{r:?}"
    );
    let mut d = doc("1.0.1");
    d["selftests"][0]["input"] = json!("selftest/none.png");
    let r = check(&signed(&d), &files(), &expect());
    assert!(
        matches!(r, Err(BundleError::Schema(ref p)) if p[0].contains("selftest/none.png")),
        "{r:?}"
    );
    let mut d = doc("1.0.1");
    d["bundle_version"] = json!(2);
    assert_eq!(
        check(&signed_raw(&d), &files(), &expect()),
        Err(BundleError::UnsupportedVersion { found: 2 })
    );
}

/// Signs a description that `canonicalize` would refuse.
fn signed_raw(doc: &Value) -> Signed {
    let json = canonical_json(doc);
    let sig = serde_json::to_vec(&hub().sign(&json)).expect("json");
    Signed { json, sig }
}

#[test]
fn another_model_is_refused() {
    let e = Expect {
        model: Some("text-sentiment"),
        ..expect()
    };
    let r = check(&signed(&doc("1.0.1")), &files(), &e);
    assert!(matches!(r, Err(BundleError::WrongModel { .. })), "{r:?}");
}

#[test]
fn an_older_or_equal_version_needs_an_ordered_rollback() {
    let active = active_manifest("1.0.1");
    let edge = &active.variants[&VariantRole::Edge];
    for v in ["1.0.0", "1.0.1", "0.9"] {
        let e = Expect {
            active: Some(Active {
                version: "1.0.1",
                variant: edge,
            }),
            ..expect()
        };
        let s = signed(&doc(v));
        assert_eq!(
            check(&s, &files(), &e),
            Err(BundleError::NotNewer {
                version: v.into(),
                active: "1.0.1".into()
            })
        );
        let rollback = Expect {
            allow_older: true,
            ..e
        };
        assert!(check(&s, &files(), &rollback).is_ok(), "{v}");
    }
    let newer = Expect {
        active: Some(Active {
            version: "1.0.1",
            variant: edge,
        }),
        ..expect()
    };
    assert!(check(&signed(&doc("1.0.10")), &files(), &newer).is_ok());
}

#[test]
fn another_io_schema_is_refused() {
    let active = active_manifest("1.0.0");
    let mut d = doc("1.0.1");
    d["manifest"]["variants"]["edge"] = variant("edge.onnx", false, 11);
    let e = Expect {
        active: Some(Active {
            version: "1.0.0",
            variant: &active.variants[&VariantRole::Edge],
        }),
        ..expect()
    };
    match check(&signed(&d), &files(), &e) {
        Err(BundleError::IoSchema { role, problems }) => {
            assert_eq!(role, "edge");
            assert!(problems[0].contains("outputs"), "{problems:?}");
        }
        other => panic!("expected IoSchema, got {other:?}"),
    }
}

#[test]
fn reasons_are_distinct() {
    let all = [
        BundleError::Unsigned,
        BundleError::MalformedSignature(String::new()),
        BundleError::UntrustedKey {
            key_id: String::new(),
            trusted: String::new(),
        },
        BundleError::BadSignature,
        BundleError::Malformed(String::new()),
        BundleError::UnsupportedVersion { found: 0 },
        BundleError::Schema(Vec::new()),
        BundleError::FileMissing {
            path: String::new(),
        },
        BundleError::HashMismatch {
            path: String::new(),
            expected: String::new(),
            actual: String::new(),
        },
        BundleError::UnlistedFile {
            path: String::new(),
        },
        BundleError::WrongModel {
            expected: String::new(),
            found: String::new(),
        },
        BundleError::NotNewer {
            version: String::new(),
            active: String::new(),
        },
        BundleError::IoSchema {
            role: "edge",
            problems: Vec::new(),
        },
    ];
    let reasons: std::collections::BTreeSet<&str> = all.iter().map(BundleError::reason).collect();
    assert_eq!(reasons.len(), all.len());
}

#[test]
fn canonical_form_is_stable() {
    let a = signed(&doc("1.0.1")).json;
    let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&a).expect("json"))
        .expect("json");
    assert_eq!(canonicalize(&pretty).expect("canonical"), a);
    assert!(a.starts_with(b"{\"bundle_version\":1,\"manifest\":{\"cascade\""));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any byte flipped anywhere in `bundle.json` breaks the signature.
    #[test]
    fn any_byte_flip_breaks_the_signature(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut s = signed(&doc("1.0.1"));
        let i = at.index(s.json.len());
        s.json[i] ^= 1 << bit;
        prop_assert_eq!(check(&s, &files(), &expect()), Err(BundleError::BadSignature));
    }

    /// Any bit flipped in the signature itself is refused (the key id beside it is a hint for
    /// the error message, not trusted: changing it changes nothing).
    #[test]
    fn any_signature_flip_is_refused(at in 0usize..64, bit in 0u8..8) {
        let mut s = signed(&doc("1.0.1"));
        let mut f: SignatureFile = serde_json::from_slice(&s.sig).expect("json");
        let mut raw = hex::decode(&f.signature).expect("hex");
        raw[at] ^= 1 << bit;
        f.signature = hex::encode(raw);
        s.sig = serde_json::to_vec(&f).expect("json");
        prop_assert_eq!(check(&s, &files(), &expect()), Err(BundleError::BadSignature));
    }
}
