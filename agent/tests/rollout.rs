//! A rollout end to end on loopback, every part real: the hub's supervised mosquitto, fleet
//! state and rollout controller, its QUIC ingress serving the registry; an agent with its
//! engine, uplink, model manager and MQTT side. The operator's rollout reaches the device as
//! `update_model`; the agent downloads the signed bundle over QUIC, verifies it, self-tests it,
//! swaps it in, and republishes its status and telemetry at once (the telemetry interval here is
//! a minute: the hub learns of the swap from that), which completes the rollout. A next version
//! that fails its self-test on the device is refused there; the refusal, reported in the
//! agent's telemetry, halts that rollout. Then the operator orders a rollback to 1.0.0, which
//! the device, on the newer 1.0.1, accepts and serves.

mod common;

use bytes::Bytes;
use common::models_dir;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tandem_agent::inference::Input;
use tandem_agent::telemetry::MqttService;
use tandem_hub::fleet::FleetService;
use tandem_hub::ingress::quic::QuicIngress;
use tandem_hub::pki::Pki;
use tandem_hub::registry::{PackOptions, Registry, load_signer, pack};
use tandem_hub::rollout::{Phase, Rollout, RolloutStore, Spec, controller};
use tandem_tests::wait_for;

const MODEL: &str = "vision-fashion";
const PATIENCE: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Packs the shipped model as `version` into `dir` and pushes it, signed, to the registry.
fn push_version(registry: &Registry, pki: &Pki, dir: &std::path::Path, version: &str) {
    let opts = PackOptions {
        version: Some(version.into()),
        ..PackOptions::default()
    };
    pack(&models_dir().join(MODEL), dir, &opts).expect("pack");
    registry
        .push(dir, &load_signer(pki.dir()).expect("signer"))
        .expect("push");
}

/// Starts a rollout and waits until it has finished (succeeded, halted or aborted).
async fn run_to_end(store: &RolloutStore, spec: Spec, what: &str) -> Rollout {
    let r = store.create(spec, true, now_ms()).expect("create");
    wait_for(what, PATIENCE, || {
        store.get(&r.id).is_ok_and(|r| r.finished())
    })
    .await;
    store.get(&r.id).expect("get")
}

/// The version of the model that answers a sample image now.
async fn serving_version(engine: &tandem_engine::Engine) -> String {
    let sample = models_dir().join(MODEL).join("samples/0_9.png");
    engine
        .infer(
            MODEL,
            Input::Images(vec![Bytes::from(std::fs::read(sample).expect("sample"))]),
        )
        .await
        .expect("answers")
        .version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operators_rollout_reaches_the_device_and_completes() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&dir.path().join("pki")).expect("pki");
    pki.add_device("cam-01", 30).expect("device");

    // The hub: fleet over its own mosquitto, registry with 1.0.1, QUIC ingress, controller.
    let mut hub_cfg = tandem_hub::config::Config {
        base_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    hub_cfg.mqtt.listen = "127.0.0.1:0".into();
    let svc = FleetService::start(&hub_cfg)
        .await
        .expect("fleet starts (run `make setup` for mosquitto)")
        .expect("mqtt on");
    let fleet = svc.fleet();
    let broker_url = svc.broker().expect("embedded broker").url();
    let registry = Arc::new(Registry::open(&dir.path().join("registry")).expect("registry"));
    push_version(&registry, &pki, &dir.path().join("pack"), "1.0.1");
    let ingress = QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), pki.dir())
        .expect("bind")
        .with_registry(registry.clone());
    let quic_addr = ingress.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(ingress.run(until_stopped(stopped.clone())));
    let store = RolloutStore::open(&dir.path().join("registry/.rollouts")).expect("store");
    tokio::spawn(controller::run(
        store.clone(),
        fleet.clone(),
        Duration::from_millis(200),
        until_stopped(stopped.clone()),
    ));

    // The agent: the shipped 1.0.0, the hub link, the trusted key, MQTT.
    let models = dir.path().join("models");
    for f in ["manifest.json", "edge.onnx", "labels.txt"] {
        let to = models.join(MODEL).join(f);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(models_dir().join(MODEL).join(f), to).expect("copy");
    }
    let mut cfg = common::config(&[MODEL], "edge", &["cpu"]);
    cfg.base_dir = dir.path().to_path_buf();
    cfg.models.dir = PathBuf::from("models");
    cfg.models.trusted_key = "pki/signing.pub".into();
    cfg.models.watch_window_s = 1;
    cfg.hub.address = quic_addr.to_string();
    cfg.hub.ca = pki.dir().join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.mqtt.url = broker_url.to_string();
    // Long: what the hub learns in time comes from the agent publishing on each update state.
    cfg.mqtt.telemetry_interval_ms = 60_000;
    cfg.labels = [("group".to_string(), "north".to_string())].into();
    let engine =
        tokio::task::block_in_place(|| tandem_agent::app::start_engine(&cfg)).expect("engine");
    let router = tandem_agent::app::start_router(&cfg, engine.clone()).expect("router");
    assert!(router.models().is_some(), "updates are on");
    let agent_mqtt = MqttService::start(&cfg, router.clone(), None)
        .expect("mqtt set up")
        .expect("mqtt on");
    wait_for("the device online at the hub", PATIENCE, || {
        fleet
            .store()
            .get("cam-01")
            .ok()
            .flatten()
            .is_some_and(|d| d.online)
    })
    .await;
    // The hardware inventory reaches the fleet view, and each accelerator is a label a
    // rollout can target.
    let status = fleet
        .store()
        .get("cam-01")
        .ok()
        .flatten()
        .and_then(|d| d.status)
        .expect("a status");
    assert!(
        status
            .accelerators
            .iter()
            .any(|a| a.ep == "CPUExecutionProvider" && a.kind == "cpu"),
        "{status:?}"
    );
    assert_eq!(
        status.labels.get("accelerator.cpu.cpu").map(String::as_str),
        Some("true")
    );

    // The operator's rollout: everyone at once (one device).
    let spec = Spec {
        model: MODEL.into(),
        version: "1.0.1".into(),
        canary_pct: 100,
        stages_pct: vec![],
        labels: [("group".to_string(), "north".to_string())].into(),
        success_share: 1.0,
        failure_share: 0.0,
        stage_timeout_ms: 60_000,
        resend_after_ms: 60_000,
        rollback: false,
    };
    let done = run_to_end(&store, spec, "the rollout to finish").await;
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    assert_eq!(serving_version(&engine).await, "1.0.1");
    assert_eq!(
        std::fs::read_to_string(models.join(MODEL).join("current"))
            .expect("current")
            .trim(),
        "1.0.1"
    );
    // The retained status names the version served now, not the one served at connect.
    let status_version = || {
        fleet
            .store()
            .get("cam-01")
            .ok()
            .flatten()
            .and_then(|d| d.status)
            .and_then(|s| s.models.into_iter().find(|m| m.name == MODEL))
            .map(|m| m.version)
    };
    wait_for("the status to show 1.0.1", PATIENCE, || {
        status_version().as_deref() == Some("1.0.1")
    })
    .await;

    // A version whose self-test fails on the device: refused there, reported in its
    // telemetry, and the rollout halts on it.
    let bad = dir.path().join("pack-bad");
    let opts = PackOptions {
        version: Some("1.0.2".into()),
        ..PackOptions::default()
    };
    pack(&models_dir().join(MODEL), &bad, &opts).expect("pack");
    let text = std::fs::read_to_string(bad.join("bundle.json")).expect("read");
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let i = doc["selftests"][0]["top1_index"].as_u64().expect("index");
    doc["selftests"][0]["top1_index"] = serde_json::json!((i + 1) % 10);
    std::fs::write(
        bad.join("bundle.json"),
        serde_json::to_vec(&doc).expect("json"),
    )
    .expect("write");
    registry
        .push(&bad, &load_signer(pki.dir()).expect("signer"))
        .expect("push");
    let mut spec = done.spec.clone();
    spec.version = "1.0.2".into();
    let halted = run_to_end(&store, spec, "the second rollout to finish").await;
    match &halted.phase {
        Phase::Halted { reason } => assert!(reason.contains("selftest_failed"), "{reason}"),
        other => panic!("expected a halt, got {other:?}"),
    }
    assert_eq!(
        serving_version(&engine).await,
        "1.0.1",
        "the refused version never served"
    );

    // The operator orders 1.0.0 back: the device on the newer 1.0.1 is told `rollback`, accepts
    // the older version (refused as `not_newer` otherwise) and serves it.
    push_version(&registry, &pki, &dir.path().join("pack-old"), "1.0.0");
    let mut spec = halted.spec.clone();
    spec.version = "1.0.0".into();
    spec.rollback = true;
    let back = run_to_end(&store, spec, "the rollback to finish").await;
    assert_eq!(back.phase, Phase::Succeeded, "{back:?}");
    assert_eq!(back.targets.len(), 1);
    assert_eq!(serving_version(&engine).await, "1.0.0");
    assert_eq!(
        std::fs::read_to_string(models.join(MODEL).join("current"))
            .expect("current")
            .trim(),
        "1.0.0"
    );
    wait_for("the status to show 1.0.0", PATIENCE, || {
        status_version().as_deref() == Some("1.0.0")
    })
    .await;

    let _ = stop.send(true);
    agent_mqtt.shutdown(Duration::from_secs(1)).await;
    svc.stop().await;
}
