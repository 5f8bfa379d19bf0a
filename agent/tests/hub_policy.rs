//! The routing policy against a live hub (real QUIC + mTLS, real models on both sides): an
//! overloaded hub answers busy and the agent returns its own answers marked degraded with
//! `hub_busy`, never an error; a deadline the hub cannot meet keeps the local answer with
//! `deadline`, whether the request times out on the way or the measured hub service time
//! already says it would.

mod common;

use common::start_hub;
use std::sync::Arc;
use tandem_agent::app;
use tandem_agent::hybrid::Router;
use tandem_agent::inference::Input;
use tandem_agent::policy::{Mode, Reason};
use tandem_hub::pki::Pki;

/// A hub engine on `model`'s cloud variant, one worker, with the given queue and batching.
fn hub_engine(
    model: &str,
    queue: usize,
    max_batch: usize,
    delay_us: u64,
) -> Arc<tandem_engine::Engine> {
    let mut s = tandem_engine::settings::EngineSettings {
        base_dir: common::repo(),
        ..Default::default()
    };
    s.models.enabled = vec![model.into()];
    s.models.variant = "cloud".into();
    s.engine.workers = 1;
    s.engine.queue_capacity = queue;
    s.engine.max_batch = max_batch;
    s.engine.max_batch_delay_us = delay_us;
    s.runtime.intra_op_threads = 1;
    let (_, engine) = tandem_engine::engine::start(&s, Default::default()).expect("hub engine");
    Arc::new(engine)
}

/// An agent router for `model` in `cloud` mode (every answer wanted from the hub).
fn router(name: &str, model: &str, hub: Arc<tandem_engine::Engine>) -> (Arc<Router>, impl Drop) {
    let dir = std::env::temp_dir().join(format!("tandem-hub-policy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = Pki::init(&dir).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let (addr, stop, _task) = start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), hub);
    let mut cfg = common::config(&[model], "edge", &["cpu"]);
    cfg.hub.address = addr.to_string();
    cfg.hub.ca = dir.join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.hub.timeout_ms = 5000;
    cfg.policy.mode = Mode::Cloud;
    let engine = app::start_engine(&cfg).expect("agent engine");
    let router = app::start_router(&cfg, engine).expect("router");
    if let Some(u) = router.uplink() {
        u.keep();
    }
    (router, Guard(Some(stop)))
}

struct Guard(Option<tokio::sync::oneshot::Sender<()>>);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.send(());
        }
    }
}

fn image(model: &str, file: &str) -> Input {
    let path = common::models_dir().join(model).join("samples").join(file);
    Input::Images(vec![std::fs::read(path).expect("sample").into()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_hub_says_busy_and_the_agent_answers_locally() {
    // One slow worker (ImageNet Lite2, batch 1) and room for one waiting request.
    let (router, _hub) = router(
        "busy",
        "vision-imagenet",
        hub_engine("vision-imagenet", 1, 1, 0),
    );
    let files: Vec<String> =
        std::fs::read_dir(common::models_dir().join("vision-imagenet/samples"))
            .expect("samples")
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
    let mut tasks = Vec::new();
    for f in files.iter().cycle().take(24) {
        let (r, input) = (router.clone(), image("vision-imagenet", f));
        tasks.push(tokio::spawn(async move {
            r.classify("vision-imagenet", input, None).await
        }));
    }
    let (mut busy, mut cloud) = (0, 0);
    for t in tasks {
        let a = t
            .await
            .expect("join")
            .expect("never an error while a local variant exists");
        match (a.reason, &a.cloud) {
            (Reason::HubBusy, None) => {
                assert!(a.degraded);
                busy += 1;
            }
            (Reason::PolicyCloud, Some(_)) => {
                assert!(!a.degraded);
                cloud += 1;
            }
            (r, c) => panic!(
                "unexpected answer: reason {r:?}, cloud answered: {}",
                c.is_some()
            ),
        }
    }
    assert!(busy > 0, "the hub was never busy ({cloud} answered)");
    assert!(cloud > 0, "the hub answered nothing ({busy} busy)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_the_hub_cannot_meet_keeps_the_local_answer() {
    // The hub waits up to 400 ms to fill a batch: a lone request takes that long.
    let (router, _hub) = router(
        "deadline",
        "vision-fashion",
        hub_engine("vision-fashion", 64, 8, 400_000),
    );
    let sample = "6_4.png";

    // On the way: the hub cannot answer within 100 ms.
    let a = router
        .classify("vision-fashion", image("vision-fashion", sample), Some(100))
        .await
        .expect("answer");
    assert_eq!(a.reason, Reason::Deadline, "{:?}", a.to_json());
    assert!(a.degraded && a.cloud.is_none());

    // Without a deadline the hub answers (and the agent learns its service time)...
    let mut answered = None;
    for _ in 0..20 {
        let a = router
            .classify("vision-fashion", image("vision-fashion", sample), None)
            .await
            .expect("answer");
        if a.cloud.is_some() {
            answered = Some(a);
            break;
        }
        // The timed-out request left the link under suspicion until the keeper's probe.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let a = answered.expect("the hub answers a request without a deadline");
    assert_eq!(a.reason, Reason::PolicyCloud);
    assert!(
        router.uplink().expect("uplink").view().service_ms.is_some(),
        "the hub's service time is learned from its answer"
    );

    // ...so a 200 ms deadline is known to be out of reach before anything is sent.
    let a = router
        .classify("vision-fashion", image("vision-fashion", sample), Some(200))
        .await
        .expect("answer");
    assert_eq!(a.reason, Reason::Deadline);
    assert!(a.degraded && a.cloud.is_none());
}
