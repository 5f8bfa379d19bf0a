//! `GET /v1/fleet/{device}/series?since_ms=&until_ms=&step_ms=` (behind the API's
//! authentication, with the fleet's routes): the device's [`SeriesAnswer`]. `since_ms` and
//! `until_ms` (hub clock, inclusive; defaults: everything kept) bound the window; `step_ms`
//! merges the points of each `step_ms`-wide bucket into one (counts summed, offload share of
//! the sums, latencies the largest of the bucket's, queues the last; `at_ms` the bucket's
//! start). 400 for a parameter that is not a number, an empty window or a step of 0; 404 for a
//! device the hub has not heard of.

use super::{Point, SeriesAnswer};
use crate::fleet::Fleet;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// The query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// Oldest `at_ms` wanted.
    pub since_ms: Option<u64>,
    /// Newest `at_ms` wanted.
    pub until_ms: Option<u64>,
    /// Bucket width, milliseconds.
    pub step_ms: Option<u64>,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// The handler.
pub async fn series(
    State(fleet): State<Arc<Fleet>>,
    Path(device): Path<String>,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} (known: since_ms, until_ms, step_ms, all milliseconds)",
                    e.body_text()
                ),
            );
        }
    };
    let (since, until) = (q.since_ms.unwrap_or(0), q.until_ms.unwrap_or(u64::MAX));
    if since > until {
        return error(
            StatusCode::BAD_REQUEST,
            format!("since_ms ({since}) is after until_ms ({until})"),
        );
    }
    if q.step_ms == Some(0) {
        return error(StatusCode::BAD_REQUEST, "step_ms must be at least 1");
    }
    let answer = match fleet.series().read(&device, since, until) {
        Some(a) => a,
        None => match fleet.store().get(&device) {
            Ok(Some(_)) => SeriesAnswer {
                device: device.clone(),
                points: Vec::new(),
                markers: Vec::new(),
                events: Vec::new(),
                evicted_points: 0,
                oldest_ms: None,
            },
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("device `{device}` has not been heard of"),
                );
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
    };
    Json(match q.step_ms {
        Some(step) => SeriesAnswer {
            points: merge(&answer.points, step),
            ..answer
        },
        None => answer,
    })
    .into_response()
}

/// Points merged per `step` ms bucket, as the module says.
pub fn merge(points: &[Point], step: u64) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for p in points {
        let start = p.at_ms - p.at_ms % step;
        match out.last_mut() {
            Some(b) if b.at_ms == start => {
                b.ts_ms = p.ts_ms;
                b.seq = p.seq;
                b.reset |= p.reset;
                b.local += p.local;
                b.cloud += p.cloud;
                b.failed += p.failed;
                b.degraded += p.degraded;
                let n = b.local + b.cloud + b.failed;
                b.offload_share = (n > 0).then(|| b.cloud as f64 / n as f64);
                let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
                b.latency_p50_s = max(b.latency_p50_s, p.latency_p50_s);
                b.latency_p99_s = max(b.latency_p99_s, p.latency_p99_s);
                b.model_queue_depth = p.model_queue_depth;
                b.queue_depth = p.queue_depth;
                b.queue_bytes = p.queue_bytes;
            }
            _ => out.push(Point { at_ms: start, ..*p }),
        }
    }
    out
}
