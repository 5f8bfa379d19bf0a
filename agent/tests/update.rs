//! An update end to end on loopback: the hub's real QUIC ingress serves a bundle from its
//! registry, the agent's uplink (mutual TLS) downloads it in ranges and the model manager
//! installs it into the running engine; a version the registry lacks is refused and reported.

mod common;

use bytes::Bytes;
use common::{config, engine_with, models_dir};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tandem_agent::inference::Input;
use tandem_agent::models::download::DownloadOptions;
use tandem_agent::models::{Manager, Order, UpdateState, update};
use tandem_agent::uplink::{HubConfig, Uplink};
use tandem_hub::ingress::quic::QuicIngress;
use tandem_hub::pki::Pki;
use tandem_hub::registry::{PackOptions, Registry, load_signer, pack};

const MODEL: &str = "vision-fashion";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_serves_a_bundle_and_the_agent_installs_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::init(&dir.path().join("pki")).expect("pki");
    pki.add_device("cam-1", 30).expect("device");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry");
    let src = dir.path().join("pack");
    let opts = PackOptions {
        version: Some("1.0.1".into()),
        ..PackOptions::default()
    };
    pack(&models_dir().join(MODEL), &src, &opts).expect("pack");
    registry
        .push(&src, &load_signer(pki.dir()).expect("signer"))
        .expect("push");

    let ingress = QuicIngress::bind("127.0.0.1:0".parse().expect("addr"), pki.dir())
        .expect("bind")
        .with_registry(Arc::new(registry));
    let addr = ingress.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress.run(async {
        let _ = stopped.await;
    }));

    let models = dir.path().join("models");
    for f in ["manifest.json", "edge.onnx", "labels.txt"] {
        let to = models.join(MODEL).join(f);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(models_dir().join(MODEL).join(f), to).expect("copy");
    }
    let mut cfg = config(&[MODEL], "edge", &["cpu"]);
    cfg.base_dir = dir.path().to_path_buf();
    cfg.models.dir = PathBuf::from("models");
    cfg.models.trusted_key = "pki/signing.pub".into();
    let engine = Arc::new(tokio::task::block_in_place(|| engine_with(&cfg)));
    // Every state the manager reports, in order, beside what moved its change counter (which
    // makes the MQTT side publish at once).
    let seen = Arc::new(Mutex::new(Vec::<UpdateState>::new()));
    let log = seen.clone();
    let manager = Arc::new(
        Manager::new(engine.clone(), &cfg.engine_settings()).with_reporter(Box::new(move |s| {
            log.lock().expect("log").push(s.state.clone());
        })),
    );
    let changes = manager.changes();
    let (cert, key) = pki.device_files("cam-1");
    let hub = HubConfig {
        address: addr.to_string(),
        ca: pki.dir().join("ca.pem"),
        cert,
        key,
        ..Default::default()
    };
    let uplink = Uplink::new(&hub, |p| p.to_path_buf()).expect("uplink");
    let opts = DownloadOptions {
        request_bytes: 8192,
    };

    let done = update(&manager, &uplink, MODEL, "1.0.1", Order::default(), opts, 3)
        .await
        .expect("downloaded and installed");
    assert_eq!((done.from.as_str(), done.to.as_str()), ("1.0.0", "1.0.1"));
    let states = seen.lock().expect("log").clone();
    let progress: Vec<(u64, u64)> = states
        .iter()
        .filter_map(|s| match s {
            UpdateState::Downloading { done, total } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    let (first, last) = (progress[0], progress[progress.len() - 1]);
    assert!(
        progress.len() > 2,
        "progress reported per range: {progress:?}"
    );
    assert!(
        last.1 > 0 && last.0 == last.1,
        "ends at the total: {progress:?}"
    );
    assert!(first.0 < first.1, "starts before the end: {progress:?}");
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "never goes back: {progress:?}"
    );
    let other = states.len() - progress.len();
    assert!(
        matches!(states.last(), Some(UpdateState::Active { .. })),
        "{states:?}"
    );
    // Each other state moved the counter once; progress moved it at its start, its end and
    // once a second between: not once per range.
    let moved = *changes.borrow() as usize;
    assert!(
        moved >= other + 2 && moved < other + progress.len(),
        "counter {moved}, {other} other states, {} progress reports",
        progress.len()
    );
    let png = std::fs::read(models_dir().join(MODEL).join("samples/0_9.png")).expect("sample");
    let answer = engine
        .infer(MODEL, Input::Images(vec![Bytes::from(png)]))
        .await
        .expect("answers");
    assert_eq!(answer.version, "1.0.1");
    assert!(
        std::fs::read_dir(models.join(".downloads"))
            .expect("downloads")
            .next()
            .is_none(),
        "the download folder is removed once installed"
    );

    let missing = update(&manager, &uplink, MODEL, "9.9.9", Order::default(), opts, 3).await;
    let err = missing.expect_err("not in the registry");
    assert_eq!(err.reason(), "not_in_registry", "{err}");
    let status = manager.status();
    assert!(
        matches!(&status[0].state, UpdateState::Rejected { reason, .. } if reason == "not_in_registry"),
        "{status:?}"
    );
    // Telemetry keeps the installed version's outcome beside the refusal, newest last, so
    // neither hides the other from a rollout.
    let reports: Vec<(String, String)> = manager
        .reports()
        .into_iter()
        .map(|r| (r.version, r.state))
        .collect();
    assert_eq!(
        reports,
        [
            ("1.0.1".to_string(), "active".to_string()),
            ("9.9.9".to_string(), "rejected".to_string())
        ],
    );
    let _ = stop.send(());
}
