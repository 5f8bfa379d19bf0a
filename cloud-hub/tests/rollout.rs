//! Rollouts through the hub's API: created only for a registry version, one at a time per
//! model, paused, resumed, aborted; stepped against a simulated fleet, a canary whose devices
//! roll the version back halts the rollout on its own, and `tandem-hub rollout status` shows it;
//! `tandem-hub rollout start --rollback` then puts the older version back on the devices that
//! run the newer one, and only on them.

use serde_json::{Value, json};
use std::sync::Arc;
use tandem_hub::pki::Pki;
use tandem_hub::registry::{PackOptions, Registry, load_signer, pack};
use tandem_hub::rollout::http::RolloutApi;
use tandem_hub::rollout::{DeviceView, RolloutStore};
use tandem_tests::http::get_json;
use tandem_tests::process::output_ok;
use tandem_tests::repo;

fn fleet(n: usize) -> Vec<DeviceView> {
    (0..n)
        .map(|i| DeviceView {
            device: format!("cam-{i:02}"),
            labels: [("group".to_string(), "north".to_string())].into(),
            online: true,
            version: Some("1.0.0".into()),
            updates: Vec::new(),
            reported_ms: 0,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_halts_the_rollout() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    Pki::init(&pki).expect("pki");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry");
    let src = dir.path().join("pack");
    let opts = PackOptions {
        version: Some("1.0.1".into()),
        ..PackOptions::default()
    };
    pack(&repo().join("models/vision-fashion"), &src, &opts).expect("pack");
    registry
        .push(&src, &load_signer(&pki).expect("signer"))
        .expect("push");
    let store = RolloutStore::open(&dir.path().join("registry/.rollouts")).expect("store");
    let api = Arc::new(RolloutApi {
        store: store.clone(),
        registry: Arc::new(registry),
    });
    let app = tandem_hub::rollout::http::routes::<()>(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/v1/rollouts");
    let post = |url: String, body: Value| {
        let http = http.clone();
        async move {
            let r = http.post(url).json(&body).send().await.expect("post");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let spec = |version: &str, canary: u8| {
        json!({"model": "vision-fashion", "version": version, "canary_pct": canary,
               "labels": {"group": "north"}})
    };

    assert_eq!(post(base.clone(), spec("9.9.9", 20)).await.0, 404);
    let (status, body) = post(base.clone(), spec("1.0.1", 0)).await;
    assert_eq!(status, 422, "{body}");
    let (status, created) = post(base.clone(), spec("1.0.1", 20)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(id, "vision-fashion-1.0.1-1");
    assert_eq!(
        post(base.clone(), spec("1.0.1", 50)).await.0,
        409,
        "one at a time"
    );

    assert_eq!(post(format!("{base}/{id}/pause"), json!({})).await.0, 200);
    assert_eq!(post(format!("{base}/{id}/pause"), json!({})).await.0, 409);
    assert_eq!(post(format!("{base}/{id}/resume"), json!({})).await.0, 200);

    // The controller's steps against a fleet of 10: the canary is 2 devices.
    let mut devices = fleet(10);
    let commands = store.tick(|_| devices.clone(), 1_000).expect("tick");
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands
            .iter()
            .all(|c| c.version == "1.0.1" && c.rollout == id)
    );
    for d in devices
        .iter_mut()
        .filter(|d| commands.iter().any(|c| c.device == d.device))
    {
        d.updates = vec![(
            "1.0.1".into(),
            "rolled_back".into(),
            Some("confidence".into()),
        )];
        d.reported_ms = 1_500; // after the command at 1_000
    }
    let commands = store.tick(|_| devices.clone(), 2_000).expect("tick");
    assert!(
        commands.is_empty(),
        "nothing more is commanded: {commands:?}"
    );

    let got: Value = get_json(&http, &format!("{base}/{id}")).await;
    assert_eq!(got["phase"]["state"], "halted", "{got}");
    let reason = got["phase"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("2 of 2 devices failed (confidence)"),
        "{reason}"
    );
    assert_eq!(
        post(format!("{base}/{id}/abort"), json!({})).await.0,
        409,
        "a halted rollout is finished"
    );

    // The CLI reads the same API.
    let mut status = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-hub"));
    status.args(["rollout", "status", "--hub", &format!("http://{addr}")]);
    let out = output_ok(status).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("halted: stage 0: 2 of 2 devices failed"),
        "{text}"
    );
    assert!(text.contains("2 devices, 0 active, 2 failed"), "{text}");

    // A rollback ordered from the CLI: 1.0.0 back to the devices that run 1.0.1 (three took
    // it meanwhile), and only to them, each told `rollback`.
    let src = dir.path().join("pack-1.0.0");
    let opts = PackOptions {
        version: Some("1.0.0".into()),
        ..PackOptions::default()
    };
    pack(&repo().join("models/vision-fashion"), &src, &opts).expect("pack");
    Registry::open(&dir.path().join("registry"))
        .expect("registry")
        .push(&src, &load_signer(&pki).expect("signer"))
        .expect("push");
    let newer = ["cam-03", "cam-05", "cam-08"];
    for d in devices.iter_mut() {
        d.updates.clear();
        if newer.contains(&d.device.as_str()) {
            d.version = Some("1.0.1".into());
        }
    }
    let cli = move |args: &[&str]| {
        let mut all = vec!["rollout".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["--hub".to_string(), format!("http://{addr}")]);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tandem-hub"));
        cmd.args(&all);
        async move { String::from_utf8_lossy(&output_ok(cmd).await.stdout).to_string() }
    };
    let started = cli(&[
        "start",
        "--model",
        "vision-fashion",
        "--version",
        "1.0.0",
        "--canary",
        "100",
        "--group",
        "north",
        "--rollback",
    ])
    .await;
    assert!(started.contains("1.0.0 (rollback)"), "{started}");
    let id = "vision-fashion-1.0.0-1";
    let got: Value = get_json(&http, &format!("{base}/{id}")).await;
    assert_eq!(got["spec"]["rollback"], true, "{got}");
    let commands = store.tick(|_| devices.clone(), 3_000).expect("tick");
    let mut told: Vec<&str> = commands.iter().map(|c| c.device.as_str()).collect();
    told.sort_unstable();
    assert_eq!(told, newer, "only the devices on a newer version");
    assert!(
        commands
            .iter()
            .all(|c| c.version == "1.0.0" && c.rollback && c.rollout == id),
        "{commands:?}"
    );
    for d in devices.iter_mut() {
        d.version = Some("1.0.0".into());
    }
    assert!(
        store
            .tick(|_| devices.clone(), 4_000)
            .expect("tick")
            .is_empty()
    );
    let text = cli(&["status", id]).await;
    assert!(text.contains("succeeded: 3 devices, 3 active"), "{text}");
}
