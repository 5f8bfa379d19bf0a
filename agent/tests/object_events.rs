//! Object events with real parts: the `tandem-agent` binary serving the shipped detection model
//! (`detect-coco`, NanoDet-g INT8), the hub's supervised mosquitto with its PKI, and
//! `mosquitto_sub` as the subscriber. A camera stream gets real photos in order: two frames of
//! a street video (a car, a truck and a person), the next two frames of it (the car scores
//! higher), then photos of a cup on a table without any of them. The subscriber must see, per
//! street track, `appeared`, then `updated` (the car's better score), then `gone` (`unseen`),
//! in order; the snapshot endpoint must return the best frame as a JPEG, checked by the face
//! blur first; on SIGTERM the table's live tracks (the cup, and what else the detector sees on
//! that table) end with `gone` (`shutdown`) before the agent goes offline.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tandem_hub::broker::Broker;
use tandem_hub::pki::Pki;
use tandem_shared::mqtt::{GoneReason, ObjectEvent, ObjectEventType};

const PATIENCE: Duration = Duration::from_secs(120);
const CAMERA: &str = "porch-1";
/// What the detector may track on the coffee photo (the cup is the one asserted): none of it
/// is in the street frames.
const TABLE: [&str; 3] = ["cup", "dining table", "bowl"];

/// `mosquitto_sub` with the hub's identity, one JSON payload per line.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(pki: &Pki, broker: &Broker, topic: &str) -> Subscriber {
        let url = broker.url();
        let dir = pki.dir();
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", &url.host, "-p", &url.port.to_string()])
            .arg("--cafile")
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("hub.pem"))
            .arg("--key")
            .arg(dir.join("hub.key"))
            .args(["-q", "1", "-t", topic, "-W", "300"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (make setup installs mosquitto-clients)");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let sub = Subscriber { child, lines };
        // Subscribed once a probe comes back (mosquitto_sub buffers its debug lines when
        // writing to a pipe, so SUBACK cannot be waited for). The probe goes out as the device
        // (the broker would make a second `tandem-hub` client replace the subscriber), before
        // the agent connects with that identity.
        let (cert, key) = pki.device_files("cam-01");
        for attempt in 0..120 {
            let probe = format!("probe-{attempt}");
            let _ = Command::new("mosquitto_pub")
                .args(["-h", &url.host, "-p", &url.port.to_string()])
                .arg("--cafile")
                .arg(dir.join("ca.pem"))
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .args(["-q", "1", "-t", topic, "-m", &probe])
                .status();
            if let Ok(l) = sub.lines.recv_timeout(Duration::from_millis(500))
                && l.contains("probe-")
            {
                return sub;
            }
        }
        panic!("mosquitto_sub never received a probe on {topic}");
    }

    fn try_wait_for(&self, want: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return Ok(l),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The next object event.
    fn next(&self) -> ObjectEvent {
        self.next_or(String::new)
    }

    /// The next object event; if none comes, the panic carries `context()` (a daemon's log).
    fn next_or(&self, context: impl Fn() -> String) -> ObjectEvent {
        let line = self
            .try_wait_for(|l| l.starts_with('{'))
            .unwrap_or_else(|e| panic!("mosquitto_sub gave no object event: {e}\n{}", context()));
        ObjectEvent::decode(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn photo(name: &str) -> Vec<u8> {
    let p = common::models_dir().join("detection-set/images").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_stream_publishes_appeared_updated_gone_with_a_snapshot() {
    let (dir, pki, broker) = common::mqtt::broker("cam-01").await;
    let sub = tokio::task::block_in_place(|| {
        Subscriber::start(&pki, &broker, "tandem/cam-01/events/objects")
    });
    let extra = common::mqtt::daemon_sections(&pki, &broker, "cam-01")
        + "[cameras.tracker]\nmin_hits = 2\nmax_missed_frames = 3\nmax_unseen_ms = 600000\n\
           update_interval_ms = 0\n";
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("dir");
    let mut daemon = tokio::task::block_in_place(|| {
        common::Daemon::start(
            &agent_dir,
            &common::daemon_config(&["detect-coco"], "edge", &extra),
        )
    });
    let base = daemon.url("");
    let c = reqwest::Client::new();
    let frames = [
        "labelme-video-00000104.jpg",
        "labelme-video-00000104.jpg",
        "labelme-video-00000100.jpg",
        "labelme-video-00000100.jpg",
        "skimage-coffee.jpg",
        "skimage-coffee.jpg",
        "skimage-coffee.jpg",
        "skimage-coffee.jpg",
    ];
    for (i, f) in frames.iter().enumerate() {
        common::camera::post_frame(
            &c,
            &base,
            (CAMERA, "detect-coco"),
            photo(f),
            i as u64 + 1,
            PATIENCE,
        )
        .await;
    }

    // Every street track: appeared, updated*, gone (unseen), in order.
    let mut tracks: BTreeMap<String, Vec<ObjectEvent>> = BTreeMap::new();
    let done = |t: &BTreeMap<String, Vec<ObjectEvent>>| {
        t.values().any(|v| v[0].label == "car")
            && t.values()
                .all(|v| v.last().is_some_and(|e| e.kind == ObjectEventType::Gone))
    };
    let mut cup_appeared = None;
    while !done(&tracks) || cup_appeared.is_none() {
        let e = tokio::task::block_in_place(|| sub.next());
        assert_eq!(
            (e.camera.as_str(), e.model.as_str()),
            (CAMERA, "detect-coco")
        );
        if TABLE.contains(&e.label.as_str()) {
            assert_eq!(e.kind, ObjectEventType::Appeared, "{e:?}");
            if e.label == "cup" {
                cup_appeared = Some(e);
            }
            continue;
        }
        tracks.entry(e.id.clone()).or_default().push(e);
    }
    for events in tracks.values() {
        let label = &events[0].label;
        let kinds: Vec<ObjectEventType> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds.first(),
            Some(&ObjectEventType::Appeared),
            "{label}: {kinds:?}"
        );
        assert_eq!(
            kinds.last(),
            Some(&ObjectEventType::Gone),
            "{label}: {kinds:?}"
        );
        assert!(
            kinds[1..kinds.len() - 1]
                .iter()
                .all(|k| *k == ObjectEventType::Updated),
            "{label}: {kinds:?}"
        );
        assert!(
            events.iter().all(|e| &e.label == label),
            "{label}: one label"
        );
        let gone = events.last().expect("gone");
        assert_eq!(gone.reason, Some(GoneReason::Unseen));
        assert!(gone.last_seen_ms < gone.ts_ms && gone.first_seen_ms < gone.last_seen_ms);
    }
    let car = tracks
        .values()
        .find(|v| v[0].label == "car")
        .expect("a car track");
    let kinds: Vec<ObjectEventType> = car.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&ObjectEventType::Updated), "car: {kinds:?}");
    assert!(
        car[1].best_score > car[0].best_score,
        "the car's update is its better score: {car:?}"
    );

    // The snapshot of the car's best frame: a JPEG of the street frame.
    let snap = car
        .last()
        .and_then(|e| e.snapshot.clone())
        .expect("snapshot kept");
    assert_eq!(snap.score, car.last().expect("gone").best_score);
    let r = c
        .get(daemon.url(&snap.path))
        .send()
        .await
        .expect("snapshot");
    assert_eq!(r.status().as_u16(), 200, "{}", snap.path);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let jpeg = r.bytes().await.expect("body");
    let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("the snapshot is a JPEG");
    assert_eq!((img.width(), img.height()), (1000, 563));
    let r = c
        .get(daemon.url(&format!("/v1/cameras/{CAMERA}/events/1-999/snapshot.jpg")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let metrics = tandem_tests::http::get_text(&c, &daemon.url("/metrics")).await;
    let checked = tandem_tests::metrics::one(
        &tandem_tests::metrics::parse(&metrics),
        "tandem_privacy_images_checked_total",
    );
    assert!(
        checked >= 1.0,
        "the snapshot went through the face blur: {metrics}"
    );
    let gone = tracks.len();
    assert!(
        metrics.contains(&format!(
            "tandem_camera_object_events_total{{camera=\"{CAMERA}\",type=\"gone\"}} {gone}"
        )),
        "{metrics}"
    );

    // SIGTERM: the table's live tracks end (`shutdown`), the cup's among them, before the
    // agent stops (an `appeared` of the table published before the signal may come first).
    let cup = cup_appeared.expect("cup");
    let pid = rustix::process::Pid::from_raw(daemon.child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    loop {
        let e = tokio::task::block_in_place(|| sub.next_or(|| daemon.log_text()));
        eprintln!(
            "after SIGTERM: {} {} {:?} {:?}",
            e.id, e.label, e.kind, e.reason
        );
        assert!(
            TABLE.contains(&e.label.as_str()),
            "{e:?}: {}",
            daemon.log_text()
        );
        if e.kind == ObjectEventType::Appeared {
            continue;
        }
        assert_eq!(
            (e.kind, e.reason),
            (ObjectEventType::Gone, Some(GoneReason::Shutdown)),
            "{e:?}: {}",
            daemon.log_text()
        );
        if e.id == cup.id {
            break;
        }
    }
    let status = tokio::task::block_in_place(|| daemon.child.wait()).expect("exit");
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
}
