//! The hub's per-device time series (issue 15 item 1, the data behind the console's plots), on
//! the real daemons: a hub (with its mosquitto) and an agent in two network namespaces, the
//! agent sending telemetry every 300 ms and offloading every request.
//!
//! - `GET /v1/fleet/cam-01/series` gives points whose offloaded answers add up to the requests
//!   made and to the cumulative count in the agent's last telemetry, with the latency and the
//!   queue the agent reported, and a version marker for the model the agent loaded.
//! - `step_ms` merges points without losing counts; bad parameters get 400 with a message, an
//!   unknown device 404, a caller without the operator's token 401.

use serde_json::Value;
use std::time::{Duration, Instant};
use tandem_tests::fleet::{Fleet, MODEL, samples};

const PATIENCE: Duration = Duration::from_secs(60);
const REQUESTS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_from_a_real_agents_telemetry() {
    tokio::time::timeout(Duration::from_secs(300), scenario())
        .await
        .expect("the scenario within 300 s");
}

/// Offloaded answers since the last counter reset, summed over the points.
fn cloud_since_reset(points: &[Value]) -> u64 {
    let from = points.iter().rposition(|p| p["reset"] == true).unwrap_or(0);
    points[from..]
        .iter()
        .map(|p| p["cloud"].as_u64().unwrap_or(0))
        .sum()
}

async fn scenario() {
    let fleet = Fleet::new("series", "hub", &["cam"]);
    fleet.add_device("cam-01");
    let hub = fleet.start_hub(&[]);
    let agent = fleet.start_agent("cam", "cam-01", &[]);

    let image = samples().remove(0);
    let mut answered = 0;
    let until = Instant::now() + PATIENCE;
    while answered < REQUESTS {
        assert!(Instant::now() < until, "{answered} answers from the hub");
        if let Ok((200, body)) = fleet
            .post(&agent, &format!("/v1/classify/{MODEL}"), image.clone())
            .await
            && serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["route"] == "cloud")
        {
            answered += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The series catches up with the agent's counters.
    let path = "/v1/fleet/cam-01/series";
    let (series, state) = loop {
        let s = fleet.get_json(&hub, path).await;
        let d = fleet.get_json(&hub, "/v1/fleet/cam-01").await;
        if let (Some(s), Some(d)) = (s, d) {
            let reported: u64 = d["telemetry"]["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["route"] == "cloud")
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .sum();
            let points = s["points"].as_array().cloned().unwrap_or_default();
            // Two points at least, the last one the telemetry the fleet view holds.
            let same = points
                .last()
                .is_some_and(|p| p["seq"] == d["telemetry"]["seq"]);
            if reported == REQUESTS
                && cloud_since_reset(&points) == REQUESTS
                && points.len() >= 2
                && same
            {
                break (s, d);
            }
        }
        assert!(
            Instant::now() < until,
            "the series never counted {REQUESTS} offloads"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let points = series["points"].as_array().expect("points");
    assert_eq!(series["device"], "cam-01");
    let with_answers: Vec<&Value> = points
        .iter()
        .filter(|p| p["cloud"].as_u64() > Some(0))
        .collect();
    assert!(
        with_answers
            .iter()
            .all(|p| p["offload_share"] == 1.0 && p["local"] == 0),
        "the rig offloads everything: {series}"
    );
    assert!(
        with_answers
            .iter()
            .any(|p| p["latency_p50_s"].as_f64().is_some_and(|l| l > 0.0)),
        "{series}"
    );
    let last = points.last().expect("a point");
    assert_eq!(last["seq"], state["telemetry"]["seq"], "{series}\n{state}");
    assert_eq!(
        last["queue_depth"], state["telemetry"]["queue"]["depth"],
        "{state}"
    );
    let version = &state["telemetry"]["models"][MODEL]["version"];
    assert!(version.is_string(), "{state}");
    let marker = &series["markers"][0];
    assert_eq!(marker["model"], MODEL, "{series}");
    assert_eq!(&marker["to"], version, "{series}");
    assert!(marker["from"].is_null(), "{series}");

    // Merged per hour: the same offloads (up to the last point already read).
    let until_ms = last["at_ms"].as_u64().expect("at_ms");
    let merged = fleet
        .get_json(&hub, &format!("{path}?until_ms={until_ms}&step_ms=3600000"))
        .await
        .expect("merged series");
    let merged_points = merged["points"].as_array().expect("points");
    assert!((1..=2).contains(&merged_points.len()), "{merged}");
    let total = |ps: &[Value]| {
        ps.iter()
            .map(|p| p["cloud"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(total(merged_points), total(points), "{merged}");

    // Refusals.
    for (query, status, says) in [
        ("/v1/fleet/cam-01/series?since_ms=soon", 400, "since_ms"),
        (
            "/v1/fleet/cam-01/series?since_ms=5&until_ms=4",
            400,
            "after",
        ),
        ("/v1/fleet/cam-01/series?step_ms=0", 400, "step_ms"),
        ("/v1/fleet/cam-01/series?every=1", 400, "every"),
        ("/v1/fleet/cam-99/series", 404, "cam-99"),
    ] {
        let (got, body) = fleet.get(&hub, query).await.expect("GET");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(got, status, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    let (got, body) = fleet
        .rig
        .http_as(
            &hub.host,
            "GET",
            &format!("{}{path}", hub.http),
            None,
            Vec::new(),
        )
        .await
        .expect("GET");
    assert_eq!(got, 401, "{}", String::from_utf8_lossy(&body));
    assert!(!String::from_utf8_lossy(&body).contains("points"));
}
