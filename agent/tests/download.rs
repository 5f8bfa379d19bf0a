//! Model download over QUIC with mutual TLS on loopback: a bundle pushed to the hub's registry
//! arrives in ranges; a connection cut mid-transfer resumes from the bytes on disk; a bundle
//! signed by another key is refused before its model file is fetched; an unknown version is
//! refused by the hub.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tandem_agent::models::{DownloadError, DownloadOptions, fetch};
use tandem_engine::bundle::read_folder;
use tandem_hub::ingress::quic::QuicIngress;
use tandem_hub::pki::Pki;
use tandem_hub::registry::{PackOptions, Registry, load_signer, pack};
use tandem_shared::bundle::{self, BundleError, Expect, TrustedKey};
use tandem_shared::manifest::VariantRole;
use tandem_shared::wire::ALPN;
use tandem_tests::repo;
use tandem_tests::tls::quic_client_config;

/// The hub's QUIC ingress with `registry` and no models: it serves downloads only.
async fn hub(pki: &Path, registry: Registry) -> std::net::SocketAddr {
    let ingress = QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), pki)
        .expect("bind")
        .with_registry(Arc::new(registry));
    let addr = ingress.local_addr().expect("addr");
    tokio::spawn(ingress.run(std::future::pending()));
    addr
}

fn client(pki: &Path, device: &str) -> quinn::Endpoint {
    let (cert, key) = Pki::open(pki).expect("pki").device_files(device);
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
    endpoint.set_default_client_config(quic_client_config(
        &pki.join("ca.pem"),
        Some((cert, key)),
        ALPN,
    ));
    endpoint
}

async fn connect(endpoint: &quinn::Endpoint, addr: std::net::SocketAddr) -> quinn::Connection {
    endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake")
}

fn trusted(pki: &Path) -> TrustedKey {
    TrustedKey::from_pem(&std::fs::read_to_string(pki.join("signing.pub")).expect("pub"))
        .expect("key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_download_resumes_and_bad_bundles_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    Pki::init(&pki).expect("pki");
    Pki::open(&pki)
        .expect("pki")
        .add_device("cam-1", 30)
        .expect("device");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry");
    let pack_as = |version: &str| {
        let out = dir.path().join(format!("pack-{version}"));
        let opts = PackOptions {
            version: Some(version.into()),
            ..PackOptions::default()
        };
        pack(&repo().join("models/vision-fashion"), &out, &opts).expect("pack");
        out
    };
    registry
        .push(&pack_as("1.0.1"), &load_signer(&pki).expect("signer"))
        .expect("push");
    let thief = dir.path().join("thief");
    Pki::init(&thief).expect("pki");
    registry
        .push(&pack_as("1.0.2"), &load_signer(&thief).expect("signer"))
        .expect("push");
    let addr = hub(&pki, registry).await;
    let endpoint = client(&pki, "cam-1");
    let downloads = dir.path().join("downloads");
    let key = trusted(&pki);
    let opts = DownloadOptions {
        request_bytes: 4096,
    };

    // First attempt: the connection drops once 20 kB have arrived.
    let conn = connect(&endpoint, addr).await;
    let cut = Arc::new(AtomicBool::new(false));
    let (c, flag) = (conn.clone(), cut.clone());
    let cut_at_20k = move |done: u64, _total: u64| {
        if done > 20_000 && !flag.swap(true, Ordering::Relaxed) {
            c.close(0u32.into(), b"cable pulled");
        }
    };
    let first = fetch(
        &conn,
        "vision-fashion",
        "1.0.1",
        &downloads,
        &key,
        opts,
        &cut_at_20k,
    )
    .await;
    assert!(matches!(first, Err(DownloadError::Link(_))), "{first:?}");
    assert!(cut.load(Ordering::Relaxed));

    // Second attempt on a new connection: resumes from what is on disk.
    let conn = connect(&endpoint, addr).await;
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let count = move |_: u64, _: u64| {
        counted.fetch_add(1, Ordering::Relaxed);
    };
    let done = fetch(
        &conn,
        "vision-fashion",
        "1.0.1",
        &downloads,
        &key,
        opts,
        &count,
    )
    .await
    .expect("the resumed download completes");
    assert!(done.resumed > 20_000, "{done:?}");
    assert_eq!(done.resumed + done.transferred, done.total, "{done:?}");
    assert!(calls.load(Ordering::Relaxed) > 3);
    let read = read_folder(&done.dir).expect("bundle folder");
    let expect = Expect {
        role: VariantRole::Edge,
        model: Some("vision-fashion"),
        active: None,
        allow_older: false,
    };
    let verified = bundle::verify(read.input(), &key, &expect).expect("the download verifies");
    assert_eq!(verified.version(), "1.0.1");

    // Signed by another key: refused after bundle.json and bundle.sig, before edge.onnx.
    let other = fetch(
        &conn,
        "vision-fashion",
        "1.0.2",
        &downloads,
        &key,
        opts,
        &|_, _| {},
    )
    .await;
    assert!(
        matches!(
            other,
            Err(DownloadError::Bundle(BundleError::UntrustedKey { .. }))
        ),
        "{other:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&downloads)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        !leftovers
            .iter()
            .any(|n| n.starts_with("vision-fashion-1.0.2")),
        "{leftovers:?}"
    );

    // No such version.
    let missing = fetch(
        &conn,
        "vision-fashion",
        "9.9.9",
        &downloads,
        &key,
        opts,
        &|_, _| {},
    )
    .await;
    assert!(
        matches!(missing, Err(DownloadError::Refused(_))),
        "{missing:?}"
    );
}

/// The registry folder of a pushed version's bundle, to tamper with (a hostile or broken hub).
fn stored(registry_dir: &Path, version: &str) -> std::path::PathBuf {
    registry_dir
        .join("vision-fashion")
        .join(version)
        .join("bundle")
}

fn leftovers(downloads: &Path, version: &str) -> Vec<String> {
    std::fs::read_dir(downloads)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(&format!("vision-fashion-{version}")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_description_is_refused_before_download_and_refusals_leave_no_folder() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    Pki::init(&pki).expect("pki");
    Pki::open(&pki)
        .expect("pki")
        .add_device("cam-1", 30)
        .expect("device");
    let registry_dir = dir.path().join("registry");
    let registry = Registry::open(&registry_dir).expect("registry");
    for version in ["1.0.3", "1.0.4"] {
        let out = dir.path().join(format!("pack-{version}"));
        let opts = PackOptions {
            version: Some(version.into()),
            ..PackOptions::default()
        };
        pack(&repo().join("models/vision-fashion"), &out, &opts).expect("pack");
        registry
            .push(&out, &load_signer(&pki).expect("signer"))
            .expect("push");
    }
    // 1.0.3's bundle.json becomes 300 MB (sparse): the offer says so.
    let json = std::fs::OpenOptions::new()
        .write(true)
        .open(stored(&registry_dir, "1.0.3").join("bundle.json"))
        .expect("bundle.json");
    json.set_len(300_000_000).expect("grow");
    drop(json);
    // 1.0.4's model file is altered after signing (same size): its sha256 no longer matches.
    let model = stored(&registry_dir, "1.0.4").join("edge.onnx");
    let mut bytes = std::fs::read(&model).expect("edge.onnx");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&model, &bytes).expect("tamper");

    let addr = hub(&pki, registry).await;
    let endpoint = client(&pki, "cam-1");
    let conn = connect(&endpoint, addr).await;
    let downloads = dir.path().join("downloads");
    let key = trusted(&pki);
    let opts = DownloadOptions::default();

    let fetched = Arc::new(AtomicU64::new(0));
    let seen = fetched.clone();
    let count = move |done: u64, _: u64| {
        seen.fetch_max(done, Ordering::Relaxed);
    };
    let big = fetch(
        &conn,
        "vision-fashion",
        "1.0.3",
        &downloads,
        &key,
        opts,
        &count,
    )
    .await;
    match &big {
        Err(DownloadError::Bundle(BundleError::Malformed(m))) => {
            assert!(m.contains("bundle.json") && m.contains("300000000"), "{m}")
        }
        other => panic!("expected a refusal of the offer, got {other:?}"),
    }
    assert_eq!(fetched.load(Ordering::Relaxed), 0, "nothing downloaded");
    assert_eq!(leftovers(&downloads, "1.0.3"), Vec::<String>::new());

    let bad = fetch(
        &conn,
        "vision-fashion",
        "1.0.4",
        &downloads,
        &key,
        opts,
        &|_, _| {},
    )
    .await;
    assert!(
        matches!(
            bad,
            Err(DownloadError::Bundle(BundleError::HashMismatch { .. }))
        ),
        "{bad:?}"
    );
    assert_eq!(leftovers(&downloads, "1.0.4"), Vec::<String>::new());
}
