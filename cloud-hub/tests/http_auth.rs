//! Authentication of the hub's HTTP API on real sockets: bearer tokens (401 without, with a
//! wrong one; 200 with one from the file), the refusal of an open API off loopback at start,
//! and HTTPS that requires a device certificate from the hub's CA (revoked and foreign ones
//! refused).

mod common;

use common::{TOKEN, config, infer_request, repo, scrape, scratch, serve};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_hub::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
