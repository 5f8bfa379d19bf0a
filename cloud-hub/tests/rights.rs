//! Rights on the hub's HTTP API, route × principal, on real sockets (the hub's own listener,
//! HTTP and HTTPS, with its registry and rollouts): no credentials, a wrong token, the
//! operator token, an operator certificate, a device certificate, a revoked operator
//! certificate; and the browser's attacks (a cross-site `text/plain` POST, a rebound `Host`;
//! the names of the hub's certificate are its own).

mod common;

use common::{config, scratch};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tandem_engine::metrics::Metrics;
use tandem_hub::api::{HttpServer, HubApi};
use tandem_hub::pki::Pki;
use tandem_hub::registry::{PackOptions, Registry, load_signer, pack};
use tandem_hub::rollout::RolloutStore;
use tandem_hub::rollout::http::RolloutApi;
use tandem_tests::raw::{Raw, request};
use tandem_tests::repo;
use tandem_tests::tls::client_config;

const SPEC: &str = r#"{"model": "vision-fashion", "version": "1.0.1", "canary_pct": 50}"#;

struct Hub {
    addr: SocketAddr,
    pki: Pki,
    token: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tandem_tests::Scratch,
}

/// A PKI (devices cam-a, cam-b; operators alice, and mallory revoked), a registry holding
/// vision-fashion 1.0.1, and the hub's API over them on a free loopback port.
async fn hub(name: &str, tls: bool) -> Hub {
    let dir = scratch(name);
    let names = tandem_hub::pki::HubNames {
        dns: vec!["hub.example".into()],
        ips: Vec::new(),
    };
    let pki = Pki::init_for(&dir.join("pki"), &names).expect("pki");
    let token_file = pki.dir().join(tandem_hub::api::auth::OPERATOR_TOKEN_FILE);
    tandem_hub::api::auth::create_token_file(&token_file).expect("token");
    let token = tandem_tests::http::operator_token(pki.dir());
    for d in ["cam-a", "cam-b"] {
        pki.add_device(d, 30).expect("device");
    }
    for o in ["alice", "mallory"] {
        pki.add_operator(o, 30).expect("operator");
    }
    pki.revoke_operator("mallory").expect("revoke");
    let registry = Registry::open(&dir.join("registry")).expect("registry");
    let src = dir.join("pack");
    let opts = PackOptions {
        version: Some("1.0.1".into()),
        ..PackOptions::default()
    };
    pack(&repo().join("models/vision-fashion"), &src, &opts).expect("pack");
    registry
        .push(&src, &load_signer(pki.dir()).expect("signer"))
        .expect("push");
    let registry = Arc::new(registry);
    let store = RolloutStore::open(&dir.join("registry/.rollouts")).expect("store");

    let mut cfg = config(&["vision-fashion"]);
    cfg.pki_dir = pki.dir().to_path_buf();
    cfg.http.tls = tls;
    let settings = cfg.engine_settings();
    let engine = tokio::task::block_in_place(|| {
        tandem_engine::engine::start(&settings, Arc::new(Metrics::default())).map(|(_, e)| e)
    })
    .expect("hub engine (run `make setup`)");
    let api = HubApi::new(&cfg, Arc::new(engine), None)
        .with_registry(registry.clone())
        .with_rollouts(Arc::new(RolloutApi { store, registry }));
    let server = HttpServer::bind(&cfg, Arc::new(api)).await.expect("bind");
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Hub {
        addr,
        pki,
        token,
        _stop: tx,
        _dir: dir,
    }
}

/// Who calls, over HTTPS.
#[derive(Debug, Clone, Copy)]
enum Cert {
    Device(&'static str),
    Operator(&'static str),
    None,
}

impl Hub {
    fn tls(&self, who: Cert) -> Arc<rustls::ClientConfig> {
        let identity = match who {
            Cert::Device(d) => Some(self.pki.device_files(d)),
            Cert::Operator(o) => Some(self.pki.operator_files(o)),
            Cert::None => None,
        };
        Arc::new(client_config(&self.pki.dir().join("ca.pem"), identity))
    }

    async fn https(&self, who: Cert, req: Raw<'_>) -> Result<(u16, String), String> {
        request(self.addr, Some(self.tls(who)), req).await
    }

    async fn http(&self, req: Raw<'_>) -> (u16, String) {
        request(self.addr, None, req).await.expect("an answer")
    }

    /// The rollouts the hub holds (as the operator).
    async fn rollouts(&self, tls: bool) -> Vec<Value> {
        let auth = format!("Bearer {}", self.token);
        let headers = [("Authorization", auth.as_str())];
        let req = Raw::get("/v1/rollouts").with_headers(&headers);
        let (status, body) = if tls {
            self.https(Cert::Device("cam-a"), req).await.expect("https")
        } else {
            self.http(req).await
        };
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        v["rollouts"].as_array().expect("rollouts").clone()
    }
}

const CMD: &str = "/v1/fleet/cam-b/cmd/set_threshold";
const THRESHOLD: &str = r#"{"model": "vision-fashion", "threshold": 0.1}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_devices_infer_and_only_operators_operate() {
    let hub = hub("rights-https", true).await;
    let reads = [
        "/v2/health/ready",
        "/v2/models/vision-fashion",
        "/metrics",
        "/v1/models",
        "/v1/rollouts",
    ];
    // A device: health and inference; no fleet-wide read, no change.
    for (path, want) in reads.iter().zip([200, 200, 403, 403, 403]) {
        let got = hub.https(Cert::Device("cam-a"), Raw::get(path)).await;
        assert_eq!(
            got.as_ref().map(|r| r.0),
            Ok(want),
            "cam-a GET {path}: {got:?}"
        );
    }
    let (status, body) = hub
        .https(Cert::Device("cam-a"), Raw::post_json(CMD, THRESHOLD))
        .await
        .expect("answer");
    assert_eq!(status, 403, "cam-a changing cam-b: {body}");
    assert!(
        body.contains("cam-a") && body.contains("operator"),
        "{body}"
    );
    let (status, body) = hub
        .https(Cert::Device("cam-a"), Raw::post_json("/v1/rollouts", SPEC))
        .await
        .expect("answer");
    assert_eq!(status, 403, "cam-a starting a rollout: {body}");
    assert!(
        hub.rollouts(true).await.is_empty(),
        "no rollout was started"
    );
    // A device with a wrong token is not promoted by it.
    let bad = [("Authorization", "Bearer not-the-operator-token-0123")];
    let got = hub
        .https(
            Cert::Device("cam-a"),
            Raw::post_json("/v1/rollouts", SPEC).with_headers(&bad),
        )
        .await;
    assert_eq!(got.map(|r| r.0), Ok(401));

    // The operator's certificate: every read, and the changes.
    for path in reads {
        let got = hub.https(Cert::Operator("alice"), Raw::get(path)).await;
        assert_eq!(
            got.as_ref().map(|r| r.0),
            Ok(200),
            "alice GET {path}: {got:?}"
        );
    }
    let (status, body) = hub
        .https(
            Cert::Operator("alice"),
            Raw::post_json("/v1/rollouts", SPEC),
        )
        .await
        .expect("answer");
    assert_eq!(status, 201, "alice starts a rollout: {body}");
    let id = serde_json::from_str::<Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let abort = format!("/v1/rollouts/{id}/abort");
    let got = hub
        .https(Cert::Device("cam-b"), Raw::post_json(&abort, "{}"))
        .await;
    assert_eq!(got.map(|r| r.0), Ok(403), "a device aborting a rollout");
    // No fleet behind this API: the command passes the gate and finds no route.
    let got = hub
        .https(Cert::Operator("alice"), Raw::post_json(CMD, THRESHOLD))
        .await;
    assert_eq!(got.map(|r| r.0), Ok(404));
    let got = hub
        .https(Cert::Operator("alice"), Raw::post_json(&abort, "{}"))
        .await;
    assert_eq!(got.map(|r| r.0), Ok(200), "alice aborts it");

    // A revoked operator certificate and none at all are refused at the handshake.
    for who in [Cert::Operator("mallory"), Cert::None] {
        let got = hub.https(who, Raw::get("/v2/health/ready")).await;
        assert!(got.is_err(), "{who:?} was served: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_operator_routes_need_the_operator_token() {
    let hub = hub("rights-http", false).await;
    let auth = format!("Bearer {}", hub.token);
    let operator = [("Authorization", auth.as_str())];
    let wrong = [("Authorization", "Bearer wrong-token-0123456789abcdef")];
    // (request, without credentials, with the operator token)
    let cases = [
        (Raw::get("/v2/health/live"), 200, 200),
        (Raw::get("/v2/models/vision-fashion"), 200, 200),
        (Raw::get("/metrics"), 200, 200),
        (Raw::get("/v1/models"), 401, 200),
        (Raw::get("/v1/rollouts"), 401, 200),
        (Raw::post_json(CMD, THRESHOLD), 401, 404),
        (Raw::post_json("/v1/rollouts/none/pause", "{}"), 401, 404),
    ];
    for (req, anonymous, with_token) in cases {
        let (status, body) = hub.http(req).await;
        assert_eq!(
            status, anonymous,
            "{} {} anonymous: {body}",
            req.method, req.path
        );
        let (status, body) = hub.http(req.with_headers(&wrong)).await;
        assert_eq!(
            status, 401,
            "{} {} wrong token: {body}",
            req.method, req.path
        );
        let mut headers = operator.to_vec();
        headers.extend(req.headers);
        let (status, body) = hub.http(req.with_headers(&headers)).await;
        assert_eq!(
            status, with_token,
            "{} {} operator: {body}",
            req.method, req.path
        );
    }
    let (status, body) = hub.http(Raw::post_json("/v1/rollouts", SPEC)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("operator"), "{body}");
    assert!(hub.rollouts(false).await.is_empty());
    let headers = [operator[0], ("Content-Type", "application/json")];
    let (status, body) = hub
        .http(Raw::post_json("/v1/rollouts", SPEC).with_headers(&headers))
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_reach_the_loopback_api() {
    let hub = hub("rights-browser", false).await;
    let auth = format!("Bearer {}", hub.token);
    // A cross-site "simple request": text/plain, a foreign Origin (no preflight, no token).
    let simple = [
        ("Content-Type", "text/plain"),
        ("Origin", "http://evil.example"),
    ];
    for path in [CMD, "/v1/rollouts", "/v2/models/vision-fashion/infer"] {
        let (status, body) = hub
            .http(Raw::post_json(path, SPEC).with_headers(&simple))
            .await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Even with the token: no foreign Origin, no text/plain body.
    let foreign = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", "http://evil.example"),
    ];
    let (status, _) = hub
        .http(Raw::post_json("/v1/rollouts", SPEC).with_headers(&foreign))
        .await;
    assert_eq!(status, 403);
    let text = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "text/plain"),
    ];
    let (status, body) = hub
        .http(Raw::post_json("/v1/rollouts", SPEC).with_headers(&text))
        .await;
    assert_eq!(status, 415, "{body}");
    let (status, _) = hub
        .http(
            Raw::post_json("/v2/models/vision-fashion/infer", "{}")
                .with_headers(&[("Content-Type", "application/x-www-form-urlencoded")]),
        )
        .await;
    assert_eq!(status, 415);
    // DNS rebinding: the page's own name, now resolving to 127.0.0.1.
    let port = hub.addr.port();
    let rebound = format!("rebind.evil.example:{port}");
    for req in [
        Raw::get("/v2/models/vision-fashion"),
        Raw::get("/metrics"),
        Raw::get("/v1/rollouts"),
    ] {
        let headers = [("Host", rebound.as_str()), ("Authorization", auth.as_str())];
        let (status, body) = hub.http(req.with_headers(&headers)).await;
        assert_eq!(status, 421, "{}: {body}", req.path);
    }
    assert!(hub.rollouts(false).await.is_empty(), "nothing was started");
    // The hub's own names pass (its certificate's too), and a same-origin Origin.
    let named = format!("hub.example:{port}");
    let (status, body) = hub
        .http(Raw::get("/v2/models/vision-fashion").with_headers(&[("Host", named.as_str())]))
        .await;
    assert_eq!(status, 200, "{body}");
    let local = format!("localhost:{port}");
    let same = format!("http://localhost:{port}");
    for host in [
        local.as_str(),
        &format!("127.0.0.1:{port}"),
        &format!("[::1]:{port}"),
    ] {
        let headers = [("Host", host), ("Origin", same.as_str())];
        let want = if host == local { 200 } else { 403 };
        let (status, body) = hub
            .http(Raw::get("/v2/models/vision-fashion").with_headers(&headers))
            .await;
        assert_eq!(status, want, "Host {host}, Origin {same}: {body}");
    }
}
