//! Mixed versions (docs/wire.md, "Offload"): a new agent daemon linked to a hub older than
//! `PredictRequest` (wire kind 0x07). The old hub ([`common::old_hub`]) is a real QUIC peer
//! with the hub's mutual TLS that answers kind 0x07 `Error { code: UnsupportedKind }`, as that
//! hub's codec did. Every answer the agent would offload (threshold 2.0) is answered locally,
//! `degraded: true`, `reason: hub_error`, with the detail `hybrid::OLD_HUB`, which the log
//! repeats at WARN once per connection (every refusal counted in
//! `tandem_offload_old_hub_total`); the link stays up (the old hub answers pings) and the agent keeps serving.

mod common;

use common::old_hub::OldHub;
use serde_json::Value;
use tandem_agent::hybrid::OLD_HUB;
use tandem_hub::pki::Pki;

const MODEL: &str = "vision-fashion";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_hub_gets_local_degraded_answers_and_an_upgrade_notice() {
    let dir = tandem_tests::scratch("old-hub");
    let pki = Pki::init(&dir.path().join("pki")).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let hub = OldHub::start(pki.dir());
    let (cert, key) = pki.device_files("cam-01");
    let extra = format!(
        "[runtime]\nintra_op_threads = 1\n\
         [hub]\naddress = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ntimeout_ms = 5000\n\
         [policy.models.{MODEL}]\nthreshold = 2.0\n",
        hub.addr,
        pki.dir().join("ca.pem").display(),
        cert.display(),
        key.display(),
    );
    let agent = common::Daemon::start(dir.path(), &common::daemon_config(&[MODEL], "edge", &extra));
    let c = reqwest::Client::new();

    let expected = common::read_json(
        &common::models_dir()
            .join(MODEL)
            .join("testdata/expected.json"),
    );
    let cases: Vec<&Value> = expected["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|k| k["variant"] == "edge")
        .collect();
    assert!(cases.len() >= 3, "too few edge cases: {}", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let file = case["input"].as_str().expect("input");
        let body = std::fs::read(common::models_dir().join(MODEL).join(file)).expect("sample");
        let r = c
            .post(agent.url(&format!("/v1/classify/{MODEL}")))
            .body(body)
            .send()
            .await
            .expect("classify");
        assert_eq!(
            r.status().as_u16(),
            200,
            "{file}: the old hub never reaches the caller"
        );
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["route"], "local", "{file}: {v}");
        assert_eq!(v["degraded"], true, "{file}: {v}");
        assert_eq!(v["reason"], "hub_error", "{file}: {v}");
        assert_eq!(v["detail"], OLD_HUB, "{file}: {v}");
        assert_eq!(
            v["label"], case["top1"],
            "{file}: the edge model's own answer"
        );
        assert!(
            hub.refused() > i as u64,
            "{file}: the request reached the old hub over mTLS and was refused there"
        );
    }

    // OIP v2 routes the same way and says so in its parameters.
    let img =
        std::fs::read(common::models_dir().join(MODEL).join("samples/0_9.png")).expect("sample");
    let (status, v) =
        common::oip_image(&c, &format!("http://{}", agent.addr), MODEL, &img, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["parameters"]["route"], "local", "{v}");
    assert_eq!(v["parameters"]["degraded"], true, "{v}");
    assert_eq!(v["parameters"]["reason"], "hub_error", "{v}");

    // The operator is told, in the log, what to do.
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(OLD_HUB)),
        "no upgrade notice in the log:\n{log}"
    );

    // The link to the old hub is up (it answers the keeper's pings: an old hub is not an
    // unreachable one) and the agent still serves.
    tandem_tests::wait_for_async(
        "the link is reported up",
        std::time::Duration::from_secs(20),
        || async {
            let m = tandem_tests::metrics::scrape(&c, &format!("http://{}", agent.addr)).await;
            tandem_tests::metrics::one(&m, "tandem_hub_connected") == 1.0
        },
    )
    .await;
    assert_eq!(
        tandem_tests::metrics::scrape(&c, &format!("http://{}", agent.addr))
            .await
            .get("tandem_hub_disconnects_total")
            .copied(),
        Some(0.0),
        "an unsupported kind does not drop the connection"
    );
    let health = c
        .get(agent.url("/v2/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(health.status().as_u16(), 200);
    let refused = hub.refused();
    let body =
        std::fs::read(common::models_dir().join(MODEL).join("samples/1_2.png")).expect("sample");
    let v: Value = c
        .post(agent.url(&format!("/v1/classify/{MODEL}")))
        .body(body)
        .send()
        .await
        .expect("classify after")
        .json()
        .await
        .expect("json");
    assert_eq!(v["reason"], "hub_error", "{v}");
    assert_eq!(
        hub.refused(),
        refused + 1,
        "each offload still asks the hub"
    );

    // One WARN for the connection (it never dropped), every refusal counted.
    let log = agent.log_text();
    let warns = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(OLD_HUB))
        .count();
    assert_eq!(warns, 1, "one upgrade notice per connection:\n{log}");
    let m = tandem_tests::metrics::scrape(&c, &format!("http://{}", agent.addr)).await;
    assert_eq!(
        tandem_tests::metrics::one(&m, "tandem_offload_old_hub_total"),
        hub.refused() as f64,
        "every refusal counted"
    );
}
