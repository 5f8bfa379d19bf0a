//! `POST /v1/cameras/{camera}/frames/{model}` (a JPEG/PNG or a raw frame described by the
//! query, as `/v1/classify`) queues a frame on the camera's stream and answers 202 at once;
//! `GET /v1/cameras/{camera}` reports the stream (counters, queue, tracks, latest answer);
//! `GET /v1/cameras/{camera}/events/{id}/snapshot.jpg` is the best frame of an object event's
//! track and `GET /v1/cameras/{camera}/snapshot.jpg` the camera's snapshot stored last (both
//! through [`crate::track::request`]: faces blurred, precise 404s). See [`crate::camera`].

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
            CameraError::NoStream(_) | CameraError::NoSnapshot { .. } => {
                ApiError::NotFound(e.to_string())
            }
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

/// The snapshot JPEG of track `id` of `camera`, faces blurred per `[privacy]`: 404 for a
/// camera that posted no frame or a track whose snapshot is unknown or evicted, 503 when the
/// blur cannot run (the snapshot stays on the device).
pub async fn snapshot(
    State(s): State<Arc<AppState>>,
    Path((camera, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    jpeg(&s, &camera, Some(&id)).await
}

/// The camera's snapshot stored last (the best frame of the track that improved last), as
/// [`snapshot`]; 404 with the reason when the camera has none yet.
pub async fn latest(
    State(s): State<Arc<AppState>>,
    Path(camera): Path<String>,
) -> Result<Response, ApiError> {
    jpeg(&s, &camera, None).await
}

async fn jpeg(s: &AppState, camera: &str, track: Option<&str>) -> Result<Response, ApiError> {
    let (kept, jpeg) = crate::track::request::fetch(s, camera, track)
        .await
        .map_err(crate::track::request::RequestError::api)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg".to_string()),
            (
                header::HeaderName::from_static("x-tandem-track"),
                kept.track,
            ),
        ],
        jpeg,
    )
        .into_response())
}
