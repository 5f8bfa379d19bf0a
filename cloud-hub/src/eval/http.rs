//! The evaluation routes on the hub's API (operator only, `api::rights`):
//! - `POST /v1/eval` (an [`EvalRequest`] as JSON): runs it (one at a time: 409 while another
//!   runs), stores the report and answers it (201); `?format=table` answers the table. 422 for
//!   a request that cannot be evaluated (unknown model or variant, a shift for text, no item).
//! - `GET /v1/eval/reports[?model=M]`: the stored reports' summaries, oldest first.
//! - `GET /v1/eval/reports/{id}[?format=table]`: one report.

use super::{EvalError, EvalRequest, Evaluator};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the routes reach.
#[derive(Debug)]
pub struct EvalApi {
    /// Runs and stores.
    pub evaluator: Arc<Evaluator>,
    /// Device labels come from here (device-label slices).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// One evaluation at a time.
    pub running: tokio::sync::Semaphore,
}

impl EvalApi {
    /// The API over an evaluator.
    pub fn new(evaluator: Arc<Evaluator>, fleet: Option<Arc<crate::fleet::Fleet>>) -> Self {
        Self {
            evaluator,
            fleet,
            running: tokio::sync::Semaphore::new(1),
        }
    }

    fn device_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let Some(f) = &self.fleet else {
            return BTreeMap::new();
        };
        f.store()
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| Some((d.device, d.status?.labels)))
            .collect()
    }
}

/// The routes, for any router state (they carry their own).
pub fn routes<S: Clone + Send + Sync + 'static>(api: Arc<EvalApi>) -> axum::Router<S> {
    axum::Router::new()
        .route("/v1/eval", post(evaluate))
        .route("/v1/eval/reports", get(list))
        .route("/v1/eval/reports/{id}", get(one))
        .with_state(api)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

fn eval_error(e: &EvalError) -> Response {
    let status = match e {
        EvalError::Invalid(_)
        | EvalError::Shift(_)
        | EvalError::EmptySet(_)
        | EvalError::Engine(_)
        | EvalError::Dataset(super::dataset::DatasetError::NoSet { .. }) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Format {
    format: Option<String>,
    model: Option<String>,
}

/// Whether the query asks for the table.
fn wants_table(q: Result<Query<Format>, QueryRejection>) -> Result<bool, String> {
    let Query(q) = q.map_err(|e| e.body_text())?;
    match q.format.as_deref() {
        None | Some("json") => Ok(false),
        Some("table") => Ok(true),
        Some(f) => Err(format!("format `{f}`: json or table")),
    }
}

fn answer(report: &super::report::Report, table: bool, status: StatusCode) -> Response {
    if table {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.table(),
        )
            .into_response()
    } else {
        (status, Json(report)).into_response()
    }
}

async fn evaluate(
    State(api): State<Arc<EvalApi>>,
    q: Result<Query<Format>, QueryRejection>,
    body: Result<Json<EvalRequest>, JsonRejection>,
) -> Response {
    let table = match wants_table(q) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Ok(_permit) = api.running.try_acquire() else {
        return error(
            StatusCode::CONFLICT,
            "an evaluation is running: try again when it ends",
        );
    };
    let labels = api.device_labels();
    let evaluator = api.evaluator.clone();
    match tokio::task::spawn_blocking(move || evaluator.run(&req, labels)).await {
        Ok(Ok(report)) => answer(&report, table, StatusCode::CREATED),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "evaluation refused or failed");
            eval_error(&e)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn list(
    State(api): State<Arc<EvalApi>>,
    q: Result<Query<Format>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let store = api.evaluator.reports.clone();
    match tokio::task::spawn_blocking(move || store.list(q.model.as_deref())).await {
        Ok(Ok(reports)) => Json(json!({ "reports": reports })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn one(
    State(api): State<Arc<EvalApi>>,
    Path(id): Path<String>,
    q: Result<Query<Format>, QueryRejection>,
) -> Response {
    let table = match wants_table(q) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let store = api.evaluator.reports.clone();
    match tokio::task::spawn_blocking(move || store.get(&id)).await {
        Ok(Ok(Some(r))) => answer(&r, table, StatusCode::OK),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such report"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
