//! `POST /v1/cameras/{camera}/frames/{model}` (a JPEG/PNG or a raw frame described by the
//! query, as `/v1/classify`) queues a frame on the camera's stream and answers 202 at once;
//! `GET /v1/cameras/{camera}` reports the stream (counters, queue, tracks, latest answer);
//! `GET /v1/cameras/{camera}/events/{id}/snapshot.jpg` is the best frame of an object event's
//! track (through [`crate::track::snapshot::leaving`]). See [`crate::camera`].

use super::AppState;
use super::error::ApiError;
use crate::camera::CameraError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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
            CameraError::Stopping => ApiError::Unavailable(e.to_string()),
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

/// The snapshot JPEG of track `id` of `camera`, faces blurred per `[privacy]`: 404 once
/// evicted (or never kept), 503 when the blur cannot run (the snapshot stays on the device).
pub async fn snapshot(
    State(s): State<Arc<AppState>>,
    Path((camera, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (jpeg, model) = s.cameras.snapshot(&camera, &id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "camera `{camera}` keeps no snapshot of track `{id}` (unknown, or evicted: [cameras.snapshots])"
        ))
    })?;
    let jpeg = crate::track::snapshot::leaving(&s.router, &model, jpeg)
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!("the snapshot may not leave the device: {e}"))
        })?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response())
}
