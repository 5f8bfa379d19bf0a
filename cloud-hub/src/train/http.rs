//! The training routes on the hub's API (operator only, `api::rights`):
//! - `POST /v1/train` (a [`TrainRequest`] as JSON): one turn on the fleet's feedback — train,
//!   evaluate, gate, promote per `train.promotion` — and the decision (201; one at a time: 409
//!   while another runs). 422 when nothing can be trained (unknown model, too few examples,
//!   a graph without a linear head).
//! - `GET /v1/train/decisions[?model=M]`: every decision, oldest first.
//! - `GET /v1/train/decisions/{id}`: one decision (its checks, reasons and report ids).
//! - `POST /v1/train/decisions/{id}/promote`: signs a passed candidate and starts its rollout
//!   (200); 409 when the decision is not waiting for an operator.

use super::TrainError;
use super::service::{TrainRequest, TrainService};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// What the routes reach.
#[derive(Debug)]
pub struct TrainApi {
    /// Trains, gates, promotes.
    pub service: Arc<TrainService>,
    /// One turn (or promotion) at a time.
    pub running: tokio::sync::Semaphore,
}

impl TrainApi {
    /// The API over a service.
    pub fn new(service: Arc<TrainService>) -> Self {
        Self {
            service,
            running: tokio::sync::Semaphore::new(1),
        }
    }
}

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(api: Arc<TrainApi>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/train", post(train))
        .route("/v1/train/decisions", get(list))
        .route("/v1/train/decisions/{id}", get(one))
        .route("/v1/train/decisions/{id}/promote", post(promote))
        .with_state(api)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// The status a failure answers with.
pub fn status_of(e: &TrainError) -> StatusCode {
    match e {
        TrainError::Invalid(_)
        | TrainError::TooFew { .. }
        | TrainError::Onnx(_)
        | TrainError::Dataset(_) => StatusCode::UNPROCESSABLE_ENTITY,
        TrainError::NotFound(_) => StatusCode::NOT_FOUND,
        TrainError::Phase(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn blocking<T: serde::Serialize + Send + 'static>(
    api: &TrainApi,
    ok: StatusCode,
    f: impl FnOnce() -> Result<T, TrainError> + Send + 'static,
) -> Response {
    let Ok(_permit) = api.running.try_acquire() else {
        return error(
            StatusCode::CONFLICT,
            "a training turn or promotion is running: try again when it ends",
        );
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => (ok, Json(v)).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "training refused or failed");
            error(status_of(&e), e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn train(
    State(api): State<Arc<TrainApi>>,
    body: Result<Json<TrainRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let svc = api.service.clone();
    blocking(&api, StatusCode::CREATED, move || svc.run(&req)).await
}

async fn promote(State(api): State<Arc<TrainApi>>, Path(id): Path<String>) -> Response {
    let svc = api.service.clone();
    blocking(&api, StatusCode::OK, move || svc.promote(&id)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelQuery {
    model: Option<String>,
}

async fn list(
    State(api): State<Arc<TrainApi>>,
    q: Result<Query<ModelQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let svc = api.service.clone();
    match tokio::task::spawn_blocking(move || svc.list(q.model.as_deref())).await {
        Ok(Ok(d)) => Json(json!({ "decisions": d })).into_response(),
        Ok(Err(e)) => error(status_of(&e), e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn one(State(api): State<Arc<TrainApi>>, Path(id): Path<String>) -> Response {
    let svc = api.service.clone();
    match tokio::task::spawn_blocking(move || svc.get(&id)).await {
        Ok(Ok(Some(d))) => Json(d).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such decision"),
        Ok(Err(e)) => error(status_of(&e), e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
