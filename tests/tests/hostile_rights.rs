//! Hostile-input suite, rights (issue 11, Found 1, 2 and part of 9), against the built
//! `tandem-hub` run as a daemon, as a hostile user would try it:
//! - a device certificate on the HTTPS API is no fleet administrator: cam-a cannot change
//!   cam-b's threshold, downgrade it, start a rollout or read the fleet; an operator's or a
//!   subscriber's certificate is no device on QUIC;
//! - the loopback API refuses a local user without the operator token (a rollout, a forced
//!   downgrade), a web page's cross-site `text/plain` POST, and a rebound `Host`;
//! - the CLI uses the operator token the hub wrote (0600), keys are 0600, and a certificate
//!   of 0 days is refused.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tandem_tests::process::Logged;
use tandem_tests::raw::{Raw, request};
use tandem_tests::{binary, models_dir, scratch};

const PATIENCE: Duration = Duration::from_secs(60);
const SPEC: &str = r#"{"model": "vision-fashion", "version": "1.0.1", "canary_pct": 100}"#;
const THRESHOLD: &str = r#"{"model": "vision-fashion", "threshold": 0.99}"#;
const DOWNGRADE: &str = r#"{"model": "vision-fashion", "version": "1.0.1", "rollback": true}"#;

/// `tandem-hub ARGS` run to its end: exit code, stdout and stderr.
fn hub_cli(args: &[&str]) -> (i32, String) {
    tandem_tests::process::output_text(Command::new(binary("tandem-hub")).args(args))
}

fn ok(args: &[&str]) -> String {
    let (code, text) = hub_cli(args);
    assert_eq!(code, 0, "tandem-hub {args:?}: {text}");
    text
}

struct Hub {
    dir: tandem_tests::Scratch,
    proc: Logged,
    addr: SocketAddr,
    quic: SocketAddr,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(10));
    }
}

impl Hub {
    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    fn config(&self) -> String {
        self.dir.join("hub.toml").display().to_string()
    }

    fn tls(&self, cert: &str) -> Arc<rustls::ClientConfig> {
        let p = self.pki();
        Arc::new(tandem_tests::tls::client_config(
            &p.join("ca.pem"),
            Some((p.join(format!("{cert}.pem")), p.join(format!("{cert}.key")))),
        ))
    }

    /// A request over HTTPS as `cert` (`devices/cam-a`, `operators/alice`).
    async fn as_cert(&self, cert: &str, req: Raw<'_>) -> (u16, String) {
        request(self.addr, Some(self.tls(cert)), req)
            .await
            .unwrap_or_else(|e| panic!("{cert}: {e}\n{}", self.proc.log_text()))
    }

    async fn plain(&self, req: Raw<'_>) -> (u16, String) {
        request(self.addr, None, req).await.expect("an answer")
    }
}

/// A PKI (devices cam-a, cam-b; operator alice), vision-fashion 1.0.1 in the registry, and the
/// hub running on it with its HTTP API on loopback, HTTPS when `tls`.
fn start(name: &str, tls: bool) -> Hub {
    let dir = scratch(name);
    let d = |p: &str| dir.join(p).display().to_string();
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "log_filter = \"info,ort=warn\"\npki_dir = \"pki\"\nfeedback_dir = \"feedback\"\n\
             registry_dir = \"registry\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\ntls = {tls}\n[quic]\nlisten = \"127.0.0.1:0\"\n\
             [runtime]\nintra_op_threads = 1\n[engine]\nworkers = 1\n\
             [models]\ndir = \"{}\"\nenabled = [\"vision-fashion\"]\n\
             [mqtt]\nlisten = \"127.0.0.1:0\"\nruntime_dir = \"run/mqtt\"\n[fleet]\ndir = \"state\"\n",
            models_dir().display()
        ),
    )
    .expect("hub.toml");
    ok(&["init", "--dir", &d("pki")]);
    for device in ["cam-a", "cam-b"] {
        ok(&["device", "add", device, "--dir", &d("pki")]);
    }
    ok(&[
        "operator",
        "add",
        "alice",
        "--dir",
        &d("pki"),
        "--days",
        "7",
    ]);
    let bundle = d("bundle");
    ok(&[
        "models",
        "pack",
        &models_dir().join("vision-fashion").display().to_string(),
        &bundle,
        "--version",
        "1.0.1",
        "--expected",
        "testdata",
    ]);
    ok(&["models", "push", &bundle, "--config", &d("hub.toml")]);
    let (proc, http) = Logged::spawn(
        Command::new(binary("tandem-hub"))
            .args(["run", "--config", &d("hub.toml")])
            .current_dir(&dir)
            .env_remove("RUST_LOG"),
        PATIENCE,
        |line| {
            line.contains("tandem-hub serving")
                .then(|| {
                    let field = |k: &str| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(k))
                            .map(str::to_string)
                    };
                    Some(format!("{} {}", field("http=")?, field("quic=")?))
                })
                .flatten()
        },
    );
    let addrs: Option<(SocketAddr, SocketAddr)> = http.and_then(|a| {
        let (h, q) = a.split_once(' ')?;
        Some((h.parse().ok()?, q.parse().ok()?))
    });
    let Some((addr, quic)) = addrs else {
        panic!("the hub did not start:\n{}", proc.log_text());
    };
    Hub {
        dir,
        proc,
        addr,
        quic,
    }
}

fn rollouts(body: &str) -> usize {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["rollouts"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_is_no_fleet_administrator() {
    let hub = tokio::task::block_in_place(|| start("hostile-rights-https", true));
    let cam_a = "devices/cam-a";
    let attacks = [
        Raw::post_json(
            "/v1/fleet/cam-b/cmd/set_threshold?timeout_ms=300",
            THRESHOLD,
        ),
        Raw::post_json("/v1/fleet/cam-b/cmd/update_model?timeout_ms=300", DOWNGRADE),
        Raw::post_json("/v1/rollouts", SPEC),
        Raw::get("/v1/fleet"),
        Raw::get("/v1/fleet/cam-b"),
    ];
    for req in attacks {
        let (status, body) = hub.as_cert(cam_a, req).await;
        assert_eq!(status, 403, "cam-a: {} {}: {body}", req.method, req.path);
    }
    // What a device needs stays open to it.
    let (status, body) = hub
        .as_cert(cam_a, Raw::get("/v2/models/vision-fashion"))
        .await;
    assert_eq!(status, 200, "{body}");
    // The operator's certificate passes the same gate: no rollout was started by cam-a, and
    // a command goes out.
    let (status, body) = hub
        .as_cert("operators/alice", Raw::get("/v1/rollouts"))
        .await;
    assert_eq!((status, rollouts(&body)), (200, 0), "{body}");
    let (status, body) = hub
        .as_cert(
            "operators/alice",
            Raw::post_json(
                "/v1/fleet/cam-b/cmd/set_threshold?timeout_ms=300",
                THRESHOLD,
            ),
        )
        .await;
    // Past the gate, to the fleet: no device answers (504), or the hub's own MQTT link is not
    // up yet (503).
    assert!(matches!(status, 503 | 504), "{status}: {body}");
    // An operator's or a subscriber's certificate is no device on QUIC: it names none, and
    // the hub closes it.
    let pki = hub.pki().display().to_string();
    let (code, text) = hub_cli(&["subscriber", "add", "dash", "--dir", &pki]);
    assert_eq!(code, 0, "{text}");
    for who in ["operators/alice", "subscribers/dash"] {
        let quic = tandem_tests::tls::quic_client_config(
            &hub.pki().join("ca.pem"),
            Some((
                hub.pki().join(format!("{who}.pem")),
                hub.pki().join(format!("{who}.key")),
            )),
            b"tandem/1",
        );
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(quic);
        let conn = endpoint
            .connect(hub.quic, "localhost")
            .expect("connect")
            .await
            .expect("the handshake itself succeeds: the certificate is valid");
        let closed = tokio::time::timeout(PATIENCE, conn.closed())
            .await
            .expect("the hub closes the connection");
        assert!(
            closed.to_string().contains("certificate names no device"),
            "{who}: {closed}"
        );
    }
    let log = hub.proc.log_text();
    assert!(
        log.contains("a device called an operator route: refused"),
        "the refusals are logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_api_refuses_local_users_and_web_pages() {
    let hub = tokio::task::block_in_place(|| start("hostile-rights-loopback", false));
    // A local user without the token: a rollout, a forced downgrade.
    for req in [
        Raw::post_json("/v1/rollouts", SPEC),
        Raw::post_json("/v1/fleet/cam-b/cmd/update_model?timeout_ms=300", DOWNGRADE),
        Raw::get("/v1/fleet"),
    ] {
        let (status, body) = hub.plain(req).await;
        assert_eq!(status, 401, "{} {}: {body}", req.method, req.path);
    }
    // A web page: a cross-site "simple request" (text/plain, foreign Origin).
    let page = [
        ("Content-Type", "text/plain"),
        ("Origin", "http://evil.example"),
    ];
    let (status, body) = hub
        .plain(
            Raw::post_json(
                "/v1/fleet/cam-b/cmd/set_threshold?timeout_ms=300",
                THRESHOLD,
            )
            .with_headers(&page),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // DNS rebinding: the page's name now resolves to 127.0.0.1.
    let host = format!("rebind.evil.example:{}", hub.addr.port());
    let (status, body) = hub
        .plain(Raw::get("/v2/models/vision-fashion").with_headers(&[("Host", host.as_str())]))
        .await;
    assert_eq!(status, 421, "{body}");

    // The hub wrote its operator token 0600 at init; the CLI uses it by default.
    for f in [
        "operator.token",
        "ca.key",
        "hub.key",
        "signing.key",
        "devices/cam-a.key",
        "operators/alice.key",
    ] {
        let mode = mode(&hub.pki().join(f));
        assert_eq!(mode, 0o600, "{f}: {mode:o}");
    }
    let cfg = hub.config();
    let api = format!("http://{}", hub.addr);
    let started = ok(&[
        "rollout",
        "start",
        "--model",
        "vision-fashion",
        "--version",
        "1.0.1",
        "--canary",
        "100",
        "--config",
        &cfg,
        "--hub",
        &api,
    ]);
    assert!(started.contains("vision-fashion-1.0.1"), "{started}");
    let (status, body) = hub.plain(Raw::get("/v1/rollouts")).await;
    assert_eq!(status, 401, "{body}");
    let status_text = ok(&["rollout", "status", "--config", &cfg, "--hub", &api]);
    assert!(
        status_text.contains("vision-fashion-1.0.1"),
        "{status_text}"
    );
    // Another token file given: the hub refuses it.
    let wrong = hub.dir.join("wrong.token");
    std::fs::write(&wrong, "not-the-operator-token-0123456789\n").expect("write");
    let (code, text) = hub_cli(&[
        "rollout",
        "status",
        "--config",
        &cfg,
        "--hub",
        &api,
        "--token-file",
        &wrong.display().to_string(),
    ]);
    assert!(code != 0 && text.contains("401"), "{code}: {text}");

    // Certificates of 0 days (already expired) or of centuries are refused.
    let pki = hub.pki().display().to_string();
    for (what, days) in [
        ("device", "0"),
        ("device", "100000"),
        ("operator", "0"),
        ("operator", "-3"),
        ("operator", "5000"),
    ] {
        let days_arg = format!("--days={days}");
        let (code, text) = hub_cli(&[what, "add", "cam-c", "--dir", &pki, &days_arg]);
        assert_eq!(code, 64, "{what} --days {days}: {text}");
        assert!(text.contains("1 to 3650 days"), "{text}");
    }
    assert!(!hub.pki().join("devices/cam-c.pem").exists());
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}
