//! `POST /v1/cameras/{camera}/frames/{model}` (a JPEG/PNG or a raw frame described by the
//! query, as `/v1/classify`) queues a frame on the camera's stream and answers 202 at once;
//! `GET /v1/cameras/{camera}` reports the stream (counters, queue, latest answer). See
//! [`crate::camera`].

use super::AppState;
use super::error::ApiError;
use crate::camera::CameraError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use tandem_shared::manifest::Preprocess;

/// Queues one frame of `camera` for `model`.
pub async fn post_frame(
    State(s): State<Arc<AppState>>,
    Path((camera, model)): Path<(String, String)>,
    query: Result<Query<super::frame::FrameQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| ApiError::from_body(e, s.limits()))?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    match s.router.preprocess(&model) {
        Some(Preprocess::Image(_)) => {}
        Some(Preprocess::Text(_)) => {
            return Err(ApiError::BadRequest(format!(
                "model `{model}` takes text, not camera frames"
            )));
        }
        None => return Err(ApiError::NotFound(format!("model `{model}` is not loaded"))),
    }
    let image = super::frame::body(&query, body)?;
    let report = s
        .cameras
        .post(&s.router, &camera, &model, image)
        .map_err(|e| match e {
            CameraError::BadId(_) => ApiError::BadRequest(e.to_string()),
            CameraError::TooMany(_) => ApiError::Busy(e.to_string()),
        })?;
    Ok((StatusCode::ACCEPTED, Json(report)))
}

/// The stream's counters and latest answer.
pub async fn report(
    State(s): State<Arc<AppState>>,
    Path(camera): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.cameras
        .get(&camera)
        .map(|st| Json(st.report(&camera)))
        .ok_or_else(|| ApiError::NotFound(format!("camera `{camera}` has posted no frame")))
}
