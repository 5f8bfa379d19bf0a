//! The hub's HTTP API on real loopback sockets over the real cloud variants: OIP v2 answers
//! that match the reference outputs and labels, the real Triton client, a full queue, the
//! batch-size histogram; bearer tokens, the refusal of an open API off loopback, and HTTPS with
//! client certificates from the hub's PKI.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_engine::{Engine, metrics::Metrics};
use tandem_hub::api::{HttpServer, HubApi};
use tandem_hub::config::Config;
use tandem_hub::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "tok-0123456789abcdef-ops";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tandem-hub-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A hub config over the repository's models on a free loopback port.
fn config(models: &[&str]) -> Config {
    let mut cfg = Config {
        base_dir: repo(),
        ..Config::default()
    };
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.http.max_body_bytes = 16 * 1024 * 1024;
    cfg.models.enabled = models.iter().map(|m| m.to_string()).collect();
    cfg
}

/// Starts the engine and the HTTP API of `cfg`; serves until the returned sender is dropped.
async fn serve(cfg: &Config) -> (SocketAddr, Arc<Engine>, tokio::sync::oneshot::Sender<()>) {
    let settings = cfg.engine_settings();
    let engine = tokio::task::block_in_place(|| {
        tandem_engine::engine::start(&settings, Arc::new(Metrics::default())).map(|(_, e)| e)
    })
    .expect("hub engine (run `make setup`)");
    let engine = Arc::new(engine);
    let api = Arc::new(HubApi::new(cfg, engine.clone(), None));
    let server = HttpServer::bind(cfg, api).await.expect("bind");
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (addr, engine, tx)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

/// `(model, sample file, expected top-1 label)` of the cloud variant.
fn expected_labels(model: &str) -> Vec<(String, String)> {
    let e = read_json(
        &repo()
            .join("models")
            .join(model)
            .join("testdata/expected.json"),
    );
    e["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["variant"] == "cloud")
        .map(|c| {
            let input = c["input"].as_str().expect("input").to_string();
            (input, c["top1"].as_str().expect("top1").to_string())
        })
        .collect()
}

/// An OIP request (binary extension) with one BYTES input holding an image file, asking for
/// the top class; and the length of its JSON part.
fn image_request(file: &[u8]) -> (Vec<u8>, usize) {
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": file.len() + 4}}], "outputs": [{"name": "logits", "parameters": {"classification": 1}}]})).expect("json");
    let header_len = header.len();
    let mut body = header;
    body.extend((file.len() as u32).to_le_bytes());
    body.extend(file);
    (body, header_len)
}

fn infer_request(
    c: &reqwest::Client,
    base: &str,
    model: &str,
    file: &[u8],
) -> reqwest::RequestBuilder {
    let (body, header_len) = image_request(file);
    c.post(format!("{base}/v2/models/{model}/infer"))
        .header("Inference-Header-Content-Length", header_len)
        .body(body)
}

async fn classify(c: &reqwest::Client, base: &str, model: &str, file: &[u8]) -> (u16, Value) {
    let r = infer_request(c, base, model, file)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `/metrics`, with a bearer token when given.
async fn scrape(c: &reqwest::Client, base: &str, token: Option<&str>) -> String {
    let mut req = c.get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("scrape");
    assert_eq!(r.status().as_u16(), 200, "/metrics");
    r.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oip_v2_answers_match_the_reference_and_the_expected_labels() {
    let (addr, _engine, _stop) = serve(&config(&["vision-fashion", "vision-imagenet"])).await;
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{base}{path}");
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.expect("get");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let ready = "/v2/models/vision-fashion/versions/1.0.0/ready";
    for path in ["/v2/health/live", "/v2/health/ready", ready] {
        assert_eq!(get(path).await.0, 200, "{path}");
    }
    let (_, server) = get("/v2").await;
    assert_eq!(server["name"], "tandem-hub", "{server}");
    let (_, meta) = get("/v2/models/vision-imagenet/versions/1.0.0").await;
    assert_eq!(meta["parameters"]["variant"], "cloud", "{meta}");
    assert_eq!(
        meta["inputs"][0]["shape"],
        json!([-1, 3, 260, 260]),
        "{meta}"
    );

    // JSON tensors against the Python reference logits of every cloud case.
    let refs = read_json(&repo().join("models/vision-fashion/testdata/reference.json"));
    let cloud = refs["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|k| k["variant"] == "cloud");
    for (i, case) in cloud.enumerate() {
        let spec = &case["inputs"][0];
        let file = spec["file"].as_str().expect("file");
        let bytes = std::fs::read(repo().join("models/vision-fashion").join(file)).expect("bin");
        let input: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let body = json!({"id": format!("hub-ref-{i}"), "inputs": [{"name": "input", "shape": spec["shape"], "datatype": "FP32", "data": input}]});
        let url = format!("{base}/v2/models/vision-fashion/versions/1.0.0/infer");
        let r = c.post(url).json(&body).send().await.expect("post");
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["id"], format!("hub-ref-{i}"), "{v}");
        assert_eq!(v["parameters"]["variant"], "cloud", "{v}");
        assert_eq!(v["parameters"]["batch_size"], 1, "{v}");
        let want = case["outputs"][0]["data"].as_array().expect("data");
        let got = v["outputs"][0]["data"].as_array().expect("data");
        assert_eq!(got.len(), want.len(), "{file}");
        for (g, w) in got.iter().zip(want) {
            let (g, w) = (g.as_f64().expect("f"), w.as_f64().expect("f"));
            assert!((g - w).abs() <= 1e-4, "{file}: logits {got:?} vs {want:?}");
        }
    }
    assert!(
        refs["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .any(|k| k["variant"] == "cloud"),
        "no cloud reference case"
    );

    // Image files as BYTES inputs: the expected top-1 labels of the cloud variants.
    for (model, take) in [("vision-fashion", usize::MAX), ("vision-imagenet", 3)] {
        for (file, label) in expected_labels(model).into_iter().take(take) {
            let bytes =
                std::fs::read(repo().join("models").join(model).join(&file)).expect("sample");
            let (s, v) = classify(&c, &base, model, &bytes).await;
            assert_eq!(s, 200, "{model} {file}: {v}");
            let top = v["outputs"][0]["data"][0].as_str().expect("classification");
            assert!(
                top.ends_with(&format!(":{label}")),
                "{model} {file}: `{top}`, expected {label}"
            );
            assert_eq!(v["parameters"]["label"], label.as_str(), "{v}");
        }
    }

    // Precise errors.
    let zeros = |shape: Value, n: usize| {
        serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": vec![0.0; n]}]})).expect("json")
    };
    let infer = |path: &str, body: Vec<u8>| c.post(format!("{base}{path}")).body(body);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "unknown model",
            infer(
                "/v2/models/no-such-model/infer",
                zeros(json!([1, 1, 28, 28]), 784),
            ),
            404,
            "no-such-model",
        ),
        (
            "unknown version",
            infer(
                "/v2/models/vision-fashion/versions/9.9.9/infer",
                zeros(json!([1, 1, 28, 28]), 784),
            ),
            404,
            "no version",
        ),
        (
            "wrong shape",
            infer(
                "/v2/models/vision-fashion/infer",
                zeros(json!([1, 1, 27, 28]), 27 * 28),
            ),
            400,
            "has shape",
        ),
        (
            "malformed JSON",
            infer(
                "/v2/models/vision-fashion/infer",
                b"{\"inputs\": [".to_vec(),
            ),
            400,
            "JSON",
        ),
        (
            "not an image",
            infer_request(&c, &base, "vision-fashion", b"not an image at all"),
            400,
            "not a JPEG or PNG",
        ),
        (
            "body over the limit",
            infer(
                "/v2/models/vision-fashion/infer",
                vec![b' '; 16 * 1024 * 1024 + 1],
            ),
            413,
            "http.max_body_bytes",
        ),
    ];
    for (what, req, want, needle) in cases {
        let r = req.send().await.expect("post");
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            status == want && msg.contains(needle),
            "{what}: {status} {v}, expected {want} and `{needle}`"
        );
    }
    let (status, v) = get("/no/such/route").await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].is_string(), "JSON error body: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_drives_the_hub() {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `make setup`",
        python.display()
    );
    let (addr, _engine, _stop) = serve(&config(&["vision-fashion"])).await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(repo().join("tests/python/triton_client_check.py"))
            .arg(addr.to_string())
            .arg(repo())
            .args(["cloud", "vision-fashion"])
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tritonclient check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_fills_the_batch_size_histogram_and_a_full_queue_answers_503() {
    let mut cfg = config(&["vision-fashion"]);
    cfg.engine.max_batch = 8;
    cfg.engine.max_batch_delay_us = 20_000;
    let (addr, _engine, _stop) = serve(&cfg).await;
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();
    let png = std::fs::read(repo().join("models/vision-fashion/samples/0_9.png")).expect("sample");
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (c, base, png) = (c.clone(), base.clone(), png.clone());
            tokio::spawn(async move { classify(&c, &base, "vision-fashion", &png).await })
        })
        .collect();
    for call in calls {
        let (s, v) = call.await.expect("task");
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["parameters"]["label"], "Ankle boot", "{v}");
    }
    let metrics = scrape(&c, &base, None).await;
    assert!(
        metrics.contains("# TYPE tandem_batch_size histogram"),
        "{metrics}"
    );
    // Every request ran in exactly one run, whatever the batching: the sizes add up to 16.
    assert!(
        metrics.contains("tandem_batch_size_sum{model=\"vision-fashion\"} 16\n"),
        "{metrics}"
    );
    let runs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tandem_batch_size_count{model=\"vision-fashion\"} "))
        .expect("count")
        .parse()
        .expect("number");
    assert!((1..=16).contains(&runs), "{runs} runs");
    assert!(
        metrics.contains(&format!(
            "tandem_batch_size_bucket{{model=\"vision-fashion\",le=\"8\"}} {runs}\n"
        )),
        "no run is over max_batch: {metrics}"
    );
    assert!(
        metrics.contains(
            "tandem_http_responses_total{route=\"/v2/models/{model}/infer\",status=\"200\"} 16"
        ),
        "{metrics}"
    );

    // A queue of one and eight large requests at once: some are told to come back later.
    let mut cfg = config(&["vision-fashion"]);
    cfg.engine.queue_capacity = 1;
    cfg.engine.max_batch = 1;
    let (addr, _engine, _stop) = serve(&cfg).await;
    let rows = 3000;
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [rows, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": rows * 784 * 4}}]})).expect("json");
    let mut body = header.clone();
    body.resize(header.len() + rows * 784 * 4, 0);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let req = c
                .post(format!("http://{addr}/v2/models/vision-fashion/infer"))
                .header("Inference-Header-Content-Length", header.len())
                .body(body.clone());
            tokio::spawn(async move {
                let r = req.send().await.expect("post");
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                (r.status().as_u16(), retry, r.text().await.expect("body"))
            })
        })
        .collect();
    let mut busy = 0;
    for call in calls {
        let (status, retry, text) = call.await.expect("task");
        match status {
            200 => {}
            503 => {
                busy += 1;
                assert_eq!(retry.as_deref(), Some("1"), "503 without Retry-After");
                assert!(text.contains("is busy"), "{text}");
            }
            other => panic!("status {other}: {text}"),
        }
    }
    assert!(busy >= 1, "no request was refused by a queue of one");
}

fn write_token_file(dir: &Path) -> PathBuf {
    let f = dir.join("tokens");
    std::fs::write(
        &f,
        format!("# operators\n{TOKEN}\nanother-token-0123456789\n"),
    )
    .expect("write tokens");
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required() {
    let dir = scratch("token");
    let mut cfg = config(&["vision-fashion"]);
    cfg.http.bearer_token_file = write_token_file(&dir);
    let (addr, _engine, _stop) = serve(&cfg).await;
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();
    let png = std::fs::read(repo().join("models/vision-fashion/samples/0_9.png")).expect("sample");
    let infer = |token: Option<&str>| {
        let req = infer_request(&c, &base, "vision-fashion", &png);
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
        .send()
    };
    for (token, challenge) in [
        (None, "Bearer realm=\"tandem-hub\""),
        (Some("wrong-token-0123456789"), "invalid_token"),
        (Some(&TOKEN[1..]), "invalid_token"),
    ] {
        let r = infer(token).await.expect("post");
        assert_eq!(r.status().as_u16(), 401, "{token:?}");
        let www = r
            .headers()
            .get("www-authenticate")
            .expect("WWW-Authenticate")
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            www.starts_with("Bearer") && www.contains(challenge),
            "{www}"
        );
        let v: Value = r.json().await.expect("JSON error body");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("bearer token")),
            "{v}"
        );
    }
    let r = infer(Some(TOKEN)).await.expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["parameters"]["label"], "Ankle boot", "{v}");
    let r = infer(Some("another-token-0123456789")).await.expect("post");
    assert_eq!(r.status().as_u16(), 200, "the second token in the file");
    // The liveness probe stays open; everything else is closed.
    for (path, want) in [("/v2/health/live", 200), ("/metrics", 401), ("/v2", 401)] {
        let r = c.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(r.status().as_u16(), want, "{path} without a token");
    }
    let metrics = scrape(&c, &base, Some(TOKEN)).await;
    assert!(
        metrics.contains(
            "tandem_http_responses_total{route=\"/v2/models/{model}/infer\",status=\"401\"} 3"
        ),
        "{metrics}"
    );
}

#[test]
fn an_open_api_off_loopback_is_refused_at_start() {
    let dir = scratch("open");
    let run = |extra: &str| {
        let f = dir.join("hub.toml");
        std::fs::write(&f, format!("[http]\nlisten = \"0.0.0.0:0\"\n{extra}"))
            .expect("write config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-hub"))
            .args(["validate", "--config"])
            .arg(&f)
            .output()
            .expect("run tandem-hub");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run("");
    assert_eq!(code, Some(78), "{err}");
    for key in ["http.listen", "http.bearer_token_file", "http.tls"] {
        assert!(err.contains(key), "`{err}` does not name {key}");
    }
    let f = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-hub"))
        .args(["run", "--config"])
        .arg(dir.join("hub.toml"))
        .output()
        .expect("run");
    assert_eq!(f.status.code(), Some(78), "`run` refuses it too");
    write_token_file(&dir);
    assert_eq!(
        run("bearer_token_file = \"tokens\"\n"),
        (Some(0), String::new())
    );
    assert_eq!(run("tls = true\n").0, Some(0));
    std::fs::write(dir.join("tokens"), "short\n").expect("write");
    let (code, err) = run("bearer_token_file = \"tokens\"\n");
    assert_eq!(code, Some(78));
    assert!(
        err.contains("http.bearer_token_file") && err.contains("line 1"),
        "{err}"
    );
}

/// `GET path` over HTTPS as `device` (`None`: no client certificate); the status code.
async fn https_get(
    addr: SocketAddr,
    pki: &Pki,
    device: Option<&str>,
    path: &str,
) -> Result<u16, String> {
    let ca = CertificateDer::pem_file_iter(pki.dir().join("ca.pem")).expect("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(ca.map(|c| c.expect("pem")));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match device {
        Some(d) => {
            let (cert, key) = pki.device_files(d);
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).expect("key"))
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let read = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
    {
        Some(code) => Ok(code),
        None => Err(format!("no HTTP answer ({read:?}): {text}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requires_a_device_certificate_from_the_hub_ca() {
    let dir = scratch("mtls");
    let pki = Pki::init(&dir.join("pki")).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    pki.add_device("cam-02", 365).expect("device");
    pki.revoke_device("cam-02").expect("revoke");
    let mut cfg = config(&["vision-fashion"]);
    cfg.http.tls = true;
    cfg.pki_dir = pki.dir().to_path_buf();
    let (addr, _engine, _stop) = serve(&cfg).await;
    assert_eq!(
        https_get(addr, &pki, Some("cam-01"), "/v2/health/ready").await,
        Ok(200)
    );
    assert_eq!(
        https_get(addr, &pki, Some("cam-01"), "/v2/models/vision-fashion").await,
        Ok(200)
    );
    let no_cert = https_get(addr, &pki, None, "/v2/health/ready").await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate was served: {no_cert:?}"
    );
    let revoked = https_get(addr, &pki, Some("cam-02"), "/v2/health/ready").await;
    assert!(
        revoked.is_err(),
        "a revoked certificate was served: {revoked:?}"
    );
    // Another CA's device is a stranger.
    let other = Pki::init(&dir.join("other")).expect("other pki");
    other.add_device("cam-01", 365).expect("device");
    let (cert, key) = other.device_files("cam-01");
    let (my_cert, my_key) = pki.device_files("cam-01");
    std::fs::copy(&cert, &my_cert).expect("swap cert");
    std::fs::copy(&key, &my_key).expect("swap key");
    let foreign = https_get(addr, &pki, Some("cam-01"), "/v2/health/ready").await;
    assert!(
        foreign.is_err(),
        "a foreign CA's certificate was served: {foreign:?}"
    );
    // Plain HTTP on the HTTPS port gets no answer from the API.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/v2/health/ready"))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status().as_u16() != 200));
}
