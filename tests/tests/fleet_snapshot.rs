//! A camera's snapshot asked through the hub (docs/mqtt.md "Snapshots"), on the real daemons:
//! the `tandem-hub` binary with its mosquitto and an agent serving `detect-coco` with the face
//! blur (CenterFace on the device) in two network namespaces.
//!
//! `GET /v1/fleet/cam-01/cameras/porch-1/snapshot.jpg` on the hub: before any frame, 404 with
//! the agent's words (no stream linked); after two frames of a photo of people, 200 with a JPEG
//! that is not the photo as posted (faces blurred); an unknown track 404 with the agent's
//! words; an unknown device 404; a bad camera id 400; once the agent is stopped, 504 within
//! the wait. No waiter is left behind (`tandem_hub_snapshot_waiting`).
//!
//! The agent reports its camera ([`listed`]): `porch-1` is in the hub's fleet view
//! (`cameras` of `GET /v1/fleet` and `/v1/fleet/cam-01`, its counters in the telemetry).
//!
//! The hub's bound ([`bounded`]): with `fleet.snapshot_max_inflight = 2`, two requests waiting
//! on a device that never answers take both slots; the next, to any device, is 429 at once
//! with the reason; each waiter goes with its HTTP client, and its slot with it.

use serde_json::Value;
use std::time::{Duration, Instant};
use tandem_tests::fleet::{Daemon, Fleet};

const PATIENCE: Duration = Duration::from_secs(60);
const CAMERA: &str = "porch-1";
const PHOTO: &str = "detection-set/images/dlib-2008_002079.jpg";
/// The hub's `fleet.snapshot_max_inflight` here.
const MAX_INFLIGHT: usize = 2;
/// A device whose status says online but that serves no camera: its requests wait.
const MUTE: &str = "mute-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_asks_a_camera_for_its_snapshot() {
    tokio::time::timeout(Duration::from_secs(300), scenario())
        .await
        .expect("the scenario within 300 s");
}

fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Posts frame `seq` to the agent and waits until its camera task has processed it.
async fn post_frame(fleet: &Fleet, agent: &Daemon, jpeg: Vec<u8>, seq: u64) {
    let path = format!("/v1/cameras/{CAMERA}/frames/detect-coco");
    let (status, body) = fleet.post(agent, &path, jpeg).await.expect("post frame");
    assert_eq!(status, 202, "{}", message(&body));
    let until = Instant::now() + PATIENCE;
    loop {
        let v = fleet
            .get_json(agent, &format!("/v1/cameras/{CAMERA}"))
            .await
            .unwrap_or_default();
        if v["processed"].as_u64().unwrap_or(0) >= seq {
            return;
        }
        assert!(Instant::now() < until, "frame {seq} not processed: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scenario() {
    let fleet = Fleet::new("snapshot", "hub", &["cam"]);
    fleet.add_device("cam-01");
    fleet.add_device(MUTE);
    let max_inflight = format!("snapshot_max_inflight = {MAX_INFLIGHT}");
    let mut hub = fleet.start_hub(&[("fleet", &max_inflight)]);
    let mut agent = fleet.start_agent(
        "cam",
        "cam-01",
        &[
            ("models", "enabled = [\"detect-coco\"]"),
            ("cameras.tracker", "min_hits = 2"),
            ("cameras.tracker", "max_unseen_ms = 600000"),
        ],
    );
    let snap = format!("/v1/fleet/cam-01/cameras/{CAMERA}/snapshot.jpg");

    // Until the hub has heard the agent online it is unknown (404), then the agent answers:
    // no frame posted yet, no stream linked (404, the agent's words).
    let until = Instant::now() + PATIENCE;
    let (status, body) = loop {
        let (status, body) = fleet.get(&hub, &snap).await.expect("hub answers");
        if status != 404 || !message(&body).contains("has not been heard of") {
            break (status, body);
        }
        assert!(Instant::now() < until, "the hub never heard of cam-01");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The agent subscribes to requests just after it reports itself online: a 504 meanwhile.
    let (status, body) = if status == 504 {
        fleet.get(&hub, &snap).await.expect("hub answers")
    } else {
        (status, body)
    };
    assert_eq!(status, 404, "{}", message(&body));
    assert!(
        message(&body).contains("answered no_camera: ")
            && message(&body).contains("no stream is linked"),
        "{}",
        message(&body)
    );

    // A photo of people, twice (min_hits 2): its snapshot comes back through the hub, blurred.
    let photo = std::fs::read(tandem_tests::models_dir().join(PHOTO)).expect("photo");
    for seq in 1..=2 {
        post_frame(&fleet, &agent, photo.clone(), seq).await;
    }
    listed(&fleet, &hub).await;
    let (status, jpeg) = fleet.get(&hub, &snap).await.expect("hub answers");
    assert_eq!(status, 200, "{}", message(&jpeg));
    assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    assert_ne!(
        jpeg, photo,
        "the faces were blurred: not the frame as posted"
    );

    // The agent's refusals, with its words; the hub's own.
    let (status, body) = fleet
        .get(&hub, &format!("{snap}?track=1-999"))
        .await
        .expect("hub answers");
    assert_eq!(status, 404, "{}", message(&body));
    assert!(message(&body).contains("1-999"), "{}", message(&body));
    let (status, body) = fleet
        .get(
            &hub,
            &format!("/v1/fleet/cam-09/cameras/{CAMERA}/snapshot.jpg"),
        )
        .await
        .expect("hub answers");
    assert_eq!(status, 404, "{}", message(&body));
    assert!(message(&body).contains("cam-09"), "{}", message(&body));
    let (status, body) = fleet
        .get(&hub, "/v1/fleet/cam-01/cameras/a+b/snapshot.jpg")
        .await
        .expect("hub answers");
    assert_eq!(status, 400, "{}", message(&body));
    bounded(&fleet, &hub, &snap).await;

    // The agent stopped: 504 within the wait (offline, or no reply in time).
    agent.stop(PATIENCE);
    let (status, body) = fleet
        .get(&hub, &format!("{snap}?timeout_ms=2000"))
        .await
        .expect("hub answers");
    assert_eq!(status, 504, "{}", message(&body));
    let m = fleet.metrics(&hub).await;
    assert_eq!(
        tandem_tests::metrics::one(&m, "tandem_hub_snapshot_waiting"),
        0.0,
        "no waiter left behind"
    );
    assert!(tandem_tests::metrics::one(&m, "tandem_hub_snapshot_requests_total") >= 3.0);
    hub.stop(PATIENCE);
}

/// `GET path` on the hub as its operator, in a task of the hub's host that the caller may
/// abort (the HTTP client goes away mid-request).
fn ask(fleet: &Fleet, hub: &Daemon, path: &str) -> tokio::task::JoinHandle<()> {
    let url = format!("{}{path}", hub.http);
    let token = tandem_tests::http::operator_token(&fleet.pki());
    fleet.rig.spawn_on(&hub.host, async move {
        let _ = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await;
    })
}

/// Waits until the hub counts `n` snapshot requests waiting for a reply.
async fn waiting_now(fleet: &Fleet, hub: &Daemon, n: usize) {
    let until = Instant::now() + PATIENCE;
    loop {
        let m = fleet.metrics(hub).await;
        let now = tandem_tests::metrics::one(&m, "tandem_hub_snapshot_waiting");
        if now == n as f64 {
            return;
        }
        assert!(Instant::now() < until, "{now} snapshot waiters, not {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The hub's bound on snapshot requests in flight: [`MAX_INFLIGHT`] requests to [`MUTE`]
/// (online by its status; nothing answers its cameras) take every slot; the next request, to
/// it or to the real agent, is 429 at once with the reason; aborted clients take their
/// waiters and slots with them (the agent's snapshot comes again); a wait that runs out is a
/// 504 that leaves nothing behind.
async fn bounded(fleet: &Fleet, hub: &Daemon, snap: &str) {
    fleet.publish_as(
        "cam",
        MUTE,
        &format!("tandem/{MUTE}/status"),
        r#"{"v": 1, "state": "online", "ts_ms": 1764518400000, "agent_version": "0.1.0"}"#,
    );
    let until = Instant::now() + PATIENCE;
    while fleet
        .get_json(hub, &format!("/v1/fleet/{MUTE}"))
        .await
        .is_none_or(|d| d["online"] != true)
    {
        assert!(Instant::now() < until, "the hub never heard {MUTE} online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mute = format!("/v1/fleet/{MUTE}/cameras/{CAMERA}/snapshot.jpg");
    let clients: Vec<_> = (0..MAX_INFLIGHT)
        .map(|_| ask(fleet, hub, &format!("{mute}?timeout_ms=60000")))
        .collect();
    waiting_now(fleet, hub, MAX_INFLIGHT).await;
    for path in [mute.as_str(), snap] {
        let (status, body) = fleet.get(hub, path).await.expect("hub answers");
        assert_eq!(status, 429, "{path}: {}", message(&body));
        let m = message(&body);
        assert!(
            m.contains(&format!("{MAX_INFLIGHT} snapshot requests are waiting"))
                && m.contains("fleet.snapshot_max_inflight"),
            "{m}"
        );
    }
    for (i, c) in clients.into_iter().enumerate() {
        c.abort();
        waiting_now(fleet, hub, MAX_INFLIGHT - 1 - i).await;
    }
    let (status, body) = fleet.get(hub, snap).await.expect("hub answers");
    assert_eq!(status, 200, "slots given back: {}", message(&body));
    let (status, body) = fleet
        .get(hub, &format!("{mute}?timeout_ms=1000"))
        .await
        .expect("hub answers");
    assert_eq!(status, 504, "{}", message(&body));
    assert!(
        message(&body).contains("within 1000 ms"),
        "{}",
        message(&body)
    );
    waiting_now(fleet, hub, 0).await;
}

/// The hub's fleet view lists the agent's camera, from its telemetry: the id in `cameras`
/// (one device and the list), the model, both frames answered and snapshots kept.
async fn listed(fleet: &Fleet, hub: &Daemon) {
    let until = Instant::now() + PATIENCE;
    let d = loop {
        let d = fleet
            .get_json(hub, "/v1/fleet/cam-01")
            .await
            .unwrap_or_default();
        if d["telemetry"]["cameras"][0]["processed"] == 2 {
            break d;
        }
        assert!(Instant::now() < until, "no camera with both frames: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(d["cameras"], serde_json::json!([CAMERA]), "{d}");
    let c = &d["telemetry"]["cameras"][0];
    assert_eq!(c["id"], CAMERA, "{c}");
    assert_eq!(c["model"], "detect-coco", "{c}");
    assert_eq!(c["received"], 2, "{c}");
    assert!(c["snapshots"].as_u64() >= Some(1), "{c}");
    let list = fleet.get_json(hub, "/v1/fleet").await.unwrap_or_default();
    let entry = list["devices"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["device"] == "cam-01"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["cameras"], serde_json::json!([CAMERA]), "{list}");
}
