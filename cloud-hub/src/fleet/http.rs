//! The fleet's HTTP routes on the hub's API (behind the same authentication as the rest):
//! - `GET /v1/fleet`: every device, summarised (online, last seen, agent version, models,
//!   `offload_share` and `degraded_share` of its answers since the agent started (from its
//!   last telemetry; `null` without answers), labels: `labels` the merged set rollouts select on, `hub_labels` from the claim it enrolled
//!   with, `agent_labels` from its status; `fleet::labels`), `cameras`: the ids of the cameras
//!   its last telemetry lists (each with a frame stream on the device).
//! - `GET /v1/fleet/{device}`: everything the hub knows about one device (last status and
//!   telemetry, the same three label sets, and `cameras`).
//! - `GET /v1/fleet/{device}/series`: its time series for the plots (`series::http`).
//! - `POST /v1/fleet/{device}/cmd/{name}[?timeout_ms=N]`: publishes the command (the body, a
//!   JSON object; the hub sets `v` and `id`) and waits for the device's result: 200 with the
//!   result when `ok`, 422 with it when the device refused, 504 when none came, 503 when the hub
//!   is not connected to the broker; 400, and nothing sent, for a body the shared command schema
//!   refuses (an unknown command, a missing or unknown field, an argument out of its range).
//! - `GET /v1/fleet/{device}/cameras/{camera}/snapshot.jpg[?track=ID&timeout_ms=N]`: the
//!   camera's snapshot, asked over MQTT (`super::snapshot`).

use super::Fleet;
use super::link::CommandError;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(fleet: Arc<Fleet>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/fleet", get(list))
        .route("/v1/fleet/{device}", get(one))
        .route("/v1/fleet/{device}/cmd/{name}", post(command))
        .route(
            "/v1/fleet/{device}/cameras/{camera}/snapshot.jpg",
            get(super::snapshot::get),
        )
        .route(
            "/v1/fleet/{device}/series",
            get(crate::series::http::series),
        )
        .with_state(fleet)
}

pub(super) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// The ids of the cameras `d`'s last telemetry lists, in its (id) order.
fn camera_ids(d: &super::DeviceState) -> Vec<&str> {
    d.telemetry
        .iter()
        .flat_map(|t| t.cameras.iter().map(|c| c.id.as_str()))
        .collect()
}

async fn list(State(fleet): State<Arc<Fleet>>) -> Response {
    let assigned = match fleet.assigned_labels() {
        Ok(a) => a,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match fleet.store().list() {
        Ok(devices) => {
            let summary: Vec<Value> = devices
                .iter()
                .map(|d| {
                    let status = d.status.as_ref();
                    let labels = Fleet::labels_of(d, &assigned);
                    let [local, cloud, failed, degraded] = d
                        .telemetry
                        .as_ref()
                        .map(crate::series::derive::routes)
                        .unwrap_or_default();
                    let answers = local + cloud + failed;
                    let share = |n: u64| (answers > 0).then(|| n as f64 / answers as f64);
                    json!({
                        "device": d.device,
                        "online": d.online,
                        "last_seen_ms": d.last_seen_ms,
                        "agent_version": status.and_then(|s| s.agent_version.clone()),
                        "models": status.map(|s| s.models.clone()).unwrap_or_default(),
                        "accelerators": status.map(|s| s.accelerators.clone()).unwrap_or_default(),
                        "telemetry_seq": d.telemetry.as_ref().map(|t| t.seq),
                        "offload_share": share(cloud),
                        "degraded_share": share(degraded),
                        "unreadable": d.unreadable,
                        "labels": labels.labels,
                        "hub_labels": labels.hub_labels,
                        "agent_labels": labels.agent_labels,
                        "cameras": camera_ids(d),
                    })
                })
                .collect();
            Json(json!({ "devices": summary })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn one(State(fleet): State<Arc<Fleet>>, Path(device): Path<String>) -> Response {
    let assigned = match fleet.assigned_labels() {
        Ok(a) => a,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match fleet.store().get(&device) {
        Ok(Some(d)) => {
            let labels = Fleet::labels_of(&d, &assigned);
            let mut v = json!(d);
            if let Some(o) = v.as_object_mut() {
                o.insert("cameras".into(), json!(camera_ids(&d)));
                if let Ok(Value::Object(l)) = serde_json::to_value(labels) {
                    o.extend(l);
                }
            }
            Json(v).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("device `{device}` has not been heard of"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct CmdQuery {
    timeout_ms: Option<u64>,
}

async fn command(
    State(fleet): State<Arc<Fleet>>,
    Path((device, name)): Path<(String, String)>,
    Query(q): Query<CmdQuery>,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
        }
    };
    let timeout = Duration::from_millis(
        q.timeout_ms
            .unwrap_or(fleet.command_timeout_ms())
            .clamp(1, 60_000),
    );
    match fleet.link().command(&device, &name, body, timeout).await {
        Ok(r) if r.ok => Json(r).into_response(),
        Ok(r) => (StatusCode::UNPROCESSABLE_ENTITY, Json(r)).into_response(),
        Err(
            e @ (CommandError::BadName(_) | CommandError::NotObject | CommandError::Invalid(_)),
        ) => error(StatusCode::BAD_REQUEST, e),
        Err(e @ CommandError::NotConnected) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e @ CommandError::Timeout { .. }) => error(StatusCode::GATEWAY_TIMEOUT, e),
    }
}
