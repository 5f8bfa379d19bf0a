//! The model registry: `models pack` makes a bundle from a shipped model, `models push` signs
//! it with the PKI's key and stores it (the same version twice: unchanged; other content under
//! an existing version: refused), `models list` and `GET /v1/models` show it, and the stored
//! bundle verifies against `signing.pub`.

use std::path::{Path, PathBuf};
use std::process::Command;
use tandem_engine::bundle::read_folder;
use tandem_hub::pki::Pki;
use tandem_hub::registry::{PackOptions, Pushed, Registry, RegistryError, load_signer, pack};
use tandem_shared::bundle::{self, BundleError, Expect, TrustedKey};
use tandem_shared::manifest::VariantRole;
use tandem_tests::repo;

fn fashion() -> PathBuf {
    repo().join("models/vision-fashion")
}

fn packed(dir: &Path, version: &str) -> PathBuf {
    let out = dir.join(format!("pack-{version}"));
    let opts = PackOptions {
        version: Some(version.into()),
        ..PackOptions::default()
    };
    pack(&fashion(), &out, &opts).expect("pack");
    out
}

fn trusted(pki: &Path) -> TrustedKey {
    TrustedKey::from_pem(&std::fs::read_to_string(pki.join("signing.pub")).expect("signing.pub"))
        .expect("public key")
}

#[test]
fn push_signs_with_the_pki_key_and_stores_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    Pki::init(&pki).expect("pki");
    let signer = load_signer(&pki).expect("signing.key reads as PKCS#8");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry");

    let src = packed(dir.path(), "1.0.1");
    let entry = match registry.push(&src, &signer).expect("push") {
        Pushed::Stored(e) => e,
        other => panic!("expected Stored, got {other:?}"),
    };
    assert_eq!(
        (entry.model.as_str(), entry.version.as_str()),
        ("vision-fashion", "1.0.1")
    );
    assert_eq!(entry.key_id, signer.id());

    // What devices download verifies against signing.pub, and only against it.
    let stored = read_folder(&registry.bundle_dir("vision-fashion", "1.0.1")).expect("read");
    let expect = Expect {
        role: VariantRole::Edge,
        model: Some("vision-fashion"),
        active: None,
        allow_older: false,
    };
    let v = bundle::verify(stored.input(), &trusted(&pki), &expect).expect("verifies");
    assert_eq!(v.digest(), entry.digest);
    assert!(
        v.files().iter().any(|f| f.starts_with("selftest/")),
        "{:?}",
        v.files()
    );
    assert!(
        !v.files().iter().any(|f| f == "cloud.onnx"),
        "the cloud file stays on the hub"
    );
    let other = dir.path().join("other-pki");
    Pki::init(&other).expect("pki");
    assert!(matches!(
        bundle::verify(stored.input(), &trusted(&other), &expect),
        Err(BundleError::UntrustedKey { .. })
    ));

    // Same content again: unchanged. Other content under the same version: refused.
    assert!(matches!(
        registry.push(&src, &signer),
        Ok(Pushed::Unchanged(_))
    ));
    let other_content = dir.path().join("other-content");
    pack(
        &fashion(),
        &other_content,
        &PackOptions {
            version: Some("1.0.1".into()),
            tolerance: 0.05,
            ..PackOptions::default()
        },
    )
    .expect("pack");
    match registry.push(&other_content, &signer) {
        Err(RegistryError::Exists { model, version, .. }) => {
            assert_eq!(
                (model.as_str(), version.as_str()),
                ("vision-fashion", "1.0.1")
            );
        }
        other => panic!("expected Exists, got {other:?}"),
    }

    // A corrupt file is refused before anything is stored.
    let corrupt = packed(dir.path(), "1.0.2");
    std::fs::write(corrupt.join("labels.txt"), "not the labels\n").expect("write");
    match registry.push(&corrupt, &signer) {
        Err(RegistryError::Bundle(BundleError::HashMismatch { path, .. })) => {
            assert_eq!(path, "labels.txt");
        }
        other => panic!("expected a sha256 mismatch, got {other:?}"),
    }
    let listed = registry.list().expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(!dir.path().join("registry/vision-fashion/1.0.2").exists());
    let staging = dir.path().join("registry/.staging");
    assert!(
        !staging.exists() || std::fs::read_dir(&staging).expect("ls").next().is_none(),
        "nothing left in staging"
    );
}

#[tokio::test]
async fn get_v1_models_lists_versions() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    Pki::init(&pki).expect("pki");
    let signer = load_signer(&pki).expect("signer");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry");
    for v in ["1.0.1", "1.0.10", "1.0.2"] {
        registry
            .push(&packed(dir.path(), v), &signer)
            .expect("push");
    }
    let app = tandem_hub::registry::http::routes::<()>(std::sync::Arc::new(registry));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body: serde_json::Value = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let m = &body["models"][0];
    assert_eq!(m["name"], "vision-fashion");
    assert_eq!(m["latest"], "1.0.10", "{body}");
    let versions: Vec<&str> = m["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_str().expect("version"))
        .collect();
    assert_eq!(versions, ["1.0.1", "1.0.2", "1.0.10"]);
}

fn hub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem-hub"))
}

#[test]
fn cli_packs_pushes_and_lists() {
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("hub.toml");
    std::fs::write(&conf, "pki_dir = \"pki\"\nregistry_dir = \"reg\"\n").expect("config");
    let run = |args: &[&str]| {
        let out = hub().args(args).output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let conf_s = conf.to_str().expect("utf-8");
    let bundle_dir = dir.path().join("b");
    let bundle_s = bundle_dir.to_str().expect("utf-8");

    // No PKI yet: the push names the key file and how to make it.
    let fashion = fashion();
    let (code, out, err) = run(&[
        "models",
        "pack",
        fashion.to_str().expect("utf-8"),
        bundle_s,
        "--version",
        "1.0.1",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("packed vision-fashion 1.0.1"), "{out}");
    let (code, _, err) = run(&["models", "push", bundle_s, "--config", conf_s]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("signing.key") && err.contains("tandem-hub init"),
        "{err}"
    );

    Pki::init(&dir.path().join("pki")).expect("pki");
    let (code, out, err) = run(&["models", "push", bundle_s, "--config", conf_s]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("stored vision-fashion 1.0.1"), "{out}");
    let (code, out, _) = run(&["models", "list", "--config", conf_s, "--json"]);
    assert_eq!(code, Some(0));
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["version"], "1.0.1");

    // An unsigned-bundle source with a broken description: refused with the reason (65).
    std::fs::write(bundle_dir.join("bundle.json"), "{\"bundle_version\": 1}").expect("write");
    let (code, _, err) = run(&["models", "push", bundle_s, "--config", conf_s]);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("manifest"), "{err}");
}

#[test]
fn a_text_model_packs_without_the_cloud_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    Pki::init(&pki).expect("pki");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry");
    let out = dir.path().join("text");
    let doc = pack(
        &repo().join("models/text-sentiment"),
        &out,
        &PackOptions::default(),
    )
    .expect("pack");
    assert!(
        doc["selftests"][0]["text"].is_string(),
        "{}",
        doc["selftests"][0]
    );
    registry
        .push(&out, &load_signer(&pki).expect("signer"))
        .expect("push");
    let version = doc["manifest"]["version"].as_str().expect("version");
    let stored = read_folder(&registry.bundle_dir("text-sentiment", version)).expect("read");
    assert!(stored.files.contains_key("edge-tokenizer.json"));
    assert!(!stored.files.contains_key("cloud.onnx"));
    assert!(!stored.files.contains_key("cloud-tokenizer.json"));
    let expect = Expect {
        role: VariantRole::Edge,
        model: Some("text-sentiment"),
        active: None,
        allow_older: false,
    };
    bundle::verify(stored.input(), &trusted(&pki), &expect).expect("verifies");
}

#[test]
fn pack_records_the_engines_answers_for_jpeg_self_tests() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = repo().join("models/vision-imagenet");
    let out = dir.path().join("imagenet");
    let mut cfg = tandem_hub::config::Config {
        base_dir: repo(),
        ..Default::default()
    };
    cfg.models.variant = "edge".into();
    let opts = PackOptions {
        record: Some(cfg.engine_settings()),
        ..PackOptions::default()
    };
    let doc = pack(&src, &out, &opts).expect("pack with the engine");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("testdata/expected.json")).expect("read"))
            .expect("json");
    let python: Vec<f64> = expected["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["variant"] == "edge")
        .take(10)
        .map(|c| c["score"].as_f64().expect("score"))
        .collect();
    let recorded: Vec<f64> = doc["selftests"]
        .as_array()
        .expect("selftests")
        .iter()
        .map(|t| t["score"].as_f64().expect("score"))
        .collect();
    assert_eq!(recorded.len(), python.len());
    // JPEG decoding differs between the pipelines: some scores move by several hundredths.
    let max_diff = recorded
        .iter()
        .zip(&python)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        max_diff > 0.02,
        "recorded {recorded:?} vs testdata {python:?}"
    );
    assert!(!dir.path().read_dir().expect("ls").any(|e| {
        e.expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with(".record")
    }));
}
