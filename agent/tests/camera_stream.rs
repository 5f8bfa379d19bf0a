//! A camera's frame stream under a slow consumer: frames posted faster than inference runs
//! are answered 202 at once, the oldest waiting frames are dropped and counted (in the
//! stream's report and in `/metrics`), every frame is accounted for, the newest one is always
//! answered; bad ids and models get a precise 4xx.

mod common;

use common::{config, models_dir, serve_api};
use serde_json::Value;
use std::time::{Duration, Instant};
use tandem_agent::app;

const FRAMES: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_drops_the_oldest_frames_and_counts_them() {
    let cfg = config(&["vision-imagenet"], "edge", &["cpu"]);
    let engine = app::start_engine(&cfg).expect("engine");
    let router = app::start_router(&cfg, engine).expect("router");
    let base = serve_api(&cfg, router).await;
    let client = reqwest::Client::new();
    let jpg = std::fs::read(models_dir().join("vision-imagenet/samples/imagenet_02_438.jpg"))
        .expect("sample");
    let url = format!("{base}/v1/cameras/porch-1/frames/vision-imagenet");
    for seq in 1..=FRAMES {
        let r = client
            .post(&url)
            .body(jpg.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["seq"], seq);
        assert!(v["queued"].as_u64().expect("queued") <= 4, "{v}");
    }
    let report = format!("{base}/v1/cameras/porch-1");
    let started = Instant::now();
    let v = loop {
        let v: Value = client
            .get(&report)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if v["queued"] == 0 && v["latest"]["seq"] == FRAMES {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stream stuck: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let n = |k: &str| v[k].as_u64().expect(k);
    assert_eq!(n("received"), FRAMES);
    assert_eq!(n("failed"), 0, "{v}");
    assert!(n("dropped") > 0, "frames came faster than inference: {v}");
    assert_eq!(n("processed") + n("dropped"), FRAMES, "{v}");
    assert!(v["latest"]["label"].is_string(), "{v}");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = format!(
        "tandem_camera_frames_total{{camera=\"porch-1\",outcome=\"dropped\"}} {}",
        n("dropped")
    );
    assert!(metrics.contains(&line), "{line} not in /metrics");

    for (path, status, needle) in [
        (
            "/v1/cameras/a%22b/frames/vision-imagenet",
            400,
            "must be 1-64 characters",
        ),
        (
            "/v1/cameras/porch-1/frames/nope",
            404,
            "model `nope` is not loaded",
        ),
        (
            "/v1/cameras/porch-1/frames/vision-imagenet?format=nv12&width=3&height=2",
            400,
            "nv12 needs an even width, got 3",
        ),
    ] {
        let r = client
            .post(format!("{base}{path}"))
            .body(vec![0u8; 9])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body = r.text().await.expect("text");
        assert!(body.contains(needle), "{path}: {body}");
    }
    let r = client
        .get(format!("{base}/v1/cameras/garage"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
}
