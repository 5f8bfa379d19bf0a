//! Camera streams in the daemon tests: a frame posted and waited for.

use serde_json::Value;
use std::time::{Duration, Instant};

/// Posts one frame of `camera` for `model` to the agent at `base` and waits (up to
/// `patience`) until the camera task has processed its `seq`-th frame; no frame may fail.
pub async fn post_frame(
    c: &reqwest::Client,
    base: &str,
    (camera, model): (&str, &str),
    jpeg: Vec<u8>,
    seq: u64,
    patience: Duration,
) {
    let r = c
        .post(format!("{base}/v1/cameras/{camera}/frames/{model}"))
        .body(jpeg)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let started = Instant::now();
    loop {
        let v: Value = c
            .get(format!("{base}/v1/cameras/{camera}"))
            .send()
            .await
            .expect("report")
            .json()
            .await
            .expect("json");
        if v["processed"].as_u64().unwrap_or(0) + v["failed"].as_u64().unwrap_or(0) >= seq {
            assert_eq!(v["failed"], 0, "{v}");
            return;
        }
        assert!(
            started.elapsed() < patience,
            "frame {seq} not processed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
