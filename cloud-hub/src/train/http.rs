//! The training routes on the hub's API (operator only, `api::rights`):
//! - `POST /v1/train` (a [`TrainRequest`] as JSON): queues one turn on the fleet's feedback —
//!   train, evaluate, gate, promote per `train.promotion` — as a job, and answers at once: 202
//!   with the [`Job`] and `Location: /v1/train/jobs/{id}`. 409 while a job for the same model
//!   is queued or running (its id in the message); 422 / 404 for a name that is not a model's
//!   or a model that does not exist. Turns run one at a time on the hub (a job waits `queued`
//!   for the one before); what fails inside a turn (too few examples, no linear head) is the
//!   job's `error`, with the HTTP status it maps to in `error_status`.
//! - `GET /v1/train/jobs`: the jobs kept (active ones and the last `train.job_history`
//!   finished), oldest first; `GET /v1/train/jobs/{id}`: one (`queued`, `running`, `done` with
//!   the decision's id and status, `failed` with the error).
//! - `GET /v1/train/decisions[?model=M]`: every decision, oldest first.
//! - `GET /v1/train/decisions/{id}`: one decision (its checks, reasons and report ids).
//! - `POST /v1/train/decisions/{id}/promote`: signs a passed candidate and starts its rollout
//!   (200); 409 when the decision is not waiting for an operator, or while a turn runs.

use super::TrainError;
use super::jobs::{Job, Jobs};
use super::service::{TrainRequest, TrainService};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
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
    /// One turn (or promotion) at a time: queued jobs wait for it in order.
    pub running: tokio::sync::Semaphore,
    /// The training jobs (`train.job_history` finished ones kept).
    pub jobs: Jobs,
}

impl TrainApi {
    /// The API over a service.
    pub fn new(service: Arc<TrainService>) -> Self {
        let history = service.trainer.cfg.job_history;
        Self {
            service,
            running: tokio::sync::Semaphore::new(1),
            jobs: Jobs::new(history),
        }
    }
}

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(api: Arc<TrainApi>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/train", post(train))
        .route("/v1/train/jobs", get(jobs))
        .route("/v1/train/jobs/{id}", get(job))
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
    // What can be told at once: a model's name, of a model that exists.
    let (svc, model) = (api.service.clone(), req.model.clone());
    match tokio::task::spawn_blocking(move || svc.serving_dir(&model)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return error(status_of(&e), e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
    let job = match api.jobs.submit(&req.model, req.limit, now_ms()) {
        Ok(job) => job,
        Err(busy) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "a training job for {} is already {}: {} (GET /v1/train/jobs/{}); one job per model at a time",
                    busy.model,
                    serde_json::to_value(busy.state)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or("active"),
                    busy.id,
                    busy.id
                ),
            );
        }
    };
    tokio::spawn(run_job(api.clone(), job.id.clone(), req));
    let location = format!("/v1/train/jobs/{}", job.id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response()
}

fn now_ms() -> u64 {
    crate::fleet::link::now_ms()
}

/// One job: waits for the turn before it, runs, records how it ended.
async fn run_job(api: Arc<TrainApi>, id: String, req: TrainRequest) {
    let result = match api.running.acquire().await {
        Ok(_permit) => {
            api.jobs.start(&id, now_ms());
            let svc = api.service.clone();
            match tokio::task::spawn_blocking(move || svc.run(&req)).await {
                Ok(r) => r,
                Err(e) => Err(TrainError::Aborted(e.to_string())),
            }
        }
        Err(e) => Err(TrainError::Aborted(e.to_string())),
    };
    match &result {
        Ok(d) => api.jobs.finish(&id, Ok(d), now_ms()),
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "training job failed");
            api.jobs
                .finish(&id, Err((e, status_of(e).as_u16())), now_ms());
        }
    }
}

async fn jobs(State(api): State<Arc<TrainApi>>) -> Response {
    Json(json!({ "jobs": api.jobs.list() })).into_response()
}

async fn job(State(api): State<Arc<TrainApi>>, Path(id): Path<String>) -> Response {
    match api.jobs.get(&id) {
        Some(j) => Json::<Job>(j).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no training job {id} (the hub keeps the last train.job_history finished ones, in memory)"
            ),
        ),
    }
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
