//! Hostile commands and corrections (issue 11, Found 9), against the built binaries on the
//! multi-host rig (`tandem_tests::fleet`; root, like the rest of the suite):
//!
//! - A threshold out of its signal's range (`set_threshold 5.0`, and its neighbours: a
//!   `max_prob` of 1.5, a negative one, a version that is a path) sent through the hub's
//!   `POST /v1/fleet/{device}/cmd/{name}`: refused with 400 and a message, and never published
//!   (the hub's command counter does not move). The old hub forwarded them and the agent took
//!   5.0 (200). The agent's own refusal, for a command that reaches it over MQTT, is tested in
//!   `agent/tests/mqtt.rs` (the broker's session rules keep a second client from speaking as
//!   the hub here).
//! - One request id corrected again and again: the first correction is 202, every other 409,
//!   and the queue folder grows by about one copy of the input, not one per correction (the
//!   old agent answered 202 each time and stored the input each time).

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tandem_tests::fleet::{Daemon, Fleet, MODEL, samples};
use tandem_tests::metrics::one;
use tandem_tests::wait_for_async;

/// Any one wait.
const PATIENCE: Duration = Duration::from_secs(60);

async fn post_json(fleet: &Fleet, d: &Daemon, path: &str, body: &Value) -> (u16, Value) {
    let (status, bytes) = fleet
        .post(d, path, body.to_string().into_bytes())
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_out_of_range_are_refused_before_they_are_sent() {
    let fleet = Fleet::new("hostile-threshold", "hub", &["cam"]);
    fleet.add_device("cam-01");
    let hub = fleet.start_hub(&[]);
    let _agent = fleet.start_agent("cam", "cam-01", &[]);
    let cmd = |name: &str| format!("/v1/fleet/cam-01/cmd/{name}");

    // A good command reaches the device and changes its routing (the channel works).
    let t = Instant::now();
    let good = json!({"model": MODEL, "threshold": 0.8});
    let answered = loop {
        let (status, body) = post_json(&fleet, &hub, &cmd("set_threshold"), &good).await;
        if status == 200 {
            break body;
        }
        assert!(
            t.elapsed() < PATIENCE,
            "the device never took a good command: {status} {body}\nhub:\n{}",
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answered["policy"]["threshold"], 0.8, "{answered}");

    let sent = one(&fleet.metrics(&hub).await, "tandem_hub_mqtt_commands_total");
    for (name, body, says) in [
        (
            "set_threshold",
            json!({"model": MODEL, "threshold": 5.0}),
            "out of range",
        ),
        (
            "set_threshold",
            json!({"model": MODEL, "threshold": 1.5, "signal": "max_prob"}),
            "out of range",
        ),
        (
            "set_threshold",
            json!({"model": MODEL, "threshold": -0.5, "signal": "entropy"}),
            "out of range",
        ),
        (
            "set_threshold",
            json!({"model": MODEL, "threshold": 1e39}),
            "out of range",
        ),
        (
            "update_model",
            json!({"model": MODEL, "version": "../../../etc"}),
            "version",
        ),
    ] {
        let (status, answer) = post_json(&fleet, &hub, &cmd(name), &body).await;
        assert_eq!(status, 400, "{name} {body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{name} {body}: {answer}"
        );
    }
    // An entropy threshold above 1 is legal when it says so.
    let (status, answer) = post_json(
        &fleet,
        &hub,
        &cmd("set_threshold"),
        &json!({"model": MODEL, "threshold": 2.5, "signal": "entropy"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let after = one(&fleet.metrics(&hub).await, "tandem_hub_mqtt_commands_total");
    assert_eq!(
        after,
        sent + 1.0,
        "only the legal command was published (before {sent}, after {after})"
    );
}

/// Bytes of every file under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => folder_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_is_corrected_once() {
    // No hub runs: records stay in the queue, where their bytes are measured. No MQTT, so
    // nothing but the request's hard example and its correction goes to the queue.
    let fleet = Fleet::new("hostile-correct", "hub", &["cam"]);
    fleet.add_device("cam-01");
    let agent = fleet.start_agent("cam", "cam-01", &[("mqtt", "url = \"\"")]);
    let queue = fleet.dir.join("agent-cam").join("queue");

    // A valid image with 256 KiB after its end (decoders stop at IEND; the input is kept as
    // sent), so each stored copy of the input is easy to see on disk.
    const PAD: usize = 256 * 1024;
    let mut input = samples().remove(0);
    input.extend(std::iter::repeat_n(0xA5u8, PAD));
    let (status, bytes) = fleet
        .post(&agent, &format!("/v1/classify/{MODEL}"), input.clone())
        .await
        .expect("classify");
    let answer: Value = serde_json::from_slice(&bytes).expect("json answer");
    assert_eq!(status, 200, "{answer}");
    let id = answer["request_id"]
        .as_str()
        .expect("request_id")
        .to_string();
    // The degraded answer's hard example (a copy of the input) reaches the queue first.
    wait_for_async("the hard example on disk", PATIENCE, || async {
        one(
            &fleet.metrics(&agent).await,
            "tandem_feedback_examples_queued_total",
        ) >= 1.0
    })
    .await;
    let before = folder_bytes(&queue);

    const TRIES: usize = 40;
    let mut statuses = Vec::new();
    for i in 0..TRIES {
        let label = if i % 2 == 0 { "Bag" } else { "Coat" };
        let body = json!({"request_id": id, "label": label});
        let (status, answer) = post_json(&fleet, &agent, "/v1/feedback", &body).await;
        if status == 409 {
            assert!(
                answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("already corrected")),
                "{answer}"
            );
        }
        statuses.push(status);
    }
    assert_eq!(statuses[0], 202, "{statuses:?}");
    assert!(
        statuses[1..].iter().all(|s| *s == 409),
        "one correction per request: {statuses:?}"
    );
    let grown = folder_bytes(&queue).saturating_sub(before);
    // One more copy of the input (plus store overhead), never one per try: the old agent
    // stored 40 copies (more than 10 MiB).
    let bound = (3 * input.len() + (1 << 20)) as u64;
    assert!(
        grown <= bound,
        "the queue grew by {grown} bytes for {TRIES} corrections of one {} byte input (bound {bound})",
        input.len()
    );
    let m = fleet.metrics(&agent).await;
    assert_eq!(one(&m, "tandem_feedback_corrections_total"), 1.0);
}
