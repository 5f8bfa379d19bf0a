//! The routing policy against a live hub (real QUIC + mTLS, real models on both sides): an
//! overloaded hub answers busy and the agent returns its own answers marked degraded with
//! `hub_busy`, never an error; a deadline the hub cannot meet keeps the local answer with
//! `deadline`, whether the request times out on the way or the measured hub service time
//! already says it would. A model with no local variant is answered by the hub
//! (`no_local_variant`), and a request the local queue has no room for goes to the hub
//! (`local_busy`); only for those can a hub failure reach the caller.

mod common;

use common::start_hub;
use std::sync::Arc;
use tandem_agent::app;
use tandem_agent::config::Config;
use tandem_agent::hybrid::{RouteError, Router};
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
fn router(name: &str, model: &str, hub: Arc<tandem_engine::Engine>) -> (Arc<Router>, Guard) {
    router_with(name, hub, |cfg| {
        *cfg = common::config(&[model], "edge", &["cpu"]);
        cfg.policy.mode = Mode::Cloud;
    })
}

/// An agent router on `tweak`'s config, linked to a hub serving `hub`.
fn router_with(
    name: &str,
    hub: Arc<tandem_engine::Engine>,
    tweak: impl FnOnce(&mut Config),
) -> (Arc<Router>, Guard) {
    let (tmp, dir) = common::tmp_dir(&format!("hub-policy-{name}"));
    let pki = Pki::init(&dir).expect("pki");
    pki.add_device("cam-01", 365).expect("device");
    let (addr, stop, _task) = start_hub(&pki, "127.0.0.1:0".parse().expect("addr"), hub);
    let mut cfg = Config::default();
    tweak(&mut cfg);
    cfg.hub.address = addr.to_string();
    cfg.hub.ca = dir.join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.hub.timeout_ms = 5000;
    let engine = app::start_engine(&cfg).expect("agent engine");
    let router = app::start_router(&cfg, engine).expect("router");
    if let Some(u) = router.uplink() {
        u.keep();
    }
    (
        router,
        Guard {
            hub: Some(stop),
            _tmp: tmp,
        },
    )
}

/// Stops the hub when dropped (or by `stop`), then removes its folder.
struct Guard {
    hub: Option<tokio::sync::oneshot::Sender<()>>,
    _tmp: tempfile::TempDir,
}

impl Guard {
    fn stop(&mut self) {
        if let Some(s) = self.hub.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
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
    assert_eq!(a.reason, Reason::Deadline, "{:?}", a.body());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_local_variant_is_answered_by_the_hub() {
    // This device's model folder has the fashion manifest without its edge variant (and the
    // sentiment model, which runs here).
    let (_models, models) = common::tmp_dir("remote-models");
    let fashion = models.join("vision-fashion");
    std::fs::create_dir_all(&fashion).expect("mkdir");
    let src = common::models_dir().join("vision-fashion");
    let mut manifest = common::read_json(&src.join("manifest.json"));
    manifest["variants"]
        .as_object_mut()
        .expect("variants")
        .remove("edge");
    std::fs::write(fashion.join("manifest.json"), manifest.to_string()).expect("manifest");
    std::fs::copy(src.join("labels.txt"), fashion.join("labels.txt")).expect("labels");
    std::os::unix::fs::symlink(
        common::models_dir().join("text-sentiment"),
        models.join("text-sentiment"),
    )
    .expect("symlink");

    let (router, mut hub) = router_with("remote", common_hub_fashion(), |cfg| {
        *cfg = common::config(&["vision-fashion", "text-sentiment"], "edge", &["cpu"]);
        cfg.models.dir = models.clone();
    });
    assert!(router.engine().model("vision-fashion").is_none());
    assert!(router.remote().contains_key("vision-fashion"));

    let expected = common::read_json(&src.join("testdata/expected.json"));
    let case = expected["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|k| k["variant"] == "cloud")
        .expect("a cloud case")
        .clone();
    let file = case["input"].as_str().expect("input");
    let body = std::fs::read(src.join(file)).expect("sample");
    let a = router
        .classify(
            "vision-fashion",
            Input::Images(vec![body.clone().into()]),
            None,
        )
        .await
        .expect("the hub answers");
    assert_eq!(a.reason, Reason::NoLocalVariant);
    assert!(!a.degraded && a.local.is_none());
    let json = serde_json::to_value(a.body()).expect("json");
    assert_eq!(json["route"], "cloud");
    assert_eq!(json["label"], case["top1"], "{json:?}");

    // With the hub gone there is no answer at all: a clear error, not a wrong one.
    hub.stop();
    let mut failed = None;
    for _ in 0..100 {
        match router
            .classify(
                "vision-fashion",
                Input::Images(vec![body.clone().into()]),
                None,
            )
            .await
        {
            Err(e @ RouteError::Hub { .. }) => {
                failed = Some(e);
                break;
            }
            Ok(a) => assert_eq!(a.reason, Reason::NoLocalVariant),
            Err(e) => panic!("unexpected error: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let e = failed.expect("the hub's absence is reported").to_string();
    assert!(e.contains("no local variant"), "{e}");
}

fn common_hub_fashion() -> Arc<tandem_engine::Engine> {
    hub_engine("vision-fashion", 64, 8, 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_queue_sends_requests_to_the_hub() {
    // The device has one worker and room for one waiting request; the hub has plenty.
    let (router, _hub) = router_with("local-busy", common_hub_fashion(), |cfg| {
        *cfg = common::config(&["vision-fashion"], "edge", &["cpu"]);
        cfg.engine.workers = 1;
        cfg.engine.queue_capacity = 1;
        cfg.policy.mode = Mode::Cascade;
    });
    let body =
        std::fs::read(common::models_dir().join("vision-fashion/samples/6_4.png")).expect("sample");
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (r, b) = (router.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            r.classify("vision-fashion", Input::Images(vec![b.into()]), None)
                .await
        }));
    }
    let (mut busy, mut local) = (0, 0);
    for t in tasks {
        let a = t.await.expect("join").expect("every request is answered");
        if a.reason == Reason::LocalBusy {
            assert!(a.local.is_none() && a.cloud.is_some() && !a.degraded);
            busy += 1;
        } else {
            assert!(a.local.is_some());
            local += 1;
        }
    }
    assert!(busy > 0, "the local queue never overflowed ({local} local)");
    assert!(local > 0, "nothing ran locally");
}
