//! The console's routes on the hub's own listener (real sockets, HTTP and HTTPS with client
//! certificates): an unauthenticated visit gets the login page and no data, a login with the
//! operator token sets an `HttpOnly; SameSite=Strict` session cookie (`Secure` over HTTPS) that
//! the API accepts, a state-changing request with the cookie needs the CSRF header, a logout
//! ends the session, an operator certificate needs no login, and every console response carries
//! the security headers.

mod common;

use common::{config, scratch};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::Value;
use std::sync::Arc;
use tandem_engine::metrics::Metrics;
use tandem_hub::api::{HttpServer, HubApi};
use tandem_hub::config::Config;
use tandem_hub::feedback::Store;
use tandem_hub::pki::Pki;
use tandem_hub::registry::Registry;
use tandem_shared::record::{self, ExampleKind, ExampleMeta, Outcome, Record};

struct Hub {
    base: String,
    pki: Pki,
    token: String,
    feedback: Arc<Store>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tandem_tests::Scratch,
}

/// A hub API (with an empty registry) over a fresh PKI with an operator token, a device and an
/// operator certificate.
async fn hub(name: &str, tls: bool) -> Hub {
    let dir = scratch(name);
    let pki = Pki::init_for(
        &dir.join("pki"),
        &tandem_hub::pki::HubNames {
            dns: vec!["localhost".into()],
            ips: Vec::new(),
        },
    )
    .expect("pki");
    let token_file = pki.dir().join(tandem_hub::api::auth::OPERATOR_TOKEN_FILE);
    tandem_hub::api::auth::create_token_file(&token_file).expect("token");
    let token = tandem_tests::http::operator_token(pki.dir());
    pki.add_device("cam-a", 30).expect("device");
    pki.add_operator("alice", 30).expect("operator");
    let mut cfg: Config = config(&["vision-fashion"]);
    cfg.pki_dir = pki.dir().to_path_buf();
    cfg.http.tls = tls;
    let settings = cfg.engine_settings();
    let engine = tokio::task::block_in_place(|| {
        tandem_engine::engine::start(&settings, Arc::new(Metrics::default())).map(|(_, e)| e)
    })
    .expect("hub engine (run `make setup`)");
    let registry = Arc::new(Registry::open(&dir.join("registry")).expect("registry"));
    let feedback = Arc::new(Store::open(&dir.join("feedback")).expect("feedback store"));
    let api = HubApi::new(&cfg, Arc::new(engine), None)
        .with_registry(registry)
        .with_feedback(feedback.clone());
    let server = HttpServer::bind(&cfg, Arc::new(api)).await.expect("bind");
    let scheme = if tls { "https" } else { "http" };
    let base = format!("{scheme}://localhost:{}", server.local_addr().port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Hub {
        base,
        pki,
        token,
        feedback,
        _stop: tx,
        _dir: dir,
    }
}

impl Hub {
    /// A client that follows no redirect; over HTTPS with `identity`'s certificate.
    fn client(
        &self,
        identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    ) -> reqwest::Client {
        let b = reqwest::Client::builder().redirect(Policy::none());
        let b = if self.base.starts_with("https") {
            b.use_preconfigured_tls(tandem_tests::tls::client_config(
                &self.pki.dir().join("ca.pem"),
                identity,
            ))
        } else {
            b
        };
        b.build().expect("client")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} in {h:?}"))
        .to_str()
        .expect("ascii")
}

/// The console's security headers.
fn assert_secure_headers(h: &HeaderMap, what: &str) {
    let csp = header(h, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert_eq!(header(h, "x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header(h, "x-frame-options"), "DENY", "{what}");
}

/// Logs in with `token`: the status and the `Set-Cookie` value.
async fn login(c: &reqwest::Client, hub: &Hub, token: Option<&str>) -> (u16, Option<String>) {
    let mut req = c.post(hub.url("/console/login"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("login");
    let cookie = r
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_string());
    (r.status().as_u16(), cookie)
}

/// A request with `cookie` and the extra headers: its status, headers and body.
async fn send(
    req: reqwest::RequestBuilder,
    cookie: &str,
    extra: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    let mut req = req.header("cookie", cookie);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("an answer");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.expect("body"))
}

/// `name=value` of a `Set-Cookie` value.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("a pair").to_string()
}

const PAGES: [&str; 6] = [
    "/console",
    "/console/device/cam-a",
    "/console/rollouts",
    "/console/models",
    "/console/feedback",
    "/console/device/%3Cscript%3E",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cookie_csrf_and_headers_over_http() {
    let hub = hub("console-http", false).await;
    let c = hub.client(None);

    // Unauthenticated: every page sends to the login page, with no data; the API says 401.
    for page in PAGES {
        let r = c.get(hub.url(page)).send().await.expect("get");
        assert_eq!(r.status().as_u16(), 303, "{page}");
        let to = header(r.headers(), LOCATION.as_str()).to_string();
        assert!(
            to.starts_with("/console/login?next=/console"),
            "{page}: {to}"
        );
        assert!(!to.contains('<'), "{to}");
        assert_secure_headers(r.headers(), page);
        assert_eq!(r.text().await.expect("body"), "", "{page}: no data");
    }
    let r = c.get(hub.url("/v1/models")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 401);
    let r = c.get(hub.url("/console/login")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert_secure_headers(r.headers(), "login page");
    let html = r.text().await.expect("html");
    assert!(html.contains("/console/assets/login.js"), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let r = c
        .get(hub.url("/console/assets/fleet.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert!(header(r.headers(), "content-type").starts_with("text/javascript"));
    assert_secure_headers(r.headers(), "script");
    let r = c
        .get(hub.url("/console/assets/nope.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);

    // No token, or a wrong one: no session.
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, cookie) = login(&c, &hub, token).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(cookie, None, "{token:?}");
    }
    // A form posted from another site is refused before it reaches the login.
    let r = c
        .post(hub.url("/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", hub.token))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);

    let (status, set) = login(&c, &hub, Some(&hub.token)).await;
    assert_eq!(status, 200);
    let set = set.expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(
        !set.contains(&hub.token),
        "the cookie is not the token: {set}"
    );
    let cookie = pair(&set);

    // The cookie opens the pages and the API.
    let get = |path: &str| c.get(hub.url(path));
    let post = |path: &str| c.post(hub.url(path));
    for page in PAGES {
        let (status, headers, html) = send(get(page), &cookie, &[]).await;
        assert_eq!(status, 200, "{page}");
        assert_secure_headers(&headers, page);
        assert!(html.contains("type=\"module\""), "{page}: {html}");
        assert!(!html.contains("<script>"), "{page}: no inline script");
    }
    let (status, _, body) = send(get("/v1/models"), &cookie, &[]).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert!(v.is_object(), "{v}");

    // A forged or altered cookie is no credential.
    for forged in ["tandem_console=00", &format!("{cookie}0")] {
        let (status, _, _) = send(get("/v1/models"), forged, &[]).await;
        assert_eq!(status, 401, "{forged}");
    }

    // State changes with the cookie need the CSRF header; another Origin is refused anyway.
    let (status, _, body) = send(post("/console/logout"), &cookie, &[]).await;
    assert_eq!(status, 403);
    assert!(body.contains("x-tandem-console"), "{body}");
    let evil = [("x-tandem-console", "1"), ("origin", "http://evil.example")];
    let (status, _, _) = send(post("/console/logout"), &cookie, &evil).await;
    assert_eq!(status, 403);
    let (status, _, _) = send(get("/console"), &cookie, &[]).await;
    assert_eq!(status, 200, "still logged in");

    // Logout ends the session.
    let (status, headers, _) = send(
        post("/console/logout"),
        &cookie,
        &[("x-tandem-console", "1")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(header(&headers, "set-cookie").contains("Max-Age=0"));
    let (status, _, _) = send(get("/console"), &cookie, &[]).await;
    assert_eq!(status, 303, "logged out");
    let (status, _, _) = send(get("/v1/models"), &cookie, &[]).await;
    assert_eq!(status, 401, "logged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_certificates_and_secure_cookies_over_https() {
    let hub = hub("console-https", true).await;
    let alice = hub.client(Some(hub.pki.operator_files("alice")));
    let device = hub.client(Some(hub.pki.device_files("cam-a")));

    // An operator certificate needs no login.
    let r = alice.get(hub.url("/console")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert_secure_headers(r.headers(), "/console over HTTPS");
    // A device's certificate is not an operator's: the login page.
    let r = device
        .get(hub.url("/console/models"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 303);
    // With the token, the cookie is Secure.
    let (status, set) = login(&device, &hub, Some(&hub.token)).await;
    assert_eq!(status, 200);
    let set = set.expect("cookie");
    assert!(set.contains("Secure") && set.contains("HttpOnly"), "{set}");
    let (status, _, _) = send(device.get(hub.url("/v1/models")), &pair(&set), &[]).await;
    assert_eq!(status, 200);
}

/// A hard example as a device's queue delivers it.
fn hard_example(request_id: &str, png: &[u8]) -> Vec<u8> {
    let outcome = |label: &str, score: f32| Outcome {
        version: "1.0.0".into(),
        label: label.into(),
        index: 0,
        score,
        top_k: vec![(label.into(), score)],
    };
    record::encode(&Record::Example {
        meta: Box::new(ExampleMeta {
            kind: ExampleKind::Hard,
            request_id: request_id.into(),
            model: "vision-fashion".into(),
            time_ms: 1_700_000_000_000,
            input_kind: "image".into(),
            reason: "low_confidence".into(),
            local: Some(outcome("Shirt", 0.55)),
            cloud: Some(outcome("Coat", 0.97)),
            label: None,
            boxes: None,
        }),
        input: png.to_vec(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_from_the_console_is_a_devices_correction_record() {
    let hub = hub("console-correct", false).await;
    let png = std::fs::read(tandem_tests::repo().join("models/vision-fashion/samples/0_9.png"))
        .expect("sample");
    let telemetry = br#"{"v":1}"#;
    hub.feedback
        .ingest("cam-a", &[(77, 1, &hard_example("req-1", &png)[..])])
        .expect("ingest");
    let telemetry_record = record::encode(&Record::Telemetry(
        serde_json::from_slice(telemetry).expect("json"),
    ));
    hub.feedback
        .ingest("cam-a", &[(77, 2, &telemetry_record[..])])
        .expect("ingest");
    let c = hub.client(None);
    let (_, set) = login(&c, &hub, Some(&hub.token)).await;
    let cookie = pair(&set.expect("cookie"));
    let csrf = [
        ("x-tandem-console", "1"),
        ("content-type", "application/json"),
    ];
    let correct = |body: serde_json::Value| {
        c.post(hub.url("/v1/feedback/corrections"))
            .body(body.to_string())
    };

    // The input as the gallery shows it: its type, not sniffed, sandboxed.
    let (digest, records) = {
        let (status, _, body) = send(c.get(hub.url("/v1/feedback/records")), &cookie, &[]).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let d = v["items"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_string();
        (d, v["items"].as_array().expect("items").len())
    };
    assert_eq!(records, 2);
    let (status, headers, _) = send(
        c.get(hub.url(&format!("/v1/feedback/inputs/{digest}"))),
        &cookie,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert!(header(&headers, "content-security-policy").contains("sandbox"));

    // Refusals: no CSRF header, no credentials, no such record, not an example, a bad label.
    let body = serde_json::json!({"record": "cam-a/77/1", "label": "Coat"});
    let (status, _, _) = send(
        correct(body.clone()),
        &cookie,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(status, 403, "no CSRF header");
    let (status, _, _) = send(correct(body.clone()), "", &csrf).await;
    assert_eq!(status, 401, "no credentials");
    for (record, label, want) in [
        ("cam-a/77/9", "Coat", 404),
        ("cam-a/77/2", "Coat", 422),
        ("cam-a/77", "Coat", 400),
        ("cam-a/77/1", "", 422),
        ("cam-a/77/1", "Co\nat", 422),
    ] {
        let (status, _, msg) = send(
            correct(serde_json::json!({"record": record, "label": label})),
            &cookie,
            &csrf,
        )
        .await;
        assert_eq!(status, want, "{record} {label:?}: {msg}");
        assert!(msg.contains("error"), "{msg}");
    }
    assert_eq!(hub.feedback.len(), 2, "nothing stored by the refusals");

    // The correction: the same record a device's `/v1/feedback` makes, linked to its answer.
    let (status, _, body) = send(correct(body), &cookie, &csrf).await;
    assert_eq!(status, 201, "{body}");
    let stored: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(stored["corrects"], "cam-a/77/1", "{stored}");
    assert_eq!(stored["device"], "cam-a");
    assert_eq!(stored["kind"], "example");
    assert_eq!(stored["digest"], digest, "the same input");
    let meta: ExampleMeta =
        serde_json::from_value(stored["example"].clone()).expect("an ExampleMeta");
    assert_eq!(meta.kind, ExampleKind::Correction);
    assert_eq!(meta.label.as_deref(), Some("Coat"));
    assert_eq!(meta.request_id, "req-1");
    assert_eq!(meta.model, "vision-fashion");
    assert_eq!(meta.local.as_ref().map(|o| o.label.as_str()), Some("Shirt"));
    assert_eq!(meta.cloud.as_ref().map(|o| o.label.as_str()), Some("Coat"));
    let (_, _, body) = send(c.get(hub.url("/v1/feedback/records")), &cookie, &[]).await;
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["items"][0]["corrected_by"][0], stored["id"], "{v}");
    let (_, _, body) = send(c.get(hub.url("/v1/feedback/examples")), &cookie, &[]).await;
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["items"][0]["label"], "Coat", "{v}");
    assert_eq!(v["items"][0]["label_source"], "correction", "{v}");
    assert_eq!(hub.feedback.len(), 3);
}
