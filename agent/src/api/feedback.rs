//! `POST /v1/feedback`: a person's correction of an earlier answer. Body:
//! `{"request_id": "...", "label": "..."}` (the id every answer carries; the label must be one
//! of the model's). The answer, `202 Accepted` with the record's queue sequence number, comes
//! only once the correction is on disk; the queue delivers it to the hub's dataset. One
//! correction per request id: a second is `409 Conflict` naming the first one's sequence
//! number (it is not replaced: the first is on disk, maybe delivered already).

use super::AppState;
use super::error::ApiError;
use crate::feedback::FeedbackError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Correction {
    request_id: String,
    label: String,
}

/// Queues a correction.
pub async fn correct(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| ApiError::from_body(e, s.limits()))?;
    let c: Correction = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"request_id\": \"...\", \"label\": \"...\"}}: {e}"
        ))
    })?;
    let fb = s.router.feedback().ok_or_else(|| {
        ApiError::Unavailable("this agent keeps no feedback queue ([queue] / [feedback])".into())
    })?;
    let model = fb.model_of(&c.request_id).ok_or_else(|| {
        ApiError::NotFound(FeedbackError::UnknownRequest(c.request_id.clone()).to_string())
    })?;
    let labels = s.router.labels(&model).unwrap_or_default();
    if !labels.contains(&c.label) {
        return Err(ApiError::BadRequest(format!(
            "`{}` is not a label of model `{model}` ({} labels, e.g. `{}`)",
            c.label,
            labels.len(),
            labels.first().map_or("", String::as_str)
        )));
    }
    match fb.correct(&c.request_id, &c.label).await {
        Ok(seq) => Ok((
            StatusCode::ACCEPTED,
            Json(
                json!({"request_id": c.request_id, "model": model, "label": c.label, "queued": true, "seq": seq}),
            ),
        )),
        Err(e @ FeedbackError::UnknownRequest(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ FeedbackError::AlreadyCorrected { .. }) => Err(ApiError::Conflict(e.to_string())),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}
