//! The rollouts' HTTP routes on the hub's API (behind the same authentication as the rest):
//! - `POST /v1/rollouts` (a [`Spec`] as JSON): 201 with the rollout; 422 invalid, 404 version
//!   not in the registry, 409 another rollout of the model unfinished.
//! - `GET /v1/rollouts`, `GET /v1/rollouts/{id}`.
//! - `POST /v1/rollouts/{id}/pause|resume|abort`: 200 with the rollout; 409 when the phase
//!   does not allow it.

use super::plan::Spec;
use super::store::{RolloutError, RolloutStore};
use crate::registry::Registry;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

/// What the routes reach.
#[derive(Debug, Clone)]
pub struct RolloutApi {
    /// The rollouts.
    pub store: RolloutStore,
    /// The registry (a rollout's version must be in it).
    pub registry: Arc<Registry>,
}

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(api: Arc<RolloutApi>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/rollouts", get(list).post(create))
        .route("/v1/rollouts/{id}", get(one))
        .route("/v1/rollouts/{id}/{action}", post(act))
        .with_state(api)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn error(e: RolloutError) -> Response {
    let status = match &e {
        RolloutError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        RolloutError::NoSuchVersion { .. } | RolloutError::NotFound(_) => StatusCode::NOT_FOUND,
        RolloutError::Busy(_) | RolloutError::Phase(_) => StatusCode::CONFLICT,
        RolloutError::Db { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RolloutError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(error),
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response()),
    }
}

async fn create(State(api): State<Arc<RolloutApi>>, Json(spec): Json<Spec>) -> Response {
    let created = blocking(move || {
        let exists = api
            .registry
            .get(&spec.model, &spec.version)
            .map_err(|e| RolloutError::Db {
                path: api.registry.dir().to_path_buf(),
                message: e.to_string(),
            })?
            .is_some();
        api.store.create(spec, exists, now_ms())
    })
    .await;
    match created {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(resp) => resp,
    }
}

async fn list(State(api): State<Arc<RolloutApi>>) -> Response {
    match blocking(move || api.store.list()).await {
        Ok(all) => Json(json!({ "rollouts": all })).into_response(),
        Err(resp) => resp,
    }
}

async fn one(State(api): State<Arc<RolloutApi>>, Path(id): Path<String>) -> Response {
    match blocking(move || api.store.get(&id)).await {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}

async fn act(
    State(api): State<Arc<RolloutApi>>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let done = blocking(move || match action.as_str() {
        "pause" => api.store.change(&id, |r| r.pause()),
        "resume" => api.store.change(&id, |r| r.resume(now_ms())),
        "abort" => api.store.change(&id, |r| r.abort()),
        other => Err(RolloutError::NotFound(format!("{id}/{other}"))),
    })
    .await;
    match done {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}
