//! The agent's MQTT side against the hub's real supervised mosquitto (started by
//! `tandem_hub::broker::Broker` on a free loopback port, certificates from
//! `tandem_hub::pki::Pki`), with a real router over the vision-fashion model:
//! - `online` is retained on connect; dropping the connection abruptly makes the broker publish
//!   the last will, `offline`;
//! - telemetry arrives and reads with the shared schema, from the same counters as `/metrics`;
//! - `set_threshold` changes the routing and answers `ok`; malformed or impossible commands
//!   answer with an error and the agent keeps working;
//! - with the broker gone and no durable queue, events are dropped and counted, and inference
//!   goes on; with a durable queue, every event sampled meanwhile waits there, and so do
//!   telemetry snapshots.

mod common;

use common::mqtt::{HubView, PATIENCE};
use std::sync::Arc;
use std::time::Duration;
use tandem_agent::config::Config;
use tandem_agent::hybrid::Router;
use tandem_agent::inference::Input;
use tandem_agent::telemetry::{Class, MqttService};
use tandem_hub::broker::Broker;
use tandem_hub::pki::Pki;
use tandem_shared::manifest::Signal;
use tandem_shared::mqtt::{Event as MqttEvent, State, Status};
use tandem_tests::http::get_text;
use tandem_tests::wait_for;

const MODEL: &str = "vision-fashion";

struct World {
    _dir: tempfile::TempDir,
    pki: Pki,
    broker: Broker,
    router: Arc<Router>,
    cfg: Config,
}

async fn world(tweak: impl FnOnce(&mut Config)) -> World {
    let (dir, pki, broker) = common::mqtt::broker("cam-01").await;
    let mut cfg = common::config(&[MODEL], "edge", &["cpu"]);
    cfg.hub.ca = pki.dir().join("ca.pem");
    (cfg.hub.cert, cfg.hub.key) = pki.device_files("cam-01");
    cfg.mqtt.url = broker.url().to_string();
    cfg.mqtt.telemetry_interval_ms = 200;
    cfg.mqtt.events_sample_rate = 1.0;
    tweak(&mut cfg);
    let engine = tandem_agent::app::start_engine(&cfg).expect("engine");
    let router = tandem_agent::app::start_router(&cfg, engine).expect("router");
    World {
        _dir: dir,
        pki,
        broker,
        router,
        cfg,
    }
}

/// The hub's view, subscribed to `filter`.
async fn hub(w: &World, filter: &str) -> HubView {
    HubView::connect(&w.pki, &w.broker, filter).await
}

fn image(file: &str) -> Input {
    let path = common::models_dir().join(MODEL).join("samples").join(file);
    Input::Images(vec![std::fs::read(path).expect("sample").into()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_is_retained_and_the_last_will_says_offline() {
    let w = world(|cfg| cfg.mqtt.telemetry_qos = 1).await;
    let mut watch = hub(&w, "tandem/cam-01/#").await;
    let svc = MqttService::start(&w.cfg, w.router.clone(), None)
        .expect("mqtt set up")
        .expect("mqtt on");
    assert_eq!(
        svc.device(),
        "cam-01",
        "the device name is the certificate CN"
    );
    let (body, _) = watch.next_on("tandem/cam-01/status").await;
    let online = Status::decode(&body).expect("status reads");
    assert_eq!(online.state, State::Online);
    assert_eq!(online.models[0].name, MODEL);
    assert_eq!(online.models[0].ep, "cpu");

    // Telemetry, with the shared schema, from the engine's counters.
    w.router
        .classify(MODEL, image("0_9.png"), None)
        .await
        .expect("answer");
    let t = watch
        .telemetry_where(|t| t.models[MODEL].inferences.get("ok").copied().unwrap_or(0) >= 1)
        .await;
    let m = &t.models[MODEL];
    assert_eq!(m.ep, "cpu");
    assert_eq!(m.latency.count, m.inferences["ok"]);
    assert_eq!(m.latency.counts.len(), m.latency.le_s.len());
    assert!(
        t.routes
            .iter()
            .any(|r| r.model == MODEL && r.route == "local" && r.count >= 1),
        "{:?}",
        t.routes
    );
    assert!(t.process.rss_bytes > 0 && t.mqtt.connects >= 1, "{t:?}");
    // Telemetry at QoS 1 (`mqtt.telemetry_qos`): the broker acknowledges it, and the status.
    let counters = w.router.counters().clone();
    wait_for("PUBACKs for the status and telemetry", PATIENCE, || {
        counters
            .mqtt
            .acked
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    })
    .await;
    watch.disconnect().await;

    // A client that subscribes later gets `online` as a retained message.
    let mut late = hub(&w, "tandem/cam-01/status").await;
    let (body, retained) = late.next_on("tandem/cam-01/status").await;
    assert!(retained, "status is retained");
    assert_eq!(Status::decode(&body).expect("status").state, State::Online);

    // The connection drops without DISCONNECT: the broker publishes the last will.
    svc.abort();
    let (body, _) = late.next_on("tandem/cam-01/status").await;
    let will = Status::decode(&body).expect("status");
    assert_eq!(will.state, State::Offline);
    assert_eq!(will.reason.as_deref(), Some("connection_lost"));
    late.disconnect().await;
    let mut later = hub(&w, "tandem/cam-01/status").await;
    let (body, retained) = later.next_on("tandem/cam-01/status").await;
    assert!(retained);
    assert_eq!(Status::decode(&body).expect("status").state, State::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_change_the_routing_and_bad_ones_get_errors() {
    let w = world(|_| {}).await;
    let mut hub = hub(&w, "tandem/cam-01/#").await;
    let svc = MqttService::start(&w.cfg, w.router.clone(), None)
        .expect("mqtt set up")
        .expect("mqtt on");
    hub.next_on("tandem/cam-01/status").await;
    // The subscription follows `online` on the same connection; a command sent now can only
    // be lost if it overtook the SUBSCRIBE, so wait for the first telemetry too.
    hub.next_on("tandem/cam-01/telemetry").await;
    let before = w.router.policy(MODEL);
    assert_ne!(before.threshold, 0.93);

    let r = hub
        .command(
            "set_threshold",
            br#"{"v":1,"id":"t1","model":"vision-fashion","threshold":0.93,"signal":"margin"}"#,
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.id.as_deref(), Some("t1"));
    let p = w.router.policy(MODEL);
    assert_eq!((p.threshold, p.signal), (0.93, Signal::Margin));
    let view = r.policy.expect("the policy in force");
    assert_eq!(view.threshold, Some(0.93));

    // Malformed and impossible commands: an error result each, nothing changed.
    let r = hub.command("set_threshold", b"{not json").await;
    assert!(!r.ok && r.id.is_none(), "{r:?}");
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("not JSON")),
        "{r:?}"
    );
    let r = hub
        .command(
            "set_threshold",
            br#"{"v":1,"id":"t2","model":"vision-fashion"}"#,
        )
        .await;
    assert!(!r.ok && r.id.as_deref() == Some("t2"), "{r:?}");
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("threshold")),
        "{r:?}"
    );
    let r = hub
        .command(
            "set_threshold",
            br#"{"v":1,"id":"t3","model":"nope","threshold":0.5}"#,
        )
        .await;
    assert!(!r.ok, "{r:?}");
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("not served")),
        "{r:?}"
    );
    let r = hub
        .command(
            "set_threshold",
            br#"{"v":1,"id":"t4","model":"vision-fashion","threshold":-1}"#,
        )
        .await;
    assert!(!r.ok, "{r:?}");
    for (id, body) in [
        ("t4a", r#""threshold":5.0"#),
        ("t4b", r#""threshold":1.5,"signal":"max_prob""#),
        ("t4c", r#""threshold":1e39,"signal":"entropy""#),
    ] {
        let payload = format!(r#"{{"v":1,"id":"{id}","model":"vision-fashion",{body}}}"#);
        let r = hub.command("set_threshold", payload.as_bytes()).await;
        assert!(!r.ok && r.id.as_deref() == Some(id), "{r:?}");
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("out of range")),
            "{r:?}"
        );
    }
    let r = hub.command("reboot", br#"{"v":1,"id":"t5"}"#).await;
    assert!(!r.ok && r.id.as_deref() == Some("t5"), "{r:?}");
    let r = hub
        .command("set_policy", br#"{"v":2,"id":"t6","mode":"cloud"}"#)
        .await;
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("version")),
        "{r:?}"
    );
    assert_eq!(
        w.router.policy(MODEL).threshold,
        0.93,
        "failed commands changed nothing"
    );

    // The agent keeps working: it answers, sends events, and answers telemetry_now.
    let a = w
        .router
        .classify(MODEL, image("13_3.png"), None)
        .await
        .expect("still answering");
    let (body, _) = hub.next_on("tandem/cam-01/events").await;
    let e = MqttEvent::decode(&body).expect("event reads with the shared schema");
    assert_eq!((e.model.as_str(), e.route.as_str()), (MODEL, "local"));
    assert_eq!(Some(&e.label), a.prediction().map(|p| &p.label));
    let r = hub.command("telemetry_now", br#"{"v":1,"id":"t7"}"#).await;
    assert!(r.ok, "{r:?}");
    let seq = r.telemetry_seq.expect("telemetry sent");
    let t = hub.telemetry_where(|t| t.seq == seq).await;
    assert!(t.mqtt.commands["set_threshold/error"] >= 4, "{:?}", t.mqtt);
    assert_eq!(t.mqtt.commands["set_threshold/ok"], 1);
    // /metrics shows the same counters.
    let state = tandem_agent::api::AppState::new(&w.cfg, w.router.clone());
    let text = tandem_engine::http::OipService::metrics_text(&state);
    for line in [
        "tandem_mqtt_connected 1",
        "tandem_mqtt_commands_total{name=\"set_threshold\",outcome=\"ok\"} 1",
        "tandem_mqtt_commands_total{name=\"reboot\",outcome=\"error\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}`:\n{text}");
    }
    assert!(
        text.contains("tandem_route_answers_total{model=\"vision-fashion\",route=\"local\""),
        "{text}"
    );
    svc.shutdown(Duration::from_secs(2)).await;
    let (body, _) = hub.next_on("tandem/cam-01/status").await;
    let bye = Status::decode(&body).expect("status");
    assert_eq!(
        (bye.state, bye.reason.as_deref()),
        (State::Offline, Some("shutdown"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_events_are_dropped_and_inference_goes_on() {
    let w = world(|cfg| {
        cfg.mqtt.max_pending = 4;
        cfg.mqtt.telemetry_interval_ms = 60_000;
    })
    .await;
    let World {
        _dir,
        broker,
        router,
        cfg,
        ..
    } = w;
    let counters = router.counters().clone();
    let svc = MqttService::start(&cfg, router.clone(), None)
        .expect("mqtt set up")
        .expect("mqtt on");
    wait_for("the connection", PATIENCE, || {
        counters
            .mqtt
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    broker.stop().await;
    wait_for("the disconnection", PATIENCE, || {
        !counters
            .mqtt
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    // Inference must not wait for MQTT: a blocked publish would make this time out.
    tokio::time::timeout(PATIENCE, async {
        for _ in 0..12 {
            router
                .classify(MODEL, image("0_9.png"), None)
                .await
                .expect("answers without the broker");
        }
    })
    .await
    .expect("inference went on without the broker");
    assert!(
        counters.mqtt.dropped_count(Class::Events) > 0,
        "a full outgoing queue drops events: queued {}, dropped {}",
        counters.mqtt.queued_count(Class::Events),
        counters.mqtt.dropped_count(Class::Events)
    );
    assert!(counters.mqtt.queued_count(Class::Events) <= 12);
    svc.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_over_mqtt_and_says_offline_on_sigterm() {
    let w = world(|_| {}).await;
    let mut hub = hub(&w, "tandem/cam-01/#").await;
    let extra = common::mqtt::daemon_sections(&w.pki, &w.broker, "cam-01")
        + "telemetry_interval_ms = 200\n";
    let dir = w._dir.path().join("agent");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut daemon = tokio::task::block_in_place(|| {
        common::Daemon::start(&dir, &common::daemon_config(&[MODEL], "edge", &extra))
    });
    let (body, _) = hub.next_on("tandem/cam-01/status").await;
    assert_eq!(Status::decode(&body).expect("status").state, State::Online);
    hub.telemetry_where(|t| t.models.contains_key(MODEL)).await;
    let metrics = get_text(&reqwest::Client::new(), &daemon.url("/metrics")).await;
    assert!(
        metrics.lines().any(|l| l == "tandem_mqtt_connected 1"),
        "{metrics}"
    );
    let pid = rustix::process::Pid::from_raw(daemon.child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let (body, _) = hub.next_on("tandem/cam-01/status").await;
    let bye = Status::decode(&body).expect("status");
    assert_eq!(
        (bye.state, bye.reason.as_deref()),
        (State::Offline, Some("shutdown")),
        "{}",
        daemon.log_text()
    );
    let status = tokio::task::block_in_place(|| daemon.child.wait()).expect("exit");
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
}

fn link_up(router: &Router) -> bool {
    router
        .counters()
        .mqtt
        .connected
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// The MQTT service of a [`World`] with a durable queue, connected.
struct Queued {
    _dir: tempfile::TempDir,
    broker: Broker,
    router: Arc<Router>,
    queue: Arc<dyn tandem_agent::queue::Queue>,
    svc: MqttService,
}

async fn with_queue(w: World) -> Queued {
    let World {
        _dir,
        broker,
        router,
        mut cfg,
        ..
    } = w;
    cfg.queue.dir = _dir.path().join("queue");
    let queue = tandem_agent::app::open_queue(&cfg).expect("queue");
    let svc = MqttService::start(&cfg, router.clone(), Some(queue.clone()))
        .expect("mqtt set up")
        .expect("mqtt on");
    wait_for("the connection", PATIENCE, || link_up(&router)).await;
    Queued {
        _dir,
        broker,
        router,
        queue,
        svc,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_telemetry_waits_in_the_durable_queue() {
    let q = with_queue(world(|cfg| cfg.mqtt.telemetry_interval_ms = 100).await).await;
    let (broker, queue, svc) = (q.broker, q.queue, q.svc);
    let connected = || link_up(&q.router);
    let telemetry = |q: &Arc<dyn tandem_agent::queue::Queue>| {
        q.stats().class(tandem_agent::queue::Class::Telemetry).depth
    };
    let before = telemetry(&queue);
    broker.stop().await;
    wait_for("the disconnection", PATIENCE, || !connected()).await;
    wait_for("snapshots in the durable queue", PATIENCE, || {
        telemetry(&queue) >= before + 3
    })
    .await;
    let leased = queue.lease(16, 1 << 20).expect("lease");
    let first = leased
        .iter()
        .find(|d| d.class == tandem_agent::queue::Class::Telemetry)
        .expect("a telemetry record");
    match tandem_shared::record::decode(&first.payload).expect("a record") {
        tandem_shared::record::Record::Telemetry(v) => {
            assert_eq!(v["v"], 1, "the MQTT telemetry payload, kept as it is: {v}")
        }
        other => panic!("expected telemetry, got {other:?}"),
    }
    svc.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_events_wait_in_the_durable_queue() {
    let w = world(|cfg| cfg.mqtt.telemetry_interval_ms = 60_000).await;
    let mut hub = hub(&w, "tandem/cam-01/events").await;
    let q = with_queue(w).await;
    let (broker, router, queue, svc) = (q.broker, q.router, q.queue, q.svc);
    let counters = router.counters().clone();
    let connected = || link_up(&router);
    // Connected: events go to the broker, not the queue.
    router
        .classify(MODEL, image("0_9.png"), None)
        .await
        .expect("answers");
    let events = |q: &Arc<dyn tandem_agent::queue::Queue>| {
        q.stats().class(tandem_agent::queue::Class::Event).depth
    };
    assert_eq!(counters.mqtt.queued_count(Class::Events), 1);
    // Queued is not sent: an event still in the link's queue when the connection drops goes
    // to the durable queue (rightly), one record more than the N below. Only the broker
    // forwarding it says it left (QoS 0: no PUBACK).
    hub.next_on("tandem/cam-01/events").await;
    broker.stop().await;
    wait_for("the disconnection", PATIENCE, || !connected()).await;
    const N: u64 = 12;
    for _ in 0..N {
        router
            .classify(MODEL, image("0_9.png"), None)
            .await
            .expect("answers without the broker");
    }
    wait_for("the events in the durable queue", PATIENCE, || {
        events(&queue) >= N
    })
    .await;
    assert_eq!(events(&queue), N, "one record per sampled event");
    assert_eq!(counters.mqtt.dropped_count(Class::Events), 0);
    let leased = queue.lease(64, 1 << 20).expect("lease");
    let kept: Vec<MqttEvent> = leased
        .iter()
        .filter(|d| d.class == tandem_agent::queue::Class::Event)
        .map(
            |d| match tandem_shared::record::decode(&d.payload).expect("a record") {
                tandem_shared::record::Record::Event(v) => {
                    MqttEvent::decode(&serde_json::to_vec(&v).expect("json")).expect("an event")
                }
                other => panic!("expected an event, got {other:?}"),
            },
        )
        .collect();
    assert_eq!(kept.len() as u64, N);
    assert!(
        kept.iter().all(|e| e.model == MODEL && e.route == "local"),
        "{kept:?}"
    );
    svc.shutdown(Duration::from_millis(200)).await;
}
